package engine_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

func TestMain(m *testing.M) { pgenvtest.Main(m) }

// waitFor waits until ok holds for the tracker's state, following its
// changes, for at most 5 s.
func waitFor(t *testing.T, tr *engine.Tracker, ok func(engine.State) bool) engine.State {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		if st := tr.Snapshot(); ok(st) {
			return st
		}
		select {
		case <-tr.Changed():
		case <-timeout:
			t.Fatalf("state never matched: %+v", tr.Snapshot())
		}
	}
}

func hasPID(st engine.State, pid uint32) bool {
	return slices.ContainsFunc(st.Connections, func(c engine.Connection) bool { return c.PID == pid })
}

// TestKilledBackendLeavesTheLiveView ends one pooled connection's backend
// with pg_terminate_backend: once pgx notices (the next use of the
// connection fails and the pool closes it), the connection is gone from
// State.Connections, and the other one stays.
func TestKilledBackendLeavesTheLiveView(t *testing.T) {
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 1})
	lab := sessionstest.MustCreateLab(t, m, "owner")
	ctx := t.Context()
	tr := engine.NewTracker(lab.ID, lab.Sandbox.Tenants)
	env := engine.NewEnv(lab.Sandbox, nil, tr, engine.NewPace(engine.Speed{Max: true}), nil)
	defer env.Close()
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 2, MinConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	st := tr.Snapshot()
	if len(st.Connections) != 2 {
		t.Fatalf("want 2 connections shown, got %+v", st.Connections)
	}
	victim, other := st.Connections[0].PID, st.Connections[1].PID
	var killed bool
	if err := m.Admin().QueryRow(ctx, "SELECT pg_terminate_backend($1, 5000)", int32(victim)).Scan(&killed); err != nil || !killed {
		t.Fatalf("terminate backend %d: %v %v", victim, killed, err)
	}
	if !hasPID(tr.Snapshot(), victim) {
		t.Fatal("the connection left the view before pgx could know its backend was gone")
	}
	// Use every connection once: the one whose backend is gone fails, and
	// the pool closes it at release.
	conns := pool.AcquireAllIdle(ctx)
	failed := 0
	for _, c := range conns {
		if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
			failed++
		}
		pool.ReleaseAndWait(ctx, c)
	}
	if len(conns) != 2 || failed != 1 {
		t.Fatalf("%d connections, %d failed", len(conns), failed)
	}
	st = waitFor(t, tr, func(st engine.State) bool { return !hasPID(st, victim) })
	if !hasPID(st, other) || len(st.Connections) != 1 {
		t.Errorf("after the kill: %+v, want only backend %d", st.Connections, other)
	}
	// The pool opens a new connection when asked for two, and shows it.
	r1, r2 := pool.NewRequest(lab.Sandbox.Tenants[0], engine.PatternSessionSet), pool.NewRequest(lab.Sandbox.Tenants[1], engine.PatternForgot)
	for _, r := range []*engine.Request{r1, r2} {
		if err := r.AcquireQuiet(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []*engine.Request{r1, r2} {
		r.ReleaseQuiet(ctx)
	}
	if st := tr.Snapshot(); len(st.Connections) != 2 || hasPID(st, victim) {
		t.Errorf("after two acquires: %+v", st.Connections)
	}
}

// TestReleaseIsReadBeforeTheWaitReturns checks a release waits for the
// pool's release hook: when Release returns, the connection's box already
// shows what its backend holds after the request.
func TestReleaseIsReadBeforeTheWaitReturns(t *testing.T) {
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 1})
	lab := sessionstest.MustCreateLab(t, m, "owner")
	ctx := t.Context()
	tr := engine.NewTracker(lab.ID, lab.Sandbox.Tenants)
	env := engine.NewEnv(lab.Sandbox, nil, tr, engine.NewPace(engine.Speed{Max: true}), nil)
	defer env.Close()
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 1, MinConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i, tenant := range lab.Sandbox.Tenants {
		r := pool.NewRequest(tenant, engine.PatternSessionSet)
		if err := r.Do(ctx); err != nil {
			t.Fatal(err)
		}
		c := tr.Snapshot().Connections[0]
		if c.State != engine.ConnIdle || c.Tenant == nil || *c.Tenant != tenant.Setting() {
			t.Fatalf("request %d: after Release the connection shows %+v, want idle with tenant %s", i, c, tenant.Setting())
		}
	}
}

