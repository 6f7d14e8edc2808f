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

// TestStockServerQueuesRunsWithinTheBudget starts a PostgreSQL with the
// stock max_connections = 100, opens rlslab on it with the default flags,
// and starts ten crowd runs at once (each needs a lab's whole
// allowance): some wait in the queue and say so, all finish, and rlslab's
// backends, sampled all along, never exceed the budget.
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

	const runs = 10
	labs := make([]*sessions.Lab, runs)
	var wg sync.WaitGroup
	for i := range labs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := m.Create(ctx, fmt.Sprintf("participant-%d", i))
			if err != nil {
				t.Error(err)
				return
			}
			labs[i] = l
		}()
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
		if err := l.Start(sessions.RunRequest{Scenario: "shared-pool", Variant: "conn-per-user", Speed: engine.Speed{Max: true},
			Params: map[string]string{"users": "40"}}); err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, l := range labs {
		if err := l.Wait(wctx); err != nil {
			t.Errorf("lab %s: %v", l.ID, err)
		}
		if st := l.Tracker().Snapshot(); st.Status != engine.StatusDone {
			t.Errorf("lab %s: %s %s", l.ID, st.Status, st.Error)
		}
	}
	peak := stopSampler()
	queued := 0
	queuedSeen.Range(func(any, any) bool { queued++; return true })
	t.Logf("peak backends %d, budget %d, max_connections %d; %d of %d runs waited in the queue", peak, c.Budget, c.MaxConnections, queued, runs)
	if peak > c.Budget {
		t.Errorf("rlslab held %d backends, over its budget of %d", peak, c.Budget)
	}
	if need := m.Catalog(); need != nil && queued == 0 {
		t.Errorf("no run waited in the queue: %d runs of up to %d connections each fit a budget of %d for runs?", runs, sessions.DefaultConnLimit+1, c.Runs)
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
