package scenarios

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Variants of split-calls (stable names: tools and lessons rely on them).
const (
	SplitCallsSetParam = "set-param"
	SplitCallsSplit    = "split"
	SplitCallsOneTx    = "one-tx"
)

// Patterns of split-calls' requests.
const (
	PatternSplit          = "split"            // scope and query sent as two separate pool calls
	PatternSetParam       = "set-param"        // SET ... = $1 through the extended protocol
	PatternSetParamSimple = "set-param-simple" // the same under pgx's simple protocol
)

// setParamSQL is the statement people write first: SET with a bind
// parameter.
const setParamSQL = `SET app.current_tenant = $1`

// SplitCalls returns the split-calls scenario: SET with a bind parameter is
// a syntax error, and a set_config sent as its own pool call lands on one
// connection while the query, a second pool call, lands on another.
//
// The interleaving of the split variant is controlled so that it happens on
// every run: three requests share a pool of two connections, and each pool
// call is held on the connection it acquired (in the pool's PrepareConn
// hook) until the scenario lets it go, so that every acquire finds exactly
// one idle connection.
func SplitCalls() *engine.Scenario {
	return &engine.Scenario{
		ID:     "split-calls",
		Pacing: engine.PacingReplay,
		Title:  "SET on the pool, then query on the pool: which connection runs each call",
		Variants: []engine.Variant{
			{Name: SplitCallsSetParam, Run: runSetParam, Summary: "SET app.current_tenant = $1 with the tenant as a bind parameter, through pool.Exec; then the same SET under pgx's simple protocol."},
			{Name: SplitCallsSplit, Run: runSplit, Summary: "set_config(..., false) as one pool call and the query as a second pool call, for three tenants at once."},
			{Name: SplitCallsOneTx, Run: runOneTx, Summary: "Acquire one connection; BEGIN, set_config(..., true), query, COMMIT on that connection."},
		},
		MinTenants: 3,
		Conns:      engine.Fixed(2),
	}
}

// openPair opens the variants' pool of two connections and shows it.
func openPair(ctx context.Context, env *engine.Env, narration string, configure func(*pgxpool.Config)) (*engine.Pool, error) {
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 2, MinConns: 2, Configure: configure})
	if err != nil {
		return nil, err
	}
	return pool, env.Step(ctx, "The pool has opened its 2 connections. "+narration)
}

// runSetParam sends SET with a bind parameter the way an application does
// (pool.Exec with an argument), then the same under pgx's simple protocol.
func runSetParam(ctx context.Context, env *engine.Env) error {
	a, b := env.Sandbox.Tenants[0], env.Sandbox.Tenants[1]
	pool, err := openPair(ctx, env, "Each box shows what its own backend reports: PID, tenant setting, role.", nil)
	if err != nil {
		return err
	}
	tr := env.Tracker()
	r := pool.NewRequest(a, PatternSetParam)
	r.SetPhase("scoping")
	if _, err = pool.Exec(ctx, setParamSQL, a.Setting()); err != nil {
		r.Fail(err)
		tr.Note(fmt.Sprintf("Request #%d (%s): pool.Exec(ctx, %q, %q) failed: %s", r.Seq, a.Name, setParamSQL, a.Setting(), err))
		err = env.Step(ctx, fmt.Sprintf("%s sends pool.Exec(ctx, \"SET app.current_tenant = $1\", \"%s\"). The server answers: %s. SET is a utility command: it takes no bind parameters.", r.Label(), a.Setting(), err))
	} else {
		tr.Note(fmt.Sprintf("Request #%d (%s): the server accepted SET with a bind parameter (no error).", r.Seq, a.Name))
		r.SetPhase("scoped")
		err = env.Step(ctx, fmt.Sprintf("%s sends SET app.current_tenant = $1 with \"%s\", and this server accepted it.", r.Label(), a.Setting()))
	}
	if err != nil {
		return err
	}

	// The same statement under the simple protocol: pgx puts the value into
	// the SQL text itself, so the server never sees a $1.
	s := pool.NewRequest(b, PatternSetParamSimple)
	defer s.ReleaseQuiet(context.WithoutCancel(ctx))
	if err := s.Acquire(ctx); err != nil {
		return err
	}
	if _, err := s.Conn().Exec(ctx, setParamSQL, pgx.QueryExecModeSimpleProtocol, b.Setting()); err != nil {
		s.Fail(err)
		tr.Note(fmt.Sprintf("Request #%d (%s): SET with $1 under the simple protocol failed too: %s", s.Seq, b.Name, err))
		s.ReleaseQuiet(ctx)
		return env.Conclude(ctx, "")
	}
	s.SetPhase("scoped")
	if err := env.Step(ctx, fmt.Sprintf("%s sends the same SET with pgx.QueryExecModeSimpleProtocol on backend %d: no error, because pgx wrote '%s' into the SQL text on the client; the server never saw a $1.", s.Label(), s.PID(), b.Setting())); err != nil {
		return err
	}
	if err := s.Observe(ctx, s.Conn()); err != nil {
		s.Fail(err)
		return err
	}
	s.SetPhase("queried")
	if err := env.Step(ctx, s.Verdict()); err != nil {
		return err
	}
	pid := s.PID()
	if err := s.Release(ctx); err != nil {
		return err
	}
	held := engine.DescribeSetting(env.Sandbox, pool.Setting(pid), "holds")
	tr.Note(fmt.Sprintf("Request #%d (%s): SET with $1 under the simple protocol worked (pgx substituted the value client-side), but it is a session-level SET: after release, backend %d still %s.", s.Seq, b.Name, pid, held))
	return env.Conclude(ctx, fmt.Sprintf("With a bind parameter SET is a syntax error; the simple-protocol form runs, but it is a session-level SET: backend %d still %s after release (the set-leak lesson shows where that goes). Use set_config('app.current_tenant', $1, true) in a transaction.", pid, held))
}