// TestReleasedConnectionIsBackInThePoolCounts widens the window between
// the release hook reading a connection back and pgxpool taking it back (a
// hook that sleeps there): the frame after a release, and the pool's own
// counts after a quiet one, still show the connection idle, not acquired.
func TestReleasedConnectionIsBackInThePoolCounts(t *testing.T) {
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 1})
	lab := sessionstest.MustCreateLab(t, m, "owner")
	ctx := t.Context()
	tr := engine.NewTracker(lab.ID, nil)
	env := engine.NewEnv(lab.Sandbox, nil, tr, engine.NewPace(engine.Speed{Max: true}), nil)
	defer env.Close()
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 2, MinConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	engine.SetAfterBack(pool, func() { time.Sleep(200 * time.Millisecond) })
	for i, tenant := range lab.Sandbox.Tenants[:2] {
		r := pool.NewRequest(tenant, engine.PatternSessionSet)
		if err := r.Do(ctx); err != nil {
			t.Fatal(err)
		}
		st := tr.Snapshot()
		if st.Pool.Acquired != 0 || st.Pool.Idle != st.Pool.Total || st.Connections[0].State != engine.ConnIdle {
			t.Fatalf("request %d: the frame after Release shows pool %+v, connection %s; want all idle", i, st.Pool, st.Connections[0].State)
		}
	}
	r := pool.NewRequest(lab.Sandbox.Tenants[0], engine.PatternTxLocal)
	if err := r.AcquireQuiet(ctx); err != nil {
		t.Fatal(err)
	}
	r.ReleaseQuiet(ctx)
	if s := pool.Stat(); s.AcquiredConns() != 0 {
		t.Fatalf("after ReleaseQuiet the pool counts %d acquired", s.AcquiredConns())
	}
}

// steps is a scenario whose one variant shows three frames.
func steps(minTenants int) *engine.Scenario {
	return &engine.Scenario{ID: "steps", MinTenants: minTenants,
		Params: []engine.Param{{Name: "n", Min: 1, Max: 9, Default: 3}},
		Variants: []engine.Variant{{Name: "v", Conns: engine.Fixed(0), Run: func(ctx context.Context, env *engine.Env) error {
			for i := range env.Params.Get("n") {
				if err := env.Step(ctx, "frame "+string(rune('1'+i))); err != nil {
					return err
				}
			}
			return nil
		}}}}
}

// TestSingleStepHoldsEachFrame checks single-step mode: the pace says so,
// the run stays on its frame until Step, and a speed change lets it run to
// the end at full speed.
func TestSingleStepHoldsEachFrame(t *testing.T) {
	tr := engine.NewTracker("x", nil)
	pace := engine.NewPace(engine.Speed{Single: true})
	env := engine.NewEnv(engine.Sandbox{}, nil, tr, pace, nil)
	tr.Begin("steps", "v", "step")
	done := make(chan error, 1)
	go func() { done <- engine.Play(context.Background(), steps(0), "v", env) }()
	if s := pace.Speed(); !s.Single || s.Max {
		t.Fatalf("pace %+v, want single-step", s)
	}
	waitFor(t, tr, func(st engine.State) bool { return st.Narration == "frame 1" })
	// Held: no frame comes without a Step.
	select {
	case <-done:
		t.Fatal("the run ended without a step")
	case <-time.After(100 * time.Millisecond):
	}
	if f := tr.Frame(); f != 1 {
		t.Fatalf("frame %d without a step", f)
	}
	pace.Step()
	waitFor(t, tr, func(st engine.State) bool { return st.Narration == "frame 2" })
	pace.Set(engine.Speed{Max: true})
	if s := pace.Speed(); !s.Max || s.Single {
		t.Errorf("pace %+v after the change, want full speed", s)
	}
	if err := <-done; err != nil || tr.Frame() != 3 || tr.Snapshot().Status != engine.StatusDone {
		t.Errorf("run: %v, %d frames, status %s", err, tr.Frame(), tr.Snapshot().Status)
	}
}

// TestPlayChecksTenantsAndAppliesDefaults checks Play refuses a sandbox
// with fewer tenants than the scenario needs, and gives a run the
// parameters' defaults.
func TestPlayChecksTenantsAndAppliesDefaults(t *testing.T) {
	play := func(sc *engine.Scenario, sb engine.Sandbox) (*engine.Tracker, error) {
		tr := engine.NewTracker("x", nil)
		tr.Begin(sc.ID, "v", "max")
		err := engine.Play(context.Background(), sc, "v", engine.NewEnv(sb, nil, tr, engine.NewPace(engine.Speed{Max: true}), nil))
		return tr, err
	}
	_, err := play(steps(3), engine.Sandbox{Tenants: make([]engine.Tenant, 2)})
	if err == nil || !strings.Contains(err.Error(), "steps needs 3 tenants") {
		t.Errorf("two tenants for a scenario that needs three: %v", err)
	}
	tr, err := play(steps(3), engine.Sandbox{Tenants: make([]engine.Tenant, 3)})
	if err != nil || tr.Frame() != 3 {
		t.Errorf("default n=3: %v, %d frames", err, tr.Frame())
	}
	if _, err := engine.NewCatalog(&engine.Scenario{ID: "x", Variants: []engine.Variant{{Name: "v", Run: steps(0).Variants[0].Run}}}); err == nil {
		t.Error("a variant without a connection need was accepted")
	}
}
