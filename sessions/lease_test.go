package sessions_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rlslab/rlslab/internal/pgenv"
	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/store"
)

// openInstance opens an rlslab instance on srv as serve wires it: an admin
// pool, rlslab's tables on it, and a lab manager that shares the server's
// budget through them.
func openInstance(t *testing.T, srv *pgenv.Server, name string, spares int) *sessions.Manager {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := sessions.OpenAdmin(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	if _, err := store.Open(ctx, admin, nil); err != nil {
		t.Fatal(err)
	}
	m, err := sessions.Open(ctx, sessions.Config{AdminURL: srv.URL, Admin: admin, Catalog: scenarios.DefaultCatalog(), Spares: spares,
		Shared: admin, Instance: name})
	if err != nil {
		t.Fatalf("instance %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		m.Close(ctx)
	})
	return m
}

// TestTwoInstancesShareOneServersBudget opens two rlslab instances on one
// stock PostgreSQL (max_connections = 100) and starts on each at once as
// many crowd runs as its own budget for runs holds. Together they stay
// within the one budget: the server's client backends, sampled all along,
// never exceed max_connections − reserved, the server logs no "too many
// clients", some runs wait in the queue and say so, and every run
// finishes. (Each instance alone would admit all of its runs: twice that
// is what the server refused before.)
func TestTwoInstancesShareOneServersBudget(t *testing.T) {
	t.Parallel()
	srv := pgenvtest.MustStockServer(t)
	if srv.LogPath() == "" {
		t.Skip("the server's log is not readable here (not a local cluster)")
	}
	ctx := context.Background()
	a := openInstance(t, srv, "a", 3)
	b := openInstance(t, srv, "b", 3)
	c := a.Capacity()
	limit := c.MaxConnections - c.Reserved

	stopSampler := sampleBackends(t, srv.URL, `backend_type = 'client backend'`)

	// As many runs on each instance as its budget for runs holds at once:
	// alone, an instance would admit all of them; together they declare
	// more than the server allows, so runs must wait for the other
	// instance's.
	var perInstance, need int
	runs, queued := crowdRuns(t, []*sessions.Manager{a, b}, func(n int) int {
		need, perInstance = n, c.Runs/n
		return perInstance
	}, 4*time.Minute)
	if 2*perInstance*need <= limit {
		t.Fatalf("%d runs of %d connections fit the server's %d: the test shows nothing", 2*perInstance, need, limit)
	}
	peak := stopSampler()
	log, err := os.ReadFile(srv.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	refused := strings.Count(string(log), "too many clients")
	t.Logf("two instances, %d crowd runs each (%d connections each): peak client backends %d, max_connections %d − %d reserved = %d, budget %d; %d of %d runs waited; %d refused",
		perInstance, need, peak, c.MaxConnections, c.Reserved, limit, c.Budget, queued, runs, refused)
	if peak > limit {
		t.Errorf("the server had %d client backends, over max_connections − reserved = %d", peak, limit)
	}
	if refused > 0 {
		t.Errorf("the server logged %q %d times", "too many clients", refused)
	}
	if queued == 0 {
		t.Errorf("no run waited: %d crowds of %d fit one budget of %d?", runs, need, c.Budget)
	}
	for _, m := range []*sessions.Manager{a, b} {
		if u := m.Usage(); u.RunConns != 0 || u.Queued != 0 {
			t.Errorf("instance %s after the runs: %+v", m.Name(), u)
		}
	}

	// Idle, each instance keeps renewing its registration, and its lease
	// is back to its own connections.
	sampler, err := pgx.Connect(ctx, srv.URL+"&application_name=sampler")
	if err != nil {
		t.Fatal(err)
	}
	defer sampler.Close(ctx)
	var first time.Time
	if err := sampler.QueryRow(ctx, `SELECT expires_at FROM rlslab.instances WHERE name = 'a'`).Scan(&first); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		var at time.Time
		var conns int
		if err := sampler.QueryRow(ctx, `SELECT i.expires_at, l.conns FROM rlslab.instances i JOIN rlslab.leases l ON l.instance = i.name WHERE i.name = 'a'`).Scan(&at, &conns); err != nil {
			t.Fatal(err)
		}
		if at.After(first) && conns == sessions.AdminConns+1+sessions.MaintConns {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("an idle instance's heartbeat: expires %s (was %s), lease %d", at, first, conns)
		}
		time.Sleep(wait)
	}
}

// TestQueueCountsRunsWaitingAtOtherInstances: two instances share one
// stock server. Stepped crowd runs on the first hold nearly all of the
// connections left for runs, and two more crowd runs wait there; a crowd
// run then started on the second instance waits too, and its queue
// message counts the two runs that wait at the first instance since
// before it (its own instance has no run ahead of it).
func TestQueueCountsRunsWaitingAtOtherInstances(t *testing.T) {
	t.Parallel()
	srv := pgenvtest.MustStockServer(t)
	ctx := context.Background()
	a := openInstance(t, srv, "a", 0)
	b := openInstance(t, srv, "b", 0)

	create := func(m *sessions.Manager, owner string) *sessions.Lab {
		t.Helper()
		l, err := m.Create(ctx, owner)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	first := create(a, "holder-0")
	sc, err := a.Catalog().Lookup(crowdScenario)
	if err != nil {
		t.Fatal(err)
	}
	users, tenants := 2*first.Sandbox.ConnLimit, len(first.Sandbox.Tenants)
	params := map[string]string{"users": strconv.Itoa(users), "tenants": strconv.Itoa(tenants)}
	need := sc.Need(crowdVariant, engine.Params{"users": users, "tenants": tenants}, first.Sandbox)
	own := sessions.AdminConns + 1 + sessions.MaintConns
	holders := (a.Capacity().Budget - 2*own) / need
	if holders < 1 {
		t.Fatalf("the budget %d leaves no room for a crowd of %d", a.Capacity().Budget, need)
	}
	start := func(l *sessions.Lab, speed engine.Speed) {
		t.Helper()
		if err := l.Start(sessions.RunRequest{Scenario: crowdScenario, Variant: crowdVariant, Speed: speed, Params: params}); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for wait := 10 * time.Millisecond; !ok(); wait = min(2*wait, time.Second) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within a minute", what)
			}
			time.Sleep(wait)
		}
	}

	// Stepped runs hold their connections until they are stepped on.
	for i := range holders {
		l := first
		if i > 0 {
			l = create(a, "holder-"+strconv.Itoa(i))
		}
		start(l, engine.Speed{Single: true})
	}
	waitUntil("the stepped runs to be admitted", func() bool { return a.Usage().RunConns >= holders*need })

	queued := func(l *sessions.Lab) *engine.Queue {
		st := l.Tracker().Snapshot()
		if st.Status != engine.StatusQueued {
			return nil
		}
		return st.Queue
	}
	var waitingAtA []*sessions.Lab
	for i := range 2 {
		l := create(a, "waiting-"+strconv.Itoa(i))
		start(l, engine.Speed{Max: true})
		waitingAtA = append(waitingAtA, l)
	}
	for _, l := range waitingAtA {
		waitUntil("a run on the first instance to wait", func() bool { return queued(l) != nil })
	}

	late := create(b, "late")
	start(late, engine.Speed{Max: true})
	var q *engine.Queue
	waitUntil("the second instance's run to count the runs waiting at the first", func() bool {
		q = queued(late)
		return q != nil && q.Ahead >= len(waitingAtA)
	})
	if q.Ahead != len(waitingAtA) {
		t.Errorf("the second instance's run has %d runs ahead, want the %d waiting at the first", q.Ahead, len(waitingAtA))
	}
	t.Logf("%d stepped crowds of %d hold the first instance's share; its 2 waiting runs counted ahead of the second's: %+v", holders, need, *q)
}
