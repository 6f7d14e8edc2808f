package sessions_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// TestFreePlayPoolClosesWhenIdle checks that the free-play pool holds its
// connections in the budget while open, gives them back once idle, and
// leaves its last picture on the live view.
func TestFreePlayPoolClosesWhenIdle(t *testing.T) {
	t.Parallel()
	kept := make(chan sessions.RunRecord, 4)
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2, FreePlayIdle: 300 * time.Millisecond,
		Subscribers: []sessions.RunSubscriber{sessions.RunEndFunc(func(r sessions.RunRecord) { kept <- r })}})
	l := sessionstest.MustCreateLab(t, m, "owner")
	ctx := context.Background()
	res, err := l.SQL(ctx, sessions.SQLRequest{Tenant: "Acme", PoolSize: 3})
	if err != nil || res.Error != "" || res.RowCount != 3 {
		t.Fatalf("first call: %+v, %v", res, err)
	}
	if u := m.Usage(); u.RunConns != 3 {
		t.Errorf("open pool of 3: %d connections of the budget in use", u.RunConns)
	}
	if n := appBackends(t, m, l.Sandbox); n != 3 {
		t.Errorf("open pool of 3: %d backends of the app role", n)
	}
	st := waitState(t, l, "the idle pool to close", func(s engine.State) bool { return s.Status == engine.StatusDone })
	if u := m.Usage(); u.RunConns != 0 {
		t.Errorf("closed pool: %d connections of the budget in use", u.RunConns)
	}
	sessionstest.WaitNoBackends(t, m, l)
	// The closed pool is kept like a run: its frames, its request, and the
	// timeline's readings of the backend the request used.
	select {
	case r := <-kept:
		if r.Scenario != sessions.FreePlayScenario || len(r.Frames) < 2 || len(r.Final.Requests) != 1 {
			t.Errorf("free play's recording: scenario %q, %d frames, %d requests", r.Scenario, len(r.Frames), len(r.Final.Requests))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the closed free-play pool was not handed to the subscribers")
	}
	read := 0
	if st.Timeline != nil {
		for _, ev := range st.Timeline.Events {
			if ev.PID == res.PID && ev.Read {
				read++
			}
		}
	}
	if read < 2 {
		t.Errorf("timeline: %d readings of backend %d, want it read as the request took it and as it came back", read, res.PID)
	}
	if len(st.Connections) != 3 || len(st.Requests) != 1 {
		t.Fatalf("last picture: %d connections, %d requests", len(st.Connections), len(st.Requests))
	}
	for _, c := range st.Connections {
		if c.State != engine.ConnClosed || c.PID == 0 {
			t.Errorf("connection after close: %+v", c)
		}
		if c.PID == res.PID && (c.Tenant == nil || *c.Tenant != "1") {
			t.Errorf("backend %d's last picture lost Acme's setting: %+v", c.PID, c)
		}
	}
	// The next call opens a new pool; the request log goes on.
	res2, err := l.SQL(ctx, sessions.SQLRequest{SQL: "SELECT current_setting('app.current_tenant', true)"})
	if err != nil || res2.PID == 0 || res2.PID == res.PID || res2.Request != 2 || res2.Rows[0][0] != nil {
		t.Fatalf("after the close: %+v, %v", res2, err)
	}
	// A scenario run closes free play first and runs as usual.
	st = sessionstest.MustRun(t, l, "set-leak", "tx-local", nil)
	if st.Status != engine.StatusDone || st.Leaks() != 0 || st.Scenario != "set-leak" {
		t.Errorf("run after free play: %s, %d leaks, scenario %s", st.Status, st.Leaks(), st.Scenario)
	}
	if u := m.Usage(); u.RunConns != 0 {
		t.Errorf("after the run: %d connections of the budget in use", u.RunConns)
	}
}

// TestFreePlayWaitsForTheBudget checks that a free-play pool is admitted
// against the connection budget like a run: it does not open while the
// budget is taken, and opens once it is given back.
func TestFreePlayWaitsForTheBudget(t *testing.T) {
	t.Parallel()
	// 11 of rlslab's own connections and 5 for runs: one pool of 4 fits,
	// two do not.
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2, ConnLimit: 4, Budget: sessions.AdminConns + 1 + sessions.MaintConns + 5})
	a := sessionstest.MustCreateLab(t, m, "a")
	b := sessionstest.MustCreateLab(t, m, "b")
	ctx := context.Background()
	if _, err := a.SQL(ctx, sessions.SQLRequest{PoolSize: 4}); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := b.SQL(short, sessions.SQLRequest{PoolSize: 4}); rlslab.ErrorCode(err) != rlslab.EUNAVAILABLE {
		t.Fatalf("a second pool of 4 in a budget of 5: %v, want EUNAVAILABLE", err)
	}
	if n := appBackends(t, m, b.Sandbox); n != 0 {
		t.Errorf("the refused pool opened %d connections", n)
	}
	if err := a.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := b.SQL(ctx, sessions.SQLRequest{PoolSize: 4})
	if err != nil || res.PID == 0 {
		t.Fatalf("after the first pool closed: %+v, %v", res, err)
	}
	if u := m.Usage(); u.RunConns != 4 {
		t.Errorf("one pool of 4: %d connections of the budget in use", u.RunConns)
	}
}

