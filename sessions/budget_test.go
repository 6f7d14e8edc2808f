package sessions_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// ownBackends picks rlslab's backends out of pg_stat_activity: on lab
// databases, or named by rlslab (admin pool, instance lock).
const ownBackends = `backend_type = 'client backend' AND (datname LIKE 'lab\_%' OR application_name LIKE 'rlslab%')`

// sampleBackends counts the backends of the server at url that match
// where (a condition on pg_stat_activity) every millisecond, in a loop
// inside the server on a connection of its own (application_name sampler,
// a client backend itself), and reports each new peak to the test as a
// notice. It returns once the loop runs; stop ends the loop and returns
// the peak. (A loop in the test, a query every 2 ms, took a good part of a
// core under the race detector and looked half as often.)
func sampleBackends(t *testing.T, url, where string) (stop func() int) {
	t.Helper()
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(url + "&application_name=sampler")
	if err != nil {
		t.Fatal(err)
	}
	var peak atomic.Int64
	peak.Store(-1)
	running := make(chan struct{})
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		if v, err := strconv.ParseInt(n.Message, 10, 64); err == nil {
			if peak.Swap(max(peak.Load(), v)) < 0 {
				close(running)
			}
		}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, `CREATE FUNCTION pg_temp.sample_backends() RETURNS void LANGUAGE plpgsql AS $$
		DECLARE peak int := -1; n int;
		BEGIN
			LOOP
				PERFORM pg_stat_clear_snapshot(); -- else the transaction sees its first snapshot
				SELECT count(*) INTO n FROM pg_stat_activity WHERE `+where+`;
				IF n > peak THEN
					peak := n;
					RAISE NOTICE '%', n;
				END IF;
				PERFORM pg_sleep(0.001);
			END LOOP;
		END $$`); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(sctx, `SELECT pg_temp.sample_backends()`)
		done <- err
	}()
	select {
	case <-running:
	case err := <-done:
		cancel()
		t.Fatalf("the sampler did not start: %v", err)
	}
	return func() int {
		select {
		case err := <-done:
			t.Errorf("the sampler stopped before the end: %v", err)
		default:
			cancel()
			<-done
		}
		return int(peak.Load())
	}
}

// crowdScenario and crowdVariant are the run the budget tests start in
// every lab: a crowd that declares more connections than its lab's app role
// may hold.
const crowdScenario, crowdVariant = "shared-pool", "conn-per-user"

