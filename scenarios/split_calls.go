package scenarios

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Variants of split-calls (stable names: tools rely on them).
const (
	SplitVariantSetParam = "set-param"
	SplitVariantSplit    = "split"
	SplitVariantOneTx    = "one-tx"
)

// PatternSplit is the pattern of a request that sends its scope and its
// query as two separate pool calls.
const PatternSplit = "split"

// Patterns of the set-param variant's two requests.
const (
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
		ID:    "split-calls",
		Title: "SET on the pool, then query on the pool: two calls, two connections",
		Variants: withRun(runSplitCalls, []engine.Variant{
			{Name: SplitVariantSetParam, Summary: "SET app.current_tenant = $1 through pool.Exec: the server rejects the bind parameter with a syntax error."},
			{Name: SplitVariantSplit, Summary: "set_config(..., false) as one pool call, the query as another: under concurrency the query runs on another backend, under another tenant's setting."},
			{Name: SplitVariantOneTx, Summary: "Acquire once; BEGIN, set_config(..., true), query, COMMIT on that one connection: every request sees only its own rows."},
		}),
	}
}

func runSplitCalls(ctx context.Context, env *engine.Env, variant string) error {
	if len(env.Sandbox.Tenants) < 3 {
		return errors.New("split-calls needs three tenants in the sandbox")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends any pool call still held at its gate
	switch variant {
	case SplitVariantSetParam:
		return runSetParam(ctx, env)
	case SplitVariantSplit:
		return runSplit(ctx, env)
	case SplitVariantOneTx:
		return runOneTx(ctx, env)
	}
	return fmt.Errorf("split-calls: unknown variant %q", variant)
}

// runSetParam sends SET with a bind parameter the way an application does
// (pool.Exec with an argument), then the same under pgx's simple protocol.
func runSetParam(ctx context.Context, env *engine.Env) error {
	a, b := env.Sandbox.Tenants[0], env.Sandbox.Tenants[1]
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 2, MinConns: 2})
	if err != nil {
		return err
	}
	if err := env.Step(ctx, "The pool has opened its 2 connections. Each box shows what its own backend reports: PID, tenant setting, role."); err != nil {
		return err
	}
	r := pool.NewRequest(a, PatternSetParam)
	r.SetPhase("scoping")
	_, err = pool.Exec(ctx, setParamSQL, a.Setting())
	if err != nil {
		r.Fail(err)
		env.Tracker().Note(fmt.Sprintf("Request #%d (%s): pool.Exec(ctx, %q, %q) failed: %s", r.Seq, a.Name, setParamSQL, a.Setting(), err))
		if err := env.Step(ctx, fmt.Sprintf("%s sends pool.Exec(ctx, \"SET app.current_tenant = $1\", \"%s\"). The server answers: %s. SET is a utility command: it takes no bind parameters.", r.Label(), a.Setting(), err)); err != nil {
			return err
		}
	} else {
		env.Tracker().Note(fmt.Sprintf("Request #%d (%s): the server accepted SET with a bind parameter (no error).", r.Seq, a.Name))
		r.SetPhase("scoped")
		if err := env.Step(ctx, fmt.Sprintf("%s sends SET app.current_tenant = $1 with \"%s\", and this server accepted it.", r.Label(), a.Setting())); err != nil {
			return err
		}
	}

	// The same statement under the simple protocol: pgx puts the value into
	// the SQL text itself, so the server never sees a $1.
	s := pool.NewRequest(b, PatternSetParamSimple)
	if err := s.Acquire(ctx); err != nil {
		return err
	}
	if _, err := s.Conn().Exec(ctx, setParamSQL, pgx.QueryExecModeSimpleProtocol, b.Setting()); err != nil {
		s.Fail(err)
		env.Tracker().Note(fmt.Sprintf("Request #%d (%s): SET with $1 under the simple protocol failed too: %s", s.Seq, b.Name, err))
		s.ReleaseQuiet(ctx)
		return env.Step(ctx, "Done.")
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
	held := heldSetting(env, pool, pid)
	env.Tracker().Note(fmt.Sprintf("Request #%d (%s): SET with $1 under the simple protocol worked (pgx substituted the value client-side), but it is a session-level SET: after release, backend %d still %s.",
		s.Seq, b.Name, pid, engine.DescribeSetting(env.Sandbox, held, "holds")))
	return env.Step(ctx, fmt.Sprintf("Done. With a bind parameter SET is a syntax error; the simple-protocol form runs, but it is a session-level SET: backend %d still %s after release (the set-leak lesson shows where that goes). Use set_config('app.current_tenant', $1, true) in a transaction.",
		pid, engine.DescribeSetting(env.Sandbox, held, "holds")))
}

