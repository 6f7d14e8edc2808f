package sessions_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// ownBackendsSQL counts rlslab's backends: on lab databases, or named by
// rlslab (admin pool, instance lock).
const ownBackendsSQL = `SELECT count(*) FROM pg_stat_activity
	WHERE backend_type = 'client backend' AND (datname LIKE 'lab\_%' OR application_name LIKE 'rlslab%')`

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

	sampler, err := pgx.Connect(ctx, srv.URL+"&application_name=sampler")
	if err != nil {
		t.Fatal(err)
	}
	defer sampler.Close(ctx)
	stop := make(chan struct{})
	peak := 0
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		// Every 2 ms: a backend lives at least as long as its run's
		// connection, and a busy loop would take a core from the runs.
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			var n int
			if err := sampler.QueryRow(ctx, ownBackendsSQL).Scan(&n); err == nil && n > peak {
				peak = n
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()

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
	close(stop)
	<-sampled
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
