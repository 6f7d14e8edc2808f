package sessions

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rlslab/rlslab"
)

// Bounds of an outage's answer: a call to the database that has not
// returned after probeAfter makes the guard ask the server whether it
// answers at all, for at most probeTimeout. A stopped or frozen server is
// thus reported within about a second, while a slow answer of a
// live server is still waited for.
const (
	probeAfter   = 300 * time.Millisecond
	probeTimeout = 800 * time.Millisecond
)

// guard runs calls to the database for the store-backed services and the
// lab controls, and turns an outage into EUNAVAILABLE with ErrDatabaseDown
// (the driver's words, which name hosts and sockets, go to the log).
type guard struct {
	pool *pgxpool.Pool
	log  *slog.Logger
}

// do runs f. When f fails with an internal error, or has not returned after
// probeAfter, do probes the server: when it does not answer, do returns the
// outage at once (f's context is cancelled; f finishes in the background,
// bounded by its own deadlines).
func (g guard) do(ctx context.Context, what string, f func(ctx context.Context) error) error {
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		defer cancel()
		done <- f(fctx)
	}()
	t := time.NewTimer(probeAfter)
	defer t.Stop()
	select {
	case err := <-done:
		if err == nil || rlslab.ErrorCode(err) != rlslab.EINTERNAL {
			return err
		}
		if isOutage(err) || g.probe(ctx) != nil {
			return g.outage(what, err)
		}
		return err
	case <-t.C:
	}
	if err := g.probe(ctx); err != nil && ctx.Err() == nil {
		cancel()
		return g.outage(what, err)
	}
	err := <-done
	if err != nil && rlslab.ErrorCode(err) == rlslab.EINTERNAL && isOutage(err) {
		return g.outage(what, err)
	}
	return err
}

// outage logs the driver's error and returns the outage in words.
func (g guard) outage(what string, err error) error {
	g.log.Warn("database not answering", "op", what, "err", err)
	return rlslab.Errorf(rlslab.EUNAVAILABLE, "%s", ErrDatabaseDown)
}

// probe checks within probeTimeout that the server answers on a pooled
// connection and accepts a new one (a frozen postmaster lets the first
// through and not the second).
func (g guard) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- g.pool.Ping(ctx) }()
	go func() {
		conn, err := pgx.ConnectConfig(ctx, g.pool.Config().ConnConfig)
		if err == nil {
			err = conn.Close(ctx)
		}
		errc <- err
	}()
	var first error
	for range 2 {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}