// heldSetting returns the tenant setting last read on the connection of
// pool with backend pid.
func heldSetting(env *engine.Env, pool *engine.Pool, pid uint32) *string {
	st := env.Tracker().Snapshot()
	for _, c := range st.Connections {
		if c.Pool == pool.Name() && c.PID == pid {
			return c.Tenant
		}
	}
	return nil
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
	cctx := context.WithValue(ctx, gateKey{}, h.gate)
	go func() { h.done <- fn(cctx) }()
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
	var err error
	select {
	case err = <-h.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	pool.WaitReleased(ctx, pool.Slot(h.conn))
	return err
}

// splitEvent is one move of the split variant's script: request i starts or
// finishes its set_config call or its query call.
type splitEvent struct {
	req   int
	query bool
	start bool
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
	tenants := env.Sandbox.Tenants[:3]
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 2, MinConns: 2,
		Configure: func(c *pgxpool.Config) { c.PrepareConn = holdAtAcquire }})
	if err != nil {
		return err
	}
	if err := env.Step(ctx, "The pool has opened its 2 connections. Three requests (Acme, Globex, Initech) arrive together; each sends pool.Exec(set_config(..., false)) and then pool.QueryRow(query): two separate pool calls."); err != nil {
		return err
	}
	reqs := make([]*engine.Request, len(tenants))
	for i, t := range tenants {
		reqs[i] = pool.NewRequest(t, PatternSplit)
	}
	setPID := make([]uint32, len(reqs))
	queryPID := make([]uint32, len(reqs))
	calls := make([][2]*heldCall, len(reqs))
	for _, ev := range splitScript {
		r := reqs[ev.req]
		k := 0
		if ev.query {
			k = 1
		}
		var narration string
		switch {
		case ev.start && !ev.query:
			h, err := startHeld(ctx, pool, r.Seq, func(ctx context.Context) error {
				_, err := pool.Exec(ctx, engine.SetSessionSQL, r.Tenant.Setting())
				return err
			})
			if err != nil {
				r.Fail(err)
				return err
			}
			calls[ev.req][k], setPID[ev.req] = h, h.pid
			r.SetPhase("scoping")
			r.Update(func(row *engine.RequestRow) { row.PID = h.pid })
			narration = fmt.Sprintf("%s calls pool.Exec(set_config('app.current_tenant', '%s', false)): the pool hands this call backend %d.", r.Label(), r.Tenant.Setting(), h.pid)
		case !ev.start && !ev.query:
			h := calls[ev.req][k]
			if err := h.finish(ctx, pool); err != nil {
				r.Fail(err)
				return err
			}
			r.SetPhase("scoped")
			narration = fmt.Sprintf("%s's set_config runs on backend %d; the call ends and the pool takes the connection back: it now %s.",
				r.Label(), h.pid, engine.DescribeSetting(env.Sandbox, heldSetting(env, pool, h.pid), "holds"))
		case ev.start && ev.query:
			h, err := startHeld(ctx, pool, r.Seq, func(ctx context.Context) error { return r.Observe(ctx, pool) })
			if err != nil {
				r.Fail(err)
				return err
			}
			calls[ev.req][k], queryPID[ev.req] = h, h.pid
			r.SetPhase("querying")
			r.Update(func(row *engine.RequestRow) { row.PID = h.pid })
			where := "the same backend its set_config used"
			if h.pid != setPID[ev.req] {
				where = fmt.Sprintf("not backend %d, where its set_config ran: backend %d is busy with another request's call", setPID[ev.req], setPID[ev.req])
			}
			narration = fmt.Sprintf("%s sends its query as a second call, pool.QueryRow: the pool hands it backend %d, %s.", r.Label(), h.pid, where)
		default:
			h := calls[ev.req][k]
			if err := h.finish(ctx, pool); err != nil {
				r.Fail(err)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				continue
			}
			r.SetPhase("released")
			splitWhy(env, r, setPID[ev.req])
			narration = r.Verdict()
		}
		if err := env.Step(ctx, narration); err != nil {
			return err
		}
	}
	crossed, leaks := 0, 0
	st := env.Tracker().Snapshot()
	for i, r := range reqs {
		env.Tracker().SetMetric(fmt.Sprintf("request #%d set_config PID", r.Seq), fmt.Sprint(setPID[i]), float64(setPID[i]))
		env.Tracker().SetMetric(fmt.Sprintf("request #%d query PID", r.Seq), fmt.Sprint(queryPID[i]), float64(queryPID[i]))
		if setPID[i] != queryPID[i] {
			crossed++
		}
		for _, row := range st.Requests {
			if row.Seq != r.Seq {
				continue
			}
			if row.Leak {
				leaks++
			}
			env.Tracker().Note(fmt.Sprintf("Request #%d (%s): set_config on backend %d, query on backend %d, which %s: %d rows, %d of another tenant.",
				r.Seq, r.Tenant.Name, setPID[i], queryPID[i], engine.DescribeSetting(env.Sandbox, row.SeenTenant, "held"), row.Rows, row.ForeignRows))
		}
	}
	return env.Step(ctx, fmt.Sprintf("Done. %d of %d queries ran on another backend than their set_config; %d returned another tenant's rows. Two pool calls are two acquires: nothing ties the second to the first.", crossed, len(reqs), leaks))
}

