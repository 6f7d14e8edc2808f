package sessions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"github.com/rlslab/rlslab/scenarios"
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
	t.Parallel()
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
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2})
	l, err := m.Create(context.Background(), "0123456789abcdef0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
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
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 1})
	sessionstest.MustCreateLab(t, m, "a")
	_, err := m.Create(context.Background(), "b")
	if rlslab.ErrorCode(err) != rlslab.EUNAVAILABLE {
		t.Errorf("second lab with a cap of 1: %v", err)
	}
}

func TestBudgetIsComputedFromTheServer(t *testing.T) {
	t.Parallel()
	srv := pgenvtest.MustServer(t)
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2, Spares: -1})
	var maxConns, reserved int
	if err := m.Admin().QueryRow(context.Background(), `SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int`).Scan(&maxConns, &reserved); err != nil {
		t.Fatal(err)
	}
	c := m.Capacity()
	if c.Budget != maxConns-reserved-sessions.DefaultMargin || c.Runs >= c.Budget || c.Runs <= 0 {
		t.Errorf("capacity %+v on a server with max_connections %d, %d reserved", c, maxConns, reserved)
	}
	for _, cfg := range []sessions.Config{
		{Budget: maxConns + 1},        // more than the server allows
		{Budget: 12},                  // too small for one run of a lab
		{ConnLimit: 100, Budget: 100}, // one lab's run would not fit
	} {
		cfg.AdminURL, cfg.Catalog, cfg.Spares = srv.URL, scenarios.DefaultCatalog(), -1
		if _, err := sessions.Open(context.Background(), cfg); rlslab.ErrorCode(err) != rlslab.EUNAVAILABLE {
			t.Errorf("budget %d, conn limit %d: %v", cfg.Budget, cfg.ConnLimit, err)
		} else {
			t.Log(err)
		}
	}
}

// appBackends counts the backends of the lab's app role.
func appBackends(t *testing.T, m *sessions.Manager, sb engine.Sandbox) int {
	t.Helper()
	var n int
	if err := m.Admin().QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2",
		sb.Database, sb.AppRole).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitState waits (up to 20 s) until the lab's state satisfies ok, woken by
// the tracker's changes rather than a fixed sleep.
func waitState(t *testing.T, l *sessions.Lab, what string, ok func(engine.State) bool) engine.State {
	t.Helper()
	changes, cancel := l.Tracker().Subscribe()
	defer cancel()
	timeout := time.After(20 * time.Second)
	for {
		if st := l.Tracker().Snapshot(); ok(st) {
			return st
		}
		select {
		case <-changes:
		case <-timeout:
			t.Fatalf("waiting for %s: state %+v", what, l.Tracker().Snapshot())
		}
	}
}

// TestIdleLabHoldsNoConnection checks that a finished run's pools are
// closed (no backend of the lab is left) while its last picture stays.
func TestIdleLabHoldsNoConnection(t *testing.T) {
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2})
	l := sessionstest.MustCreateLab(t, m, "owner")
	st := sessionstest.MustRun(t, l, "set-leak", "session-set", map[string]string{"pool": "3"})
	if len(st.Connections) != 3 || st.Leaks() != 1 {
		t.Fatalf("after the run: %d connections, %d leaks", len(st.Connections), st.Leaks())
	}
	if b, _, _ := leftovers(t, m, l.Sandbox); b != 0 {
		t.Errorf("an idle lab holds %d connections", b)
	}
	if u := m.Usage(); u.RunConns != 0 {
		t.Errorf("usage after the run: %+v", u)
	}
}

// TestClosingALabLeavesNothing runs a scenario, closes the lab during a
// second run and checks: no goroutine of ours, no backend, no database, no
// role.
func TestClosingALabLeavesNothing(t *testing.T) {
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2, Spares: -1})
	ignore := goleak.IgnoreCurrent()
	l := sessionstest.MustCreateLab(t, m, "owner")
	sessionstest.MustRun(t, l, "set-leak", "session-set", map[string]string{"pool": "3"})
	if err := l.Start(sessions.RunRequest{Scenario: "set-leak", Variant: "tx-local", Speed: engine.Speed{Factor: 0.25}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, l, "a connection in use", func(st engine.State) bool { return st.Pool.Total > 0 })
	// A cancelled context must not stop the drop.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.CloseLab(ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Done():
	default:
		t.Error("lab not marked done")
	}
	if b, d, r := leftovers(t, m, l.Sandbox); b != 0 || d != 0 || r != 0 {
		t.Errorf("after close: %d backends, %d databases, %d roles", b, d, r)
	}
	goleak.VerifyNone(t, ignore)
}

