package main

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/rlslab/rlslab/internal/pgproxy"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/web"
)

// defaultProxyAddr is where rlslab's PostgreSQL proxy listens unless
// -proxy-addr says otherwise: loopback, on the port after PostgreSQL's.
const defaultProxyAddr = "127.0.0.1:5433"

// proxyProbeDelay is how long an app's connection stays idle before the
// proxy reads its tenant setting: at 0 the proxy costs more per query than
// PgBouncer does; at about 1 ms it costs no more (internal/pgproxy's
// QueryOverhead benchmark).
const proxyProbeDelay = time.Millisecond

// listenProxy opens the address rlslab's PostgreSQL proxy listens on
// ("off": none, nil). An address that cannot be had is logged and the
// proxy stays off: rlslab serves its pages without it.
func listenProxy(addr string, log *slog.Logger) net.Listener {
	if addr == "off" || addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Warn("PostgreSQL proxy off: its address cannot be had (choose another with -proxy-addr)", "addr", addr, "err", err)
		return nil
	}
	return ln
}

// startProxy serves rlslab's PostgreSQL proxy in front of the labs on ln
// (nil: not at all) until ctx ends; stop waits for it to have closed every
// connection.
func startProxy(ctx context.Context, ln net.Listener, labs *sessions.Manager, log *slog.Logger) (p web.Proxy, stop func()) {
	stop = func() {}
	if ln == nil {
		return web.Proxy{}, stop
	}
	srv, err := pgproxy.New(pgproxy.Config{Lookup: labs.ProxyLookup, Logger: log.With("component", "pgproxy"), ProbeDelay: proxyProbeDelay})
	if err != nil {
		_ = ln.Close()
		log.Warn("PostgreSQL proxy off", "err", err)
		return web.Proxy{}, stop
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ctx, ln); err != nil {
			log.Error("PostgreSQL proxy stopped", "err", err)
		}
	}()
	log.Info("PostgreSQL proxy listening", "addr", ln.Addr().String())
	return web.Proxy{Addr: ln.Addr().String(), CertPEM: srv.CertificatePEM()}, func() {
		cancel()
		<-done
	}
}
