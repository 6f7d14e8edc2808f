package scenarios_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// rorRun runs a variant with a small number of timed requests.
func rorRun(t *testing.T, lab *sessions.Lab, variant string) engine.State {
	t.Helper()
	st := mustRun(t, lab, "reset-on-release", variant, map[string]string{"iterations": "40"})
	if st.Status != engine.StatusDone {
		t.Fatalf("%s: status %q (%s)", variant, st.Status, st.Error)
	}
	return st
}

// rorRows returns the request rows of tenant with pattern, in order.
func rorRows(st engine.State, tenant, pattern string) []engine.RequestRow {
	var out []engine.RequestRow
	for _, r := range st.Requests {
		if r.Tenant != nil && *r.Tenant == tenant && r.Pattern == pattern {
			out = append(out, r)
		}
	}
	return out
}

// rorFirst returns tenant A's session-set request and tenant B's forgetful
// requests.
func rorFirst(t *testing.T, st engine.State) (engine.RequestRow, []engine.RequestRow) {
	t.Helper()
	a := rorRows(st, "1", engine.PatternSessionSet)
	f := rorRows(st, "2", engine.PatternForgot)
	if len(a) != 1 || len(f) == 0 {
		t.Fatalf("want one session-set request of tenant 1 and forgetful requests of tenant 2, got %+v", st.Requests)
	}
	if a[0].Rows != 3 || a[0].ForeignRows != 0 || a[0].Error != "" || a[0].PID == 0 {
		t.Fatalf("tenant A's own request: %+v", a[0])
	}
	return a[0], f
}

// rorCheckTimings checks the run timed the guard against no guard.
func rorCheckTimings(t *testing.T, st engine.State, variant string) {
	t.Helper()
	bare, ok := st.Timings["request, no guard"]
	if !ok || bare.N == 0 || bare.MedianUS <= 0 {
		t.Errorf("%s: no timing without guard: %+v", variant, st.Timings)
	}
	if variant == "none" {
		return
	}
	with, ok := st.Timings["request, "+variant]
	hook, hok := st.Timings[variant+" hook alone"]
	if !ok || !hok || with.N == 0 || with.MedianUS <= 0 || hook.MedianUS <= 0 {
		t.Errorf("%s: timings %+v", variant, st.Timings)
	}
	// One hook run per timed request: a reset on each release, a check on
	// each acquire.
	if hook.N != 40 {
		t.Errorf("%s: the hook ran %d times over 40 timed requests", variant, hook.N)
	}
	if r := st.Ratios[variant+" / no guard"]; r <= 0 {
		t.Errorf("%s: ratios %+v", variant, st.Ratios)
	}
}

func TestResetOnReleaseNoneLeaksOnEveryRun(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	for run := range 3 {
		st := rorRun(t, lab, "none")
		a, f := rorFirst(t, st)
		if len(f) != 1 {
			t.Fatalf("run %d: want one forgetful request, got %d", run, len(f))
		}
		if f[0].PID != a.PID || !f[0].Leak || f[0].ForeignRows != 3 || f[0].SeenTenant == nil || *f[0].SeenTenant != "1" {
			t.Errorf("run %d: want the forgetful request on backend %d to read tenant 1's 3 rows, got %+v", run, a.PID, f[0])
		}
		if st.Leaks() != 1 {
			t.Errorf("run %d: %d leaks", run, st.Leaks())
		}
		rorCheckTimings(t, st, "none")
	}
}

func TestResetOnReleaseResetsFailClosed(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	for _, variant := range []string{"reset-after-release", "reset-all", "reset-after-release", "reset-all"} {
		st := rorRun(t, lab, variant)
		a, f := rorFirst(t, st)
		if len(f) != 1 {
			t.Fatalf("%s: want one forgetful request, got %d", variant, len(f))
		}
		if f[0].PID != a.PID {
			t.Errorf("%s: the forgetful request ran on backend %d, want tenant A's backend %d", variant, f[0].PID, a.PID)
		}
		if f[0].Rows != 0 || f[0].Leak || f[0].Error != "" || f[0].SeenTenant == nil || *f[0].SeenTenant != "" {
			t.Errorf("%s: want 0 rows under setting '' for the forgetful request, got %+v", variant, f[0])
		}
		if st.Leaks() != 0 || st.Errors() != 0 {
			t.Errorf("%s: %d leaks, %d errors", variant, st.Leaks(), st.Errors())
		}
		for _, c := range st.Connections {
			if c.Tenant != nil && *c.Tenant != "" {
				t.Errorf("%s: connection %d (%s) still holds tenant %q after the run", variant, c.PID, c.Pool, *c.Tenant)
			}
		}
		rorCheckTimings(t, st, variant)
	}
}

