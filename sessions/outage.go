package sessions

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rlslab/rlslab"
)

// Bounds of an outage's answer: a call to the database that has not
// returned after probeAfter makes the guard ask the server whether it
// answers at all, for at most probeTimeout. A stopped or frozen server is
// thus reported within about a second and a quarter, while a slow answer of a
// live server is still waited for.
const (
	probeAfter   = 250 * time.Millisecond
	probeTimeout = time.Second
)

// guard runs calls to the database for the store-backed services and the
// lab controls, and turns an outage into EUNAVAILABLE with ErrDatabaseDown
// (the driver's words, which name hosts and sockets, go to the log).
type guard struct {
	p   *prober
	log *slog.Logger
}

// guarded runs f under g and returns its result. When f fails with an
// internal error, or has not returned after probeAfter, the server is
// probed: when it does not answer before f does, guarded returns the outage
// at once (f's context is cancelled; f finishes in the background, bounded
// by its own deadlines, and its result is dropped). f's result reaches the
// caller only through guarded, so a dropped f shares nothing with it.
func guarded[T any](ctx context.Context, g guard, what string, f func(ctx context.Context) (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	var zero T
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan result, 1)
	go func() {
		defer cancel()
		v, err := f(fctx)
		done <- result{v, err}
	}()
	began := time.Now()
	// finish passes f's result on, an outage in words. A call that ran out
	// of time on a server that still answers met a loaded server: that is
	// said as it is, not as an outage.
	finish := func(r result, probed bool) (T, error) {
		if r.err == nil || rlslab.ErrorCode(r.err) != rlslab.EINTERNAL {
			return r.v, r.err
		}
		if timedOut(r.err) && (g.p.answeredSince(began) || g.probe(context.WithoutCancel(ctx)) == nil) {
			return zero, g.busy(what, r.err)
		}
		if isOutage(r.err) || !probed && g.probe(ctx) != nil {
			return zero, g.outage(what, r.err)
		}
		return r.v, r.err
	}
	t := time.NewTimer(probeAfter)
	defer t.Stop()
	select {
	case r := <-done:
		return finish(r, false)
	case <-t.C:
	}
	probe := make(chan error, 1)
	asked := time.Now()
	go func() { probe <- g.probe(ctx) }()
	select {
	case r := <-done: // f answered while the server was probed
		return finish(r, true)
	case err := <-probe:
		// A probe that got no answer in time on a server that finished
		// queries meanwhile met a loaded server, not a frozen one.
		if err != nil && ctx.Err() == nil && !g.p.answeredSince(asked) {
			cancel()
			return zero, g.outage(what, err)
		}
	}
	return finish(<-done, true)
}

// do is guarded for an f without a result.
func (g guard) do(ctx context.Context, what string, f func(ctx context.Context) error) error {
	_, err := guarded(ctx, g, what, func(ctx context.Context) (struct{}, error) { return struct{}{}, f(ctx) })
	return err
}

// outageLogEvery is how often the guard logs an outage at most (every
// request during one would otherwise log).
const outageLogEvery = 10 * time.Second

// outage logs the driver's error (at most once per outageLogEvery) and
// returns the outage in words.
func (g guard) outage(what string, err error) error {
	if g.p.shouldLog(time.Now()) {
		g.log.Warn("database not answering", "op", what, "err", err)
	}
	return rlslab.Errorf(rlslab.EUNAVAILABLE, "%s", ErrDatabaseDown)
}

// busy logs the driver's error (at most once per outageLogEvery) and
// returns, in words, that the database answers but too slowly for now.
func (g guard) busy(what string, err error) error {
	if g.p.shouldLog(time.Now()) {
		g.log.Warn("database answering slowly", "op", what, "err", err)
	}
	return rlslab.Errorf(rlslab.EUNAVAILABLE, "%s", ErrDatabaseBusy)
}

// probe asks the prober, or returns ctx's error when ctx ends first.
func (g guard) probe(ctx context.Context) error {
	return g.p.probe(ctx)
}

// prober checks that the server answers: that a new connection gets an
// answer to its first message (an SSLRequest, which a backend forked for
// it answers with one byte, before any authentication or catalog work). A
// stopped server refuses the connection; a frozen one never answers; a
// loaded one still answers at once, and neither a full pool nor the
// connection limit makes the probe fail. Callers that ask while a probe is
// going share its answer.
type prober struct {
	pool   *pgxpool.Pool
	mu     sync.Mutex
	cur    *probeCall // the probe going, or nil
	logged time.Time  // when an outage was last logged
}

// answeredSince reports whether the server finished a query on the
// admin pool after t (see liveness).
func (p *prober) answeredSince(t time.Time) bool {
	l, ok := p.pool.Config().ConnConfig.Tracer.(*liveness)
	return ok && l.last.Load() > t.UnixNano()
}

// liveness is the admin pool's query tracer: it notes when the server last
// finished a query, which a frozen server never does and a loaded one
// still does.
type liveness struct {
	last atomic.Int64 // Unix nanoseconds
}

// TraceQueryStart does nothing.
func (l *liveness) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

// TraceQueryEnd notes a query the server answered.
func (l *liveness) TraceQueryEnd(_ context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	if data.Err == nil {
		l.last.Store(time.Now().UnixNano())
	}
}

// shouldLog reports whether an outage seen at now is to be logged, and
// notes it if so.
func (p *prober) shouldLog(now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.logged.IsZero() && now.Sub(p.logged) < outageLogEvery {
		return false
	}
	p.logged = now
	return true
}

// probeCall is one probe and, once done is closed, its answer.
type probeCall struct {
	done chan struct{}
	err  error
}

// newProber returns a prober of the server pool connects to.
func newProber(pool *pgxpool.Pool) *prober { return &prober{pool: pool} }

// probe returns the answer of the probe going, or of a new one (within
// probeTimeout), or ctx's error when ctx ends first.
func (p *prober) probe(ctx context.Context) error {
	p.mu.Lock()
	c := p.cur
	if c == nil {
		c = &probeCall{done: make(chan struct{})}
		p.cur = c
		go func() {
			c.err = p.run()
			p.mu.Lock()
			p.cur = nil
			p.mu.Unlock()
			close(c.done)
		}()
	}
	p.mu.Unlock()
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sslRequest is the message that asks a PostgreSQL server for TLS: its
// length (8) and the code 80877103.
var sslRequest = []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}

// run probes the server once, within probeTimeout.
func (p *prober) run() error {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	cc := p.pool.Config().ConnConfig
	network, address := pgconn.NetworkAddress(cc.Host, cc.Port)
	dial := cc.DialFunc
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(ctx, network, address)
	if err != nil {
		return err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	if _, err := conn.Write(sslRequest); err != nil {
		return err
	}
	var answer [1]byte
	if _, err := io.ReadFull(conn, answer[:]); err != nil {
		return err
	}
	if answer[0] != 'S' && answer[0] != 'N' {
		return fmt.Errorf("the server answered an SSLRequest with %q", answer[0])
	}
	return nil
}
