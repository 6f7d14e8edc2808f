package sessions_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

func TestMain(m *testing.M) { pgenvtest.Main(m) }

// leftovers counts what a lab left on the server: backends on its
// database, the database itself, and its roles. Backends end a moment after
// they are told to, so it waits (up to 5 s) for the counts to drop to zero
// before it returns them.
func leftovers(t *testing.T, m *sessions.Manager, sb engine.Sandbox) (backends, dbs, roles int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		backends, dbs, roles = countLeftovers(t, m, sb)
		if backends+dbs+roles == 0 || time.Now().After(deadline) {
			return backends, dbs, roles
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countLeftovers reads the counts leftovers waits on, once.
func countLeftovers(t *testing.T, m *sessions.Manager, sb engine.Sandbox) (backends, dbs, roles int) {
	t.Helper()
	err := m.Admin().QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM pg_stat_activity WHERE datname = $1),
		(SELECT count(*) FROM pg_database WHERE datname = $1),
		(SELECT count(*) FROM pg_roles WHERE rolname IN ($2, $3))`, sb.Database, sb.AppRole, sb.OwnerRole).Scan(&backends, &dbs, &roles)
	if err != nil {
		t.Fatal(err)
	}
	return backends, dbs, roles
}

func TestLabSandboxIsWhatTheDesignSays(t *testing.T) {
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2})
	l := sessionstest.MustCreateLab(t, m, "owner")
	var super, bypass, login, ownerLogin bool
	var limit int
	err := m.Admin().QueryRow(context.Background(), `SELECT a.rolsuper, a.rolbypassrls, a.rolcanlogin, a.rolconnlimit, o.rolcanlogin
		FROM pg_roles a, pg_roles o WHERE a.rolname = $1 AND o.rolname = $2`, l.Sandbox.AppRole, l.Sandbox.OwnerRole).
		Scan(&super, &bypass, &login, &limit, &ownerLogin)
	if err != nil {
		t.Fatal(err)
	}
	if super || bypass || !login || limit != sessions.DefaultConnLimit || ownerLogin {
		t.Errorf("app role super=%v bypassrls=%v login=%v limit=%d; owner login=%v", super, bypass, login, limit, ownerLogin)
	}
	conn, release, err := l.Sandbox.Admin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	var enabled, forced bool
	var owner, qual string
	err = conn.QueryRow(context.Background(), `SELECT c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner), p.qual
		FROM pg_class c JOIN pg_policies p ON p.tablename = c.relname WHERE c.relname = 'invoices'`).Scan(&enabled, &forced, &owner, &qual)
	if err != nil {
		t.Fatal(err)
	}
	if !enabled || !forced || owner != l.Sandbox.OwnerRole {
		t.Errorf("invoices: rls %v forced %v owner %s", enabled, forced, owner)
	}
	t.Logf("policy: %s", qual)
}

func TestOwnerAndLookup(t *testing.T) {
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2})
	l := sessionstest.MustCreateLab(t, m, "0123456789abcdef0123456789abcdef")
	if !l.IsOwner("0123456789abcdef0123456789abcdef") || l.IsOwner("") || l.IsOwner("nope") {
		t.Error("IsOwner accepts the wrong secrets")
	}
	if got := m.ForOwner("0123456789abcdef0123456789abcdef"); got != l {
		t.Errorf("ForOwner: %v", got)
	}
	if _, err := m.Get("nope"); rlslab.ErrorCode(err) != rlslab.ENOTFOUND {
		t.Errorf("Get unknown: %v", err)
	}
}

func TestCapIsEnforced(t *testing.T) {
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 1})
	sessionstest.MustCreateLab(t, m, "a")
	_, err := m.Create(context.Background(), "b")
	if rlslab.ErrorCode(err) != rlslab.EUNAVAILABLE {
		t.Errorf("second lab with a cap of 1: %v", err)
	}
}

func TestBudgetOverTheServerIsRefused(t *testing.T) {
	srv := pgenvtest.MustServer(t)
	_, err := sessions.Open(context.Background(), sessions.Config{AdminURL: srv.URL, MaxLabs: 400, ConnLimit: 50})
	if rlslab.ErrorCode(err) != rlslab.EUNAVAILABLE {
		t.Fatalf("budget over max_connections: %v", err)
	}
	t.Log(err)
	if got := sessions.ConnectionBudget(20, 12); got != 3+20*13 {
		t.Errorf("ConnectionBudget(20, 12) = %d", got)
	}
}

// TestClosingALabLeavesNothing runs a scenario, watches the lab, closes it
// and checks: no goroutine of ours, no backend, no database, no role.
func TestClosingALabLeavesNothing(t *testing.T) {
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2})
	ignore := goleak.IgnoreCurrent()
	l := sessionstest.MustCreateLab(t, m, "owner")
	w := l.Watch()
	st := sessionstest.MustRun(t, l, "set-leak", "session-set", map[string]string{"pool": "3"})
	if len(st.Connections) != 3 {
		t.Fatalf("%d connections after the run", len(st.Connections))
	}
	var app int
	if err := m.Admin().QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2",
		l.Sandbox.Database, l.Sandbox.AppRole).Scan(&app); err != nil {
		t.Fatal(err)
	}
	if _, d, r := countLeftovers(t, m, l.Sandbox); app != 3 || d != 1 || r != 2 {
		t.Fatalf("before close: %d app backends, %d databases, %d roles", app, d, r)
	}
	// A run in progress is cancelled by the close too.
	if err := l.Start(sessions.RunRequest{Scenario: "set-leak", Variant: "tx-local", Speed: engine.Speed{Factor: 0.25}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.CloseLab(ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.Done():
	case <-time.After(5 * time.Second):
		t.Error("watcher not told the lab closed")
	}
	w.Close()
	if b, d, r := leftovers(t, m, l.Sandbox); b != 0 || d != 0 || r != 0 {
		t.Errorf("after close: %d backends, %d databases, %d roles", b, d, r)
	}
	goleak.VerifyNone(t, ignore)
}

// TestResetDuringARunCancelsIt checks a reset cancels a slow run cleanly,
// leaves no app backend behind and the lab runs again.
func TestResetDuringARunCancelsIt(t *testing.T) {
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2})
	l := sessionstest.MustCreateLab(t, m, "owner")
	if err := l.Start(sessions.RunRequest{Scenario: "set-leak", Variant: "session-set", Speed: engine.Speed{Factor: 0.25}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if b, _, _ := leftovers(t, m, l.Sandbox); b != 0 {
		t.Errorf("%d backends left on the lab database after reset", b)
	}
	st := sessionstest.MustRun(t, l, "set-leak", "session-set", nil)
	if st.Leaks() != 1 {
		t.Errorf("after reset: %d leaks", st.Leaks())
	}
}

func TestIdleLabsExpire(t *testing.T) {
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2, TTL: time.Second})
	l := sessionstest.MustCreateLab(t, m, "owner")
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := m.Get(l.ID); err != nil {
			if b, d, r := leftovers(t, m, l.Sandbox); b+d+r != 0 {
				t.Errorf("expired lab left %d backends, %d databases, %d roles", b, d, r)
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("idle lab did not expire")
}

// BenchmarkCreateLab measures creating a lab (database, roles, schema,
// seed) and closing it again, one after the other.
func BenchmarkCreateLab(b *testing.B) {
	m := sessionstest.MustOpenManager(b, sessions.Config{MaxLabs: 2})
	ctx := context.Background()
	var create time.Duration
	for b.Loop() {
		start := time.Now()
		l, err := m.Create(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		create += time.Since(start)
		if err := m.CloseLab(ctx, l.ID); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(create.Microseconds())/float64(b.N)/1000, "ms/create")
}

// TestResetWhileARequestHoldsAConnection cancels a run while a request
// holds a connection (single-step mode keeps it on that frame): the reset
// must not hang on the pool, and no backend may stay behind.
func TestResetWhileARequestHoldsAConnection(t *testing.T) {
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2})
	l := sessionstest.MustCreateLab(t, m, "owner")
	if err := l.Start(sessions.RunRequest{Scenario: "set-leak", Variant: "tx-local", Speed: engine.Speed{Single: true}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := l.Step(); err != nil {
			t.Fatal(err)
		}
		st := l.Tracker().Snapshot()
		if st.Pool.Acquired > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection acquired: %+v", st.Pool)
		}
		time.Sleep(20 * time.Millisecond)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- l.Reset(ctx)
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("reset hung while a request held a connection")
	}
	if b, _, _ := leftovers(t, m, l.Sandbox); b != 0 {
		t.Errorf("%d backends left after the reset", b)
	}
	if st := l.Tracker().Snapshot(); st.Status != engine.StatusIdle || len(st.Connections) != 0 {
		t.Errorf("after reset: %s, %d connections", st.Status, len(st.Connections))
	}
}