func TestResetOnReleaseDiscardAllBreaksStatementCache(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	for run := range 2 {
		st := rorRun(t, lab, "discard-all")
		a, f := rorFirst(t, st)
		if len(f) != 2 {
			t.Fatalf("run %d: want the forgetful request and its retry, got %+v", run, f)
		}
		failed, retry := f[0], f[1]
		if failed.PID != a.PID || failed.SQLState != "26000" || failed.Leak ||
			!strings.Contains(failed.Error, `prepared statement "stmtcache_`) || !strings.Contains(failed.Error, "does not exist") {
			t.Errorf("run %d: want the forgetful request on backend %d to fail with 26000, got %+v", run, a.PID, failed)
		}
		if retry.PID != a.PID || retry.Error != "" || retry.Rows != 0 || retry.SeenTenant == nil || *retry.SeenTenant != "" {
			t.Errorf("run %d: want the retry on backend %d to work and see '' with 0 rows, got %+v", run, a.PID, retry)
		}
		if st.Leaks() != 0 || st.Errors() != 1 {
			t.Errorf("run %d: %d leaks, %d errors", run, st.Leaks(), st.Errors())
		}
		// Of the timed requests, every second one finds its statements
		// deallocated by the DISCARD ALL after the one before.
		var failedTimed float64 = -1
		for _, mt := range st.Metrics {
			if mt.Name == "timed requests that failed (discard-all)" {
				failedTimed = mt.Number
			}
		}
		if failedTimed != 20 {
			t.Errorf("run %d: want 20 of 40 timed requests to fail, got %v (metrics %+v)", run, failedTimed, st.Metrics)
		}
		rorCheckTimings(t, st, "discard-all")
	}
}

func TestResetOnReleaseCheckBeforeUseRefusesHeldConnection(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	for run := range 2 {
		st := rorRun(t, lab, "check-before-use")
		a, f := rorFirst(t, st)
		if len(f) != 1 {
			t.Fatalf("run %d: want one forgetful request, got %d", run, len(f))
		}
		if f[0].PID == a.PID || f[0].PID == 0 {
			t.Errorf("run %d: the forgetful request ran on backend %d; want a new backend, not tenant A's %d", run, f[0].PID, a.PID)
		}
		if f[0].Rows != 0 || f[0].Leak || f[0].Error != "" || f[0].SeenTenant != nil {
			t.Errorf("run %d: want 0 rows under a NULL setting (a fresh backend), got %+v", run, f[0])
		}
		app := 0
		for _, c := range st.Connections {
			if c.PID == a.PID {
				t.Errorf("run %d: refused backend %d is still shown: %+v", run, a.PID, c)
			}
			if c.Pool == "app" {
				app++
			}
		}
		if app != 2 {
			t.Errorf("run %d: %d connections shown in the app pool, want 2", run, app)
		}
		var n int
		if err := m.Admin().QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", int32(a.PID)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("run %d: refused backend %d is still in pg_stat_activity", run, a.PID)
		}
		want := fmt.Sprintf("PrepareConn refused backend %d", a.PID)
		if !slices.ContainsFunc(st.Notes, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("run %d: no note %q in %q", run, want, st.Notes)
		}
		if st.Leaks() != 0 || st.Errors() != 0 {
			t.Errorf("run %d: %d leaks, %d errors", run, st.Leaks(), st.Errors())
		}
		rorCheckTimings(t, st, "check-before-use")
	}
}

// rorSchema lists the lab's roles, its policies and its tables.
func rorSchema(t *testing.T, m *sessions.Manager, lab *sessions.Lab) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := m.Admin().Query(ctx, "SELECT 'role ' || rolname FROM pg_roles WHERE rolname LIKE $1 ORDER BY 1", "lab_"+lab.ID+"%")
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	conn, release, err := lab.Sandbox.Admin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	rows, err = conn.Query(ctx, `SELECT 'policy ' || tablename || '.' || policyname FROM pg_policies
		UNION ALL SELECT 'table ' || tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	more, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return append(out, more...)
}

// rorAppBackends counts the app role's backends on the lab's database.
func rorAppBackends(t *testing.T, m *sessions.Manager, lab *sessions.Lab) int {
	t.Helper()
	var n int
	if err := m.Admin().QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2",
		lab.Sandbox.Database, lab.Sandbox.AppRole).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestResetOnReleaseLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	before := rorSchema(t, m, lab)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, variant := range []string{"discard-all", "check-before-use"} {
		rorRun(t, lab, variant)
		if err := lab.Reset(ctx); err != nil {
			t.Fatal(err)
		}
		if after := rorSchema(t, m, lab); !slices.Equal(before, after) {
			t.Errorf("after %s and a reset: %q, before: %q", variant, after, before)
		}
		if n := rorAppBackends(t, m, lab); n != 0 {
			t.Errorf("after %s and a reset: %d app-role backends left", variant, n)
		}
	}

	// Cancelled while both requests of the replay hold a connection: the
	// run alone leaves nothing behind, and the next run works.
	cancelAt(t, m, lab, "reset-on-release", "check-before-use", nil, func(_ int, st engine.State) bool { return len(st.Requests) >= 2 })
	if after := rorSchema(t, m, lab); !slices.Equal(before, after) {
		t.Errorf("after a cancel mid-run: %q, before: %q", after, before)
	}
	st := rorRun(t, lab, "reset-all")
	if st.Leaks() != 0 {
		t.Errorf("run after the cancelled one: %d leaks", st.Leaks())
	}
}