// TestFreePlayCallsAtOnce checks that calls sent at once share the pool as
// a pool does: each on a connection of its own while one is free, the rest
// waiting for one to come back.
func TestFreePlayCallsAtOnce(t *testing.T) {
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2})
	l := sessionstest.MustCreateLab(t, m, "owner")
	ctx := context.Background()
	if _, err := l.SQL(ctx, sessions.SQLRequest{PoolSize: 2}); err != nil {
		t.Fatal(err)
	}
	results := make([]sessions.SQLResult, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			results[i], errs[i] = l.SQL(ctx, sessions.SQLRequest{SQL: "SELECT pg_sleep(0.3), pg_backend_pid()"})
		})
	}
	wg.Wait()
	pids := map[uint32]int{}
	for i, r := range results {
		if errs[i] != nil || r.Error != "" {
			t.Fatalf("call %d: %+v, %v", i, r, errs[i])
		}
		pids[r.PID]++
	}
	if len(pids) != 2 {
		t.Errorf("three calls at once on a pool of 2 ran on backends %v, want both", pids)
	}
	if n := appBackends(t, m, l.Sandbox); n != 2 {
		t.Errorf("%d backends of the app role, want the pool's 2", n)
	}
}

// TestFreePlayPatterns checks each pattern on the pool: split's scope and
// query land on two connections and the scope leaks to the next request;
// batch-local sees its own rows and leaves ”; local-role makes the
// tenant roles on its first call, runs as the tenant's role inside its
// transaction and leaves none open; the roles go when the pool closes.
func TestFreePlayPatterns(t *testing.T) {
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2})
	l := sessionstest.MustCreateLab(t, m, "owner")
	ctx := context.Background()
	split, err := l.SQL(ctx, sessions.SQLRequest{Tenant: "Acme", Pattern: sessions.PatternSplit, PoolSize: 2})
	if err != nil || split.RowCount != 0 || split.TenantBefore != nil || split.Leak {
		t.Fatalf("split as Acme on a fresh pool of 2: %+v, %v; want the query on the other, never-set connection: 0 rows", split, err)
	}
	next, err := l.SQL(ctx, sessions.SQLRequest{Tenant: "Globex", Pattern: "forgot"})
	if err != nil || !next.Leak || next.PID == split.PID || next.TenantBefore == nil || *next.TenantBefore != "1" {
		t.Fatalf("Globex forgetting after the split: %+v, %v; want Acme's rows from the split's scope connection", next, err)
	}
	batch, err := l.SQL(ctx, sessions.SQLRequest{Tenant: "Initech", Pattern: "batch-local", Connection: 1})
	if err != nil || batch.Error != "" || batch.RowCount != 3 || batch.Leak || batch.TenantAfter == nil || *batch.TenantAfter != *batch.TenantBefore {
		t.Fatalf("batch-local as Initech: %+v, %v; want its 3 rows and the setting as it was", batch, err)
	}
	acmeRole := "lab_" + l.ID + "_t1"
	role, err := l.SQL(ctx, sessions.SQLRequest{Tenant: "Acme", Pattern: sessions.PatternLocalRole, Connection: 2, SQL: "SELECT current_user, count(*) FILTER (WHERE tenant_id = 1), count(*) FROM invoices"})
	if err != nil || role.Error != "" || role.PID == 0 || len(role.Rows) != 1 || *role.Rows[0][0] != acmeRole || *role.Rows[0][1] != *role.Rows[0][2] || *role.Rows[0][2] == "0" {
		t.Fatalf("local-role as Acme: %+v, %v; want the query to run as %s and see only Acme's rows", role, err, acmeRole)
	}
	if !strings.Contains(role.Notice, acmeRole) {
		t.Errorf("the first local-role call does not say it made the tenant roles: %q", role.Notice)
	}
	after, err := l.SQL(ctx, sessions.SQLRequest{Connection: 2, SQL: "SELECT now() = statement_timestamp(), current_user"})
	if err != nil || after.Error != "" || after.PID != role.PID || len(after.Rows) != 1 || *after.Rows[0][0] != "t" || *after.Rows[0][1] != l.Sandbox.AppRole {
		t.Fatalf("after local-role: %+v, %v; want the same backend, outside any transaction, as the app role again", after, err)
	}
	if _, err := l.SQL(ctx, sessions.SQLRequest{Pattern: "session-set"}); rlslab.ErrorCode(err) != rlslab.EINVALID {
		t.Errorf("session-set without a tenant: %v, want EINVALID", err)
	}
	if _, err := l.SQL(ctx, sessions.SQLRequest{Tenant: "Umbrella"}); rlslab.ErrorCode(err) != rlslab.EINVALID {
		t.Errorf("an unknown tenant: %v, want EINVALID", err)
	}
	if err := l.Reset(ctx); err != nil { // closes the free-play pool
		t.Fatal(err)
	}
	var left int
	if err := m.Admin().QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", acmeRole).Scan(&left); err != nil || left != 0 {
		t.Errorf("after the pool closed, %d roles named %s (%v); want them dropped", left, acmeRole, err)
	}
}