// splitWhy rewrites the why of a split request to name both backends.
func splitWhy(env *engine.Env, r *engine.Request, setPID uint32) {
	env.Tracker().UpdateRequest(r.Seq, func(row *engine.RequestRow) {
		row.Why = fmt.Sprintf("set_config ran on backend %d, the query on backend %d. %s", setPID, row.PID, row.Why)
	})
}

// oneTxScript is the split script's interleaving for requests that acquire
// once: acquire, then scope, query and release together.
var oneTxScript = []struct {
	req     int
	acquire bool
}{{0, true}, {1, true}, {0, false}, {2, true}, {1, false}, {2, false}}

// runOneTx plays the same three concurrent requests, each acquiring one
// connection and scoping and querying inside one transaction on it.
func runOneTx(ctx context.Context, env *engine.Env) error {
	tenants := env.Sandbox.Tenants[:3]
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 2, MinConns: 2})
	if err != nil {
		return err
	}
	if err := env.Step(ctx, "The pool has opened its 2 connections. The same three requests arrive together; each acquires one connection and runs BEGIN, set_config(..., true), its query and COMMIT on it."); err != nil {
		return err
	}
	reqs := make([]*engine.Request, len(tenants))
	for i, t := range tenants {
		reqs[i] = pool.NewRequest(t, engine.PatternTxLocal)
	}
	for _, ev := range oneTxScript {
		r := reqs[ev.req]
		if ev.acquire {
			if err := r.Acquire(ctx); err != nil {
				return err
			}
			continue
		}
		for _, step := range []func(context.Context) error{r.Scope, r.Query, r.Release} {
			if err := step(ctx); err != nil {
				r.ReleaseQuiet(context.WithoutCancel(ctx))
				if ctx.Err() != nil {
					return ctx.Err()
				}
				break
			}
		}
	}
	st := env.Tracker().Snapshot()
	leaks := 0
	for _, row := range st.Requests {
		if row.Leak {
			leaks++
		}
		tenant := ""
		if row.Tenant != nil {
			tenant = env.Sandbox.TenantName(*row.Tenant)
		}
		if row.Error != "" {
			env.Tracker().Note(fmt.Sprintf("Request #%d (%s) failed: %s", row.Seq, tenant, row.Error))
			continue
		}
		env.Tracker().Note(fmt.Sprintf("Request #%d (%s): scope and query in one transaction on backend %d, which %s: %d rows, %d of another tenant.",
			row.Seq, tenant, row.PID, engine.DescribeSetting(env.Sandbox, row.SeenTenant, "held"), row.Rows, row.ForeignRows))
	}
	return env.Step(ctx, fmt.Sprintf("Done. %d leaks: each request scoped and queried on the one connection it acquired, and the setting ended with its transaction.", leaks))
}