// crowdRuns starts shared-pool's conn-per-user crowd at full speed in
// labs made on the managers and waits for every run to end. The crowd has
// twice the app role's CONNECTION LIMIT in users, all online at once, so
// each run fills the limit and is refused the rest, and only the lab's
// seeded tenants (no extra ones to add and remove). It makes one lab on
// managers[0] first, and from that lab's sandbox what one run declares
// (need), then perManager(need) labs on each manager in all, at once; the
// crowds start at once too. It fails the test unless every run finishes
// done, and returns how many runs waited in the queue and said so.
func crowdRuns(t *testing.T, managers []*sessions.Manager, perManager func(need int) int, timeout time.Duration) (runs, queued int) {
	t.Helper()
	ctx := context.Background()
	first, err := managers[0].Create(ctx, managers[0].Name()+"-participant-0")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := managers[0].Catalog().Lookup(crowdScenario)
	if err != nil {
		t.Fatal(err)
	}
	users, tenants := 2*first.Sandbox.ConnLimit, len(first.Sandbox.Tenants)
	params := map[string]string{"users": strconv.Itoa(users), "tenants": strconv.Itoa(tenants)}
	need := sc.Need(crowdVariant, engine.Params{"users": users, "tenants": tenants}, first.Sandbox)
	if need <= first.Sandbox.ConnLimit+1 {
		t.Fatalf("%s %s declares %d connections, no more than the role's limit + 1", crowdScenario, crowdVariant, need)
	}
	n := perManager(need)

	labs := []*sessions.Lab{first}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for k, m := range managers {
		for i := range n {
			if k == 0 && i == 0 {
				continue
			}
			wg.Go(func() {
				l, err := m.Create(ctx, fmt.Sprintf("%s-participant-%d", m.Name(), i))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				labs = append(labs, l)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	var queuedSeen sync.Map
	for _, l := range labs {
		changes, cancel := l.Tracker().Subscribe()
		go func() {
			defer cancel()
			for {
				select {
				case <-l.Done():
					return
				case <-changes:
				}
				if st := l.Tracker().Snapshot(); st.Status == engine.StatusQueued && st.Queue != nil && st.Queue.Need > 0 {
					queuedSeen.Store(l.ID, *st.Queue)
				}
			}
		}()
	}
	for _, l := range labs {
		if err := l.Start(sessions.RunRequest{Scenario: crowdScenario, Variant: crowdVariant, Speed: engine.Speed{Max: true}, Params: params}); err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, l := range labs {
		if err := l.Wait(wctx); err != nil {
			t.Errorf("lab %s: %v", l.ID, err)
		}
		if st := l.Tracker().Snapshot(); st.Status != engine.StatusDone {
			t.Errorf("lab %s: %s %s", l.ID, st.Status, st.Error)
		}
	}
	queuedSeen.Range(func(any, any) bool { queued++; return true })
	return len(labs), queued
}

// TestStockServerQueuesRunsWithinTheBudget starts a PostgreSQL with the
// stock max_connections = 100, opens rlslab on it with the default flags,
// and starts one crowd run more than the budget for runs holds at once
// (each declares more than a lab's whole allowance): some wait in the
// queue and say so, all finish, and rlslab's backends, sampled all along,
// never exceed the budget.
func TestStockServerQueuesRunsWithinTheBudget(t *testing.T) {
	t.Parallel()
	srv := pgenvtest.MustStockServer(t)
	ctx := context.Background()
	m, err := sessions.Open(ctx, sessions.Config{AdminURL: srv.URL, Catalog: scenarios.DefaultCatalog(), Spares: 2, Bouncers: nil})
	if err != nil {
		t.Fatalf("default flags on a stock server: %v", err)
	}
	defer m.Close(ctx)
	c := m.Capacity()
	if c.MaxConnections != 100 || c.Budget > 100-c.Reserved {
		t.Fatalf("capacity %+v", c)
	}
	t.Logf("capacity on a stock server: %+v", c)

	stopSampler := sampleBackends(t, srv.URL, ownBackends)
	// One run more than fit the budget for runs: at least one must wait.
	runs, queued := crowdRuns(t, []*sessions.Manager{m}, func(need int) int { return c.Runs/need + 1 }, 2*time.Minute)
	peak := stopSampler()
	t.Logf("peak backends %d, budget %d, max_connections %d; %d of %d runs waited in the queue", peak, c.Budget, c.MaxConnections, queued, runs)
	if peak > c.Budget {
		t.Errorf("rlslab held %d backends, over its budget of %d", peak, c.Budget)
	}
	if queued == 0 {
		t.Errorf("no run waited in the queue: %d runs fit a budget of %d for runs?", runs, c.Runs)
	}
	if u := m.Usage(); u.RunConns != 0 || u.Queued != 0 {
		t.Errorf("after the runs: %+v", u)
	}
}

// TestRunIsAdmittedForWhatItDeclares: a crowd run (shared-pool
// conn-per-user) declares more connections than the lab's app role may
// open (the crowd's dialers and a superuser connection); the budget counts
// all of them while it runs, and none once it has ended.
func TestRunIsAdmittedForWhatItDeclares(t *testing.T) {
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2})
	l := sessionstest.MustCreateLab(t, m, "crowd")
	sc, err := m.Catalog().Lookup("shared-pool")
	if err != nil {
		t.Fatal(err)
	}
	want := sc.Need("conn-per-user", nil, l.Sandbox)
	if want <= l.Sandbox.ConnLimit+1 {
		t.Fatalf("conn-per-user declares %d, no more than the role's limit + 1: the test shows nothing", want)
	}
	if err := l.Start(sessions.RunRequest{Scenario: "shared-pool", Variant: "conn-per-user", Speed: engine.Speed{Single: true}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for m.Usage().RunConns == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := m.Usage().RunConns; got != want {
		t.Errorf("a running conn-per-user run holds %d of the budget, want the %d it declares", got, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if got := m.Usage().RunConns; got != 0 {
		t.Errorf("after the run: %d connections still counted", got)
	}
}