// TestResetDuringARunCancelsIt checks a reset cancels a slow run cleanly,
// says so, leaves no app backend behind and the lab runs again.
func TestResetDuringARunCancelsIt(t *testing.T) {
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2})
	l := sessionstest.MustCreateLab(t, m, "owner")
	if err := l.Start(sessions.RunRequest{Scenario: "set-leak", Variant: "session-set", Speed: engine.Speed{Factor: 0.25}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, l, "a connection in use", func(st engine.State) bool { return st.Pool.Acquired > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if st := l.Tracker().Snapshot(); st.Status != engine.StatusIdle || !strings.Contains(st.Narration, "cancelled by a reset") {
		t.Errorf("after reset: %s %q", st.Status, st.Narration)
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
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2, TTL: time.Second})
	l := sessionstest.MustCreateLab(t, m, "owner")
	waitClosed(t, m, l)
}

// waitClosed waits (up to 15 s) until the manager has dropped l, then
// checks it left nothing.
func waitClosed(t *testing.T, m *sessions.Manager, l *sessions.Lab) {
	t.Helper()
	select {
	case <-l.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("lab did not expire")
	}
	if _, err := m.Get(l.ID); rlslab.ErrorCode(err) != rlslab.ENOTFOUND {
		t.Errorf("expired lab still found: %v", err)
	}
	if b, d, r := leftovers(t, m, l.Sandbox); b+d+r != 0 {
		t.Errorf("expired lab left %d backends, %d databases, %d roles", b, d, r)
	}
}

// TestSteppedRunExpires leaves a run in single-step mode holding a
// connection: it is idle time, so the lab expires and its run stops.
func TestSteppedRunExpires(t *testing.T) {
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2, TTL: time.Second})
	l := sessionstest.MustCreateLab(t, m, "owner")
	if err := l.Start(sessions.RunRequest{Scenario: "set-leak", Variant: "session-set", Speed: engine.Speed{Single: true}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, l, "the pool's first frame", func(st engine.State) bool { return st.Pool.Total > 0 })
	waitClosed(t, m, l)
	if l.Running() {
		t.Error("the run still goes after expiry")
	}
}

// TestLifetimeCapsActiveLabs keeps touching a lab: it still closes at the
// absolute lifetime.
func TestLifetimeCapsActiveLabs(t *testing.T) {
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2, TTL: time.Second, MaxLifetime: 2 * time.Second})
	l := sessionstest.MustCreateLab(t, m, "owner")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				l.Touch()
			}
		}
	}()
	waitClosed(t, m, l)
	if age := time.Since(l.Created()); age < 2*time.Second {
		t.Errorf("closed after %s, before its lifetime", age)
	}
}

// TestOneLabPerBrowser sends ten concurrent creates with one owner: one lab.
func TestOneLabPerBrowser(t *testing.T) {
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 20, Spares: 1})
	var wg sync.WaitGroup
	labs := make([]*sessions.Lab, 10)
	for i := range labs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := m.Create(context.Background(), "same-browser")
			if err != nil {
				t.Error(err)
			}
			labs[i] = l
		}()
	}
	wg.Wait()
	for _, l := range labs {
		if l != labs[0] {
			t.Fatalf("two labs for one browser: %v and %v", labs[0].ID, l.ID)
		}
	}
	if n := len(m.Labs()); n != 1 {
		t.Errorf("%d labs", n)
	}
}