// gateKey is the context key under which a pool call carries its gate.
type gateKey struct{}

// callGate holds one pool call on the connection it acquired until the
// scenario lets it go: this is how the scenario decides which calls are in
// flight at the same time.
type callGate struct {
	acquired chan *pgx.Conn
	proceed  chan struct{}
}

// holdAtAcquire is the pool's PrepareConn hook: a call whose context carries
// a gate reports the connection it got and waits for the go-ahead; every
// other acquire passes straight through.
func holdAtAcquire(ctx context.Context, c *pgx.Conn) (bool, error) {
	g, ok := ctx.Value(gateKey{}).(*callGate)
	if !ok {
		return true, nil
	}
	g.acquired <- c // buffered: one acquire per call
	select {
	case <-g.proceed:
		return true, nil
	case <-ctx.Done():
		return true, ctx.Err() // released, not destroyed
	}
}

// heldCall is one pool call in flight: it has acquired conn and waits at its
// gate.
type heldCall struct {
	gate *callGate
	done chan error
	conn *pgx.Conn
	pid  uint32
}

// startHeld starts fn (which makes exactly one pool call) in its own
// goroutine and returns once the call has acquired a connection, which is
// shown as acquired by request seq.
func startHeld(ctx context.Context, pool *engine.Pool, seq int, fn func(context.Context) error) (*heldCall, error) {
	h := &heldCall{gate: &callGate{acquired: make(chan *pgx.Conn, 1), proceed: make(chan struct{})}, done: make(chan error, 1)}
	go func() { h.done <- fn(context.WithValue(ctx, gateKey{}, h.gate)) }()
	select {
	case c := <-h.gate.acquired:
		h.conn, h.pid = c, c.PgConn().PID()
		pool.Mark(c, engine.ConnAcquired, seq)
		return h, nil
	case err := <-h.done:
		if err == nil {
			err = errors.New("the pool call ended without acquiring a connection")
		}
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// finish lets the call run its statement and waits until it has returned
// and its connection has been released (and read again by the pool).
func (h *heldCall) finish(ctx context.Context, pool *engine.Pool) error {
	close(h.gate.proceed)
	select {
	case err := <-h.done:
		pool.WaitReleased(ctx, pool.Slot(h.conn))
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// splitEvent is one move of the split variant's script: request req starts
// or finishes its set_config call (query false) or its query call.
type splitEvent struct {
	req          int
	query, start bool
}

// splitScript interleaves three requests on a pool of two so that every
// start finds exactly one idle connection: the one another request's call
// just left. Each query therefore lands on a backend that another request
// scoped.
var splitScript = []splitEvent{
	{0, false, true}, {1, false, true}, {0, false, false}, {2, false, true},
	{1, false, false}, {0, true, true}, {2, false, false}, {1, true, true},
	{0, true, false}, {2, true, true}, {1, true, false}, {2, true, false},
}

// runSplit plays three concurrent requests that each send set_config(...,
// false) and their query as two separate pool calls.
func runSplit(ctx context.Context, env *engine.Env) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends any pool call still held at its gate
	pool, err := openPair(ctx, env, "Three requests (Acme, Globex, Initech) arrive together; each sends pool.Exec(set_config(..., false)) and then pool.QueryRow(query): two separate pool calls.",
		func(c *pgxpool.Config) { c.PrepareConn = holdAtAcquire })
	if err != nil {
		return err
	}
	reqs := make([]*engine.Request, 3)
	for i, t := range env.Sandbox.Tenants[:3] {
		reqs[i] = pool.NewRequest(t, PatternSplit)
	}
	var pids [3][2]uint32 // [request][set_config, query]: backend PIDs
	held := map[[2]int]*heldCall{}
	for _, ev := range splitScript {
		r, k := reqs[ev.req], 0
		if ev.query {
			k = 1
		}
		var narration string
		if ev.start {
			call := func(ctx context.Context) error {
				_, err := pool.Exec(ctx, engine.SetSessionSQL, r.Tenant.Setting())
				return err
			}
			if ev.query {
				call = func(ctx context.Context) error { return r.Observe(ctx, pool) }
			}
			h, err := startHeld(ctx, pool, r.Seq, call)
			if err != nil {
				r.Fail(err)
				return err
			}
			held[[2]int{ev.req, k}], pids[ev.req][k] = h, h.pid
			phase := "scoping"
			if ev.query {
				phase = "querying"
			}
			r.Update(func(row *engine.RequestRow) { row.PID, row.Phase = h.pid, phase })
			narration = fmt.Sprintf("%s calls pool.Exec(set_config('app.current_tenant', '%s', false)): the pool hands this call backend %d.", r.Label(), r.Tenant.Setting(), h.pid)
			if ev.query {
				where := "the same backend its set_config used"
				if set := pids[ev.req][0]; h.pid != set {
					where = fmt.Sprintf("not backend %d, where its set_config ran: backend %d is busy with another request's call", set, set)
				}
				narration = fmt.Sprintf("%s sends its query as a second call, pool.QueryRow: the pool hands it backend %d, %s.", r.Label(), h.pid, where)
			}
		} else {
			h := held[[2]int{ev.req, k}]
			if err := h.finish(ctx, pool); err != nil {
				r.Fail(err)
				if !ev.query || ctx.Err() != nil {
					return err
				}
				continue
			}
			if ev.query {
				r.Update(func(row *engine.RequestRow) {
					row.Phase = "released"
					row.Why = fmt.Sprintf("set_config ran on backend %d, the query on backend %d. %s", pids[ev.req][0], row.PID, row.Why)
				})
				narration = r.Verdict()
			} else {
				r.SetPhase("scoped")
				narration = fmt.Sprintf("%s's set_config runs on backend %d; the call ends and the pool takes the connection back: it now %s.",
					r.Label(), h.pid, engine.DescribeSetting(env.Sandbox, pool.Setting(h.pid), "holds"))
			}
		}
		if err := env.Step(ctx, narration); err != nil {
			return err
		}
	}
	crossed, leaks := 0, 0
	tr := env.Tracker()
	for i, r := range reqs {
		set, query := pids[i][0], pids[i][1]
		tr.SetMetric(fmt.Sprintf("request #%d set_config PID", r.Seq), fmt.Sprint(set), float64(set))
		tr.SetMetric(fmt.Sprintf("request #%d query PID", r.Seq), fmt.Sprint(query), float64(query))
		if set != query {
			crossed++
		}
		row := r.Row()
		if row.Leak {
			leaks++
		}
		tr.Note(fmt.Sprintf("Request #%d (%s): set_config on backend %d, query on backend %d, which %s: %d rows, %d of another tenant.",
			r.Seq, r.Tenant.Name, set, query, engine.DescribeSetting(env.Sandbox, row.SeenTenant, "held"), row.Rows, row.ForeignRows))
	}
	return env.Conclude(ctx, fmt.Sprintf("%d of %d queries ran on another backend than their set_config: two pool calls are two acquires, and nothing ties the second to the first.", crossed, len(reqs)))
}

// runOneTx plays the same three concurrent requests, each acquiring one
// connection and scoping and querying inside one transaction on it, in the
// split script's interleaving: request 0 and 1 acquire, 0 finishes, 2
// acquires, 1 and 2 finish.
func runOneTx(ctx context.Context, env *engine.Env) error {
	pool, err := openPair(ctx, env, "The same three requests arrive together; each acquires one connection and runs BEGIN, set_config(..., true), its query and COMMIT on it.", nil)
	if err != nil {
		return err
	}
	reqs := make([]*engine.Request, 3)
	for i, t := range env.Sandbox.Tenants[:3] {
		reqs[i] = pool.NewRequest(t, engine.PatternTxLocal)
	}
	for _, ev := range []struct {
		req     int
		acquire bool
	}{{0, true}, {1, true}, {0, false}, {2, true}, {1, false}, {2, false}} {
		r := reqs[ev.req]
		if ev.acquire {
			err = r.Acquire(ctx)
		} else if err = r.Finish(ctx); ctx.Err() == nil {
			err = nil // a failed request is an outcome, in the log
		}
		if err != nil {
			return err
		}
	}
	env.NoteRequests(nil)
	return env.Conclude(ctx, "Each request scoped and queried on the one connection it acquired, and the setting ended with its transaction.")
}