// TestFreePlayHugeRowEndsOnlyItsConnection checks the size limit of one
// row: a row over the protocol message limit ends that connection (not
// rlslab's memory), and the next call opens another.
func TestFreePlayHugeRowEndsOnlyItsConnection(t *testing.T) {
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2})
	l := sessionstest.MustCreateLab(t, m, "owner")
	ctx := context.Background()
	huge, err := l.SQL(ctx, sessions.SQLRequest{Connection: 1, SQL: "SELECT repeat('x', 9000000)"})
	if err != nil || huge.Error == "" || !strings.Contains(huge.Notice, "lost") {
		t.Fatalf("a 9 MB row: %+v, %v; want an error and the connection lost", huge, err)
	}
	big, err := l.SQL(ctx, sessions.SQLRequest{Connection: 1, SQL: "SELECT repeat('y', 600000)"})
	if err != nil || big.Error != "" || big.PID == huge.PID || len(big.Rows) != 1 || len(*big.Rows[0][0]) > 600 {
		t.Fatalf("the next call: %+v, %v; want a new backend and the value cut short", big, err)
	}
}

// TestFreePlayChangesAreUndoneBeforeARun checks that rows a learner deletes
// in free play are back before the next lesson run: the run shows the leak
// its lesson promises, not "failed closed" over an empty table, while free
// play itself keeps seeing its own change until then.
func TestFreePlayChangesAreUndoneBeforeARun(t *testing.T) {
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 1})
	l := sessionstest.MustCreateLab(t, m, "owner")
	ctx := context.Background()
	read, err := l.SQL(ctx, sessions.SQLRequest{Tenant: "Acme", SQL: "SELECT count(*) FROM invoices"})
	if err != nil || read.Error != "" || strings.Contains(read.Notice, sessions.RowsPutBackNotice) {
		t.Fatalf("a read: %+v, %v; want no word of changed rows", read, err)
	}
	del, err := l.SQL(ctx, sessions.SQLRequest{Tenant: "Acme", SQL: "DELETE FROM invoices"})
	if err != nil || del.Error != "" || !strings.Contains(del.Notice, sessions.RowsPutBackNotice) {
		t.Fatalf("DELETE as Acme: %+v, %v; want it done, saying the next run puts the rows back", del, err)
	}
	left, err := l.SQL(ctx, sessions.SQLRequest{Tenant: "Acme", SQL: "SELECT count(*) FROM invoices"})
	if err != nil || left.Error != "" || len(left.Rows) != 1 || left.Rows[0][0] == nil || *left.Rows[0][0] != "0" {
		t.Fatalf("Acme's invoices after the DELETE, in free play: %+v, %v; want 0", left, err)
	}
	st := sessionstest.MustRun(t, l, "set-leak", "session-set", nil)
	if st.Status != engine.StatusDone || st.Leaks() == 0 {
		t.Fatalf("set-leak session-set after Acme's invoices were deleted: %s, %d leaks; want the lesson's leak", st.Status, st.Leaks())
	}
	for _, r := range st.Requests {
		if r.Rows == 0 {
			t.Errorf("request #%d got no rows: the lab's rows were not put back", r.Seq)
		}
	}
	back, err := l.SQL(ctx, sessions.SQLRequest{Tenant: "Acme", SQL: "SELECT count(*) FROM invoices"})
	if err != nil || back.Error != "" || len(back.Rows) != 1 || back.Rows[0][0] == nil || *back.Rows[0][0] != "3" {
		t.Fatalf("Acme's invoices after the run: %+v, %v; want the seeded 3", back, err)
	}
}