// TestSparesMakeLabsReadyAtOnce takes more labs than there are spares, and
// checks the spares are refilled.
func TestSparesMakeLabsReadyAtOnce(t *testing.T) {
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 10, Spares: 3})
	deadline := time.Now().Add(20 * time.Second)
	for m.Usage().Spares < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("spares not built: %+v", m.Usage())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := range 5 {
		sessionstest.MustCreateLab(t, m, fmt.Sprintf("owner-%d", i))
	}
	for m.Usage().Spares < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("spares not refilled: %+v", m.Usage())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStartupSweep leaves the labs of a "crashed" rlslab (its instance lock
// gone), a live rlslab's lab and a user's own lab_ database: a new start
// drops only the first.
func TestStartupSweep(t *testing.T) {
	t.Parallel()
	srv := pgenvtest.MustServer(t)
	ctx := context.Background()
	crashed := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2, Spares: -1})
	gone := sessionstest.MustCreateLab(t, crashed, "a")
	live := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2, Spares: -1})
	kept := sessionstest.MustCreateLab(t, live, "b")
	if _, err := live.Admin().Exec(ctx, `CREATE DATABASE lab_0badc0de`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = live.Admin().Exec(context.Background(), `DROP DATABASE IF EXISTS lab_0badc0de`) })
	// The crashed instance's lock goes as its connection dies.
	if _, err := live.Admin().Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND objsubid = 2`,
		int64(uint32(crashed.Instance()))); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var held bool
		_ = live.Admin().QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND objsubid = 2)`,
			int64(uint32(crashed.Instance()))).Scan(&held)
		if !held || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	fresh, err := sessions.Open(ctx, sessions.Config{AdminURL: srv.URL, Catalog: scenarios.DefaultCatalog(), Spares: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close(ctx)
	if b, d, r := countLeftovers(t, live, gone.Sandbox); d != 0 || r != 0 {
		t.Errorf("the crashed rlslab's lab is still there: %d backends, %d databases, %d roles", b, d, r)
	}
	if _, d, r := countLeftovers(t, live, kept.Sandbox); d != 1 || r != 2 {
		t.Errorf("the live rlslab's lab was touched: %d databases, %d roles", d, r)
	}
	var mine int
	_ = live.Admin().QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = 'lab_0badc0de'`).Scan(&mine)
	if mine != 1 {
		t.Error("the sweep dropped a lab_ database rlslab did not create")
	}
}

// TestResetRacingRun starts and resets one lab from four goroutines at
// once, forty times: every accepted run ends exactly once (done, failed or
// cancelled by a reset), and the state never says idle while a run goes.
func TestResetRacingRun(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	ended := map[string]int{}
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2, Subscribers: []sessions.RunSubscriber{sessions.RunEndFunc(func(r sessions.RunRecord) {
		mu.Lock()
		ended[r.Lab.ID]++
		mu.Unlock()
	})}})
	l := sessionstest.MustCreateLab(t, m, "owner")
	accepted := 0
	for range 16 {
		var wg sync.WaitGroup
		var amu sync.Mutex
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if i%2 == 0 {
					if l.Start(sessions.RunRequest{Scenario: "set-leak", Variant: "tx-local", Speed: engine.Speed{Max: true}}) == nil {
						amu.Lock()
						accepted++
						amu.Unlock()
					}
					return
				}
				if err := l.Reset(context.Background()); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if st := l.Tracker().Snapshot(); l.Running() && st.Status == engine.StatusIdle {
			t.Fatalf("state idle while a run goes")
		}
	}
	_ = l.Wait(context.Background())
	mu.Lock()
	defer mu.Unlock()
	if ended[l.ID] != accepted {
		t.Errorf("%d runs accepted, %d ended", accepted, ended[l.ID])
	}
}

// TestStepModeResetOverTheCatalog runs every variant of every scenario in
// single-step mode, steps until a connection is held, and resets: the reset
// returns within 5 s, the run has returned, and the app role has no backend
// left.
func TestStepModeResetOverTheCatalog(t *testing.T) {
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 4, Spares: -1})
	// Four labs, each reset and handed to the next variant.
	labs := make(chan *sessions.Lab, 4)
	for range cap(labs) {
		labs <- sessionstest.MustCreateLab(t, m, "stepper")
	}
	for _, sc := range m.Catalog().All() {
		for _, v := range sc.Variants {
			t.Run(sc.ID+"/"+v.Name, func(t *testing.T) {
				t.Parallel()
				l := <-labs
				defer func() { labs <- l }()
				if err := l.Start(sessions.RunRequest{Scenario: sc.ID, Variant: v.Name, Speed: engine.Speed{Single: true}}); err != nil {
					t.Fatal(err)
				}
				changes, cancel := l.Tracker().Subscribe()
				defer cancel()
				held := false
				for range 200 {
					st := l.Tracker().Snapshot()
					if st.Pool.Acquired > 0 || appBackends(t, m, l.Sandbox) > 0 && st.Status == engine.StatusRunning {
						held = true
						break
					}
					if !l.Running() {
						break
					}
					_ = l.Step()
					select {
					case <-changes:
					case <-time.After(2 * time.Second):
					}
				}
				if !held {
					t.Logf("no connection held before the run ended")
				}
				start := time.Now()
				if err := l.Reset(context.Background()); err != nil {
					t.Fatal(err)
				}
				// A generous bound (2.2 s
				// seen at load 50): a reset that waits for a paused
				// run's next step would hang for good.
				if took := time.Since(start); took > 5*time.Second {
					t.Errorf("reset took %s", took)
				}
				if l.Running() {
					t.Error("the run goes on after the reset")
				}
				if n := appBackends(t, m, l.Sandbox); n != 0 {
					t.Errorf("%d backends of the app role after the reset", n)
				}
			})
		}
	}
}

// BenchmarkCreateLab measures creating a lab (database, roles, schema,
// seed) without spares and closing it again, one after the other.
func BenchmarkCreateLab(b *testing.B) {
	m := sessionstest.MustOpenManager(b, sessions.Config{MaxLabs: 2, Spares: -1})
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

// TestEveryRunIsRecorded checks a finished run hands over its frames, from
// the first running frame to the final one, and a run cancelled by a reset
// is reported as such.
func TestEveryRunIsRecorded(t *testing.T) {
	t.Parallel()
	records := make(chan sessions.RunRecord, 4)
	held := make(chan int, 4) // the run connections held as each run's end is published
	var m *sessions.Manager
	m = sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2, Subscribers: []sessions.RunSubscriber{sessions.RunEndFunc(func(r sessions.RunRecord) {
		held <- m.Usage().RunConns
		records <- r
	})}})
	l := sessionstest.MustCreateLab(t, m, "owner")
	sessionstest.MustRun(t, l, "set-leak", "session-set", nil)
	r := <-records
	// The only lab's run is told of once its connections are back in the
	// budget.
	if n := <-held; n != 0 {
		t.Errorf("the run's end was published while runs held %d connections of the budget", n)
	}
	if r.Scenario != "set-leak" || r.Variant != "session-set" || r.Final.Status != engine.StatusDone || len(r.Frames) < 5 {
		t.Fatalf("record: %s/%s %s, %d frames", r.Scenario, r.Variant, r.Final.Status, len(r.Frames))
	}
	var first, last engine.State
	if err := json.Unmarshal(frameJSON(t, r.Frames[0]), &first); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(frameJSON(t, r.Frames[len(r.Frames)-1]), &last); err != nil {
		t.Fatal(err)
	}
	if first.Status != engine.StatusRunning || last.Status != engine.StatusDone || last.Leaks() != 1 {
		t.Errorf("frames go from %s to %s with %d leaks", first.Status, last.Status, last.Leaks())
	}
	for i := 1; i < len(r.Frames); i++ {
		if r.Frames[i].AtMS < r.Frames[i-1].AtMS {
			t.Fatalf("frame %d is earlier than the one before", i)
		}
	}
	if err := l.Start(sessions.RunRequest{Scenario: "set-leak", Variant: "tx-local", Speed: engine.Speed{Single: true}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, l, "the pool's first frame", func(st engine.State) bool { return st.Pool.Total > 0 })
	if err := l.Reset(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := <-records; r.Final.Status != engine.StatusFailed || !strings.Contains(r.Final.Error, "reset") {
		t.Errorf("cancelled run recorded as %s %q", r.Final.Status, r.Final.Error)
	}
}
