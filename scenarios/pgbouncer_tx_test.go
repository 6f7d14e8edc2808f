package scenarios_test

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rlslab/rlslab/internal/bouncer"
	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// pbLab opens a manager and one lab.
func pbLab(t *testing.T) (*sessions.Manager, *sessions.Lab) {
	t.Helper()
	m := mustManager(t)
	return m, sessionstest.MustCreateLab(t, m, "owner")
}

// pbPID returns the PgBouncer pid the run shows as a metric.
func pbPID(t *testing.T, st engine.State) int {
	t.Helper()
	for _, mt := range st.Metrics {
		if mt.Name == scenarios.MetricPgBouncerPID {
			return int(mt.Number)
		}
	}
	t.Fatalf("no %q metric in %+v", scenarios.MetricPgBouncerPID, st.Metrics)
	return 0
}

func pbVersion(st engine.State) float64 {
	for _, mt := range st.Metrics {
		if mt.Name == scenarios.MetricPgBouncerVersion {
			return mt.Number
		}
	}
	return 0
}

func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// pbRequests returns the request rows of pool (in order).
func pbRequests(st engine.State, pool string) []engine.RequestRow {
	var out []engine.RequestRow
	for _, r := range st.Requests {
		if r.Pool == pool {
			out = append(out, r)
		}
	}
	return out
}

// crossClientRows returns app-1's request, app-2's two forgetful ones and
// app-3's transaction-local one.
func crossClientRows(t *testing.T, st engine.State) (first, leak1, local, leak2 engine.RequestRow) {
	t.Helper()
	a1, a2, a3 := pbRequests(st, "app-1"), pbRequests(st, "app-2"), pbRequests(st, "app-3")
	if len(a1) != 1 || len(a2) != 2 || len(a3) != 1 || len(st.Requests) != 4 {
		t.Fatalf("want 1+2+1 requests from app-1, app-2, app-3, got %+v", st.Requests)
	}
	return a1[0], a2[0], a3[0], a2[1]
}

func isTenant(v *string, want string) bool { return v != nil && *v == want }

func TestPgBouncerTxSessionSetLeaksAcrossClients(t *testing.T) {
	t.Parallel()
	_, lab := pbLab(t)
	for run := range 3 {
		st := mustRun(t, lab, "pgbouncer-tx", engine.PatternSessionSet, nil)
		if st.Status != engine.StatusDone {
			t.Fatalf("run %d: status %q (%s)", run, st.Status, st.Error)
		}
		// The run's PgBouncer stops with the run: an idle lab holds
		// nothing.
		pid := pbPID(t, st)
		if !processGone(pid) {
			t.Errorf("run %d: PgBouncer %d still running after the run ended", run, pid)
		}
		first, leak1, local, leak2 := crossClientRows(t, st)
		if first.Error != "" || first.Rows != 3 || first.Leak || !isTenant(first.SeenTenant, "1") {
			t.Errorf("run %d: app-1's own request: %+v", run, first)
		}
		if leak1.PID != first.PID || leak2.PID != first.PID || first.PID == 0 {
			t.Errorf("run %d: backends %d, %d, %d: want app-2 on app-1's backend", run, first.PID, leak1.PID, leak2.PID)
		}
		for _, l := range []engine.RequestRow{leak1, leak2} {
			if !l.Leak || l.Rows != 3 || l.ForeignRows != 3 || !isTenant(l.SeenTenant, "1") {
				t.Errorf("run %d: want Globex's forgetful request to get Acme's 3 rows under '1', got %+v", run, l)
			}
		}
		if local.Leak || local.Rows != 3 || !isTenant(local.SeenTenant, "3") || local.PID != first.PID {
			t.Errorf("run %d: app-3's tx-local request: %+v", run, local)
		}
		p := st.Pairing
		if p == nil || p.Mode != "transaction" || p.Version == "" {
			t.Fatalf("run %d: pairing %+v", run, p)
		}
		var labels []string
		for _, c := range p.Clients {
			labels = append(labels, c.Label)
		}
		if !slices.Equal(labels, []string{"app-1", "app-2", "app-3"}) {
			t.Errorf("run %d: client labels %v", run, labels)
		}
		if len(p.Servers) != 1 || p.Servers[0].PID != first.PID || !isTenant(p.Servers[0].Tenant, "1") {
			t.Errorf("run %d: servers %+v, want one: backend %d holding '1'", run, p.Servers, first.PID)
		}
		if len(p.Pools) != 1 || p.Pools[0].ClActive+p.Pools[0].ClWaiting != 3 {
			t.Errorf("run %d: pools %+v", run, p.Pools)
		}
	}
}

func TestPgBouncerTxLocalVariantsDoNotLeak(t *testing.T) {
	t.Parallel()
	for _, variant := range []string{engine.PatternTxLocal, engine.PatternBatchLocal} {
		t.Run(variant, func(t *testing.T) {
			t.Parallel()
			_, lab := pbLab(t)
			for run := range 2 {
				st := mustRun(t, lab, "pgbouncer-tx", variant, nil)
				first, leak1, local, leak2 := crossClientRows(t, st)
				if first.Rows != 3 || first.Leak || first.Error != "" || first.Pattern != variant {
					t.Errorf("run %d: app-1's request: %+v", run, first)
				}
				for _, f := range []engine.RequestRow{leak1, leak2} {
					if f.PID != first.PID || f.Rows != 0 || f.Leak || f.Error != "" || !isTenant(f.SeenTenant, "") {
						t.Errorf("run %d: want the forgetful request on backend %d with '' and 0 rows, got %+v", run, first.PID, f)
					}
				}
				if local.Rows != 3 || local.Leak {
					t.Errorf("run %d: app-3: %+v", run, local)
				}
				if st.Leaks() != 0 || st.Errors() != 0 {
					t.Errorf("run %d: %d leaks, %d errors", run, st.Leaks(), st.Errors())
				}
			}
		})
	}
}

func TestPgBouncerTxResetAlways(t *testing.T) {
	t.Parallel()
	_, lab := pbLab(t)
	st := mustRun(t, lab, "pgbouncer-tx", "reset-always", nil)
	first, leak1, local, leak2 := crossClientRows(t, st)
	if first.Rows != 0 || first.Leak || first.Error != "" || isTenant(first.SeenTenant, "1") {
		t.Errorf("app-1's session-set request: want its own set gone (DISCARD ALL after the set's transaction) and 0 rows, got %+v", first)
	}
	for _, f := range []engine.RequestRow{leak1, leak2} {
		if f.PID != first.PID || f.Rows != 0 || f.Leak || (f.SeenTenant != nil && *f.SeenTenant != "") {
			t.Errorf("forgetful request: want backend %d, nothing inherited, 0 rows; got %+v", first.PID, f)
		}
	}
	if local.Rows != 3 || local.Leak || local.Error != "" {
		t.Errorf("tx-local request: %+v", local)
	}
	for _, name := range []string{scenarios.TimingDirect, scenarios.TimingBouncer, scenarios.TimingBouncerReset} {
		tm, ok := st.Timings[name]
		if !ok || tm.N != 300 || tm.MedianUS <= 0 {
			t.Errorf("timing %q: %+v (all: %+v)", name, tm, st.Timings)
		}
	}
	t.Logf("medians: direct %.0f µs, pgbouncer %.0f µs, with reset %.0f µs; ratios %v",
		st.Timings[scenarios.TimingDirect].MedianUS, st.Timings[scenarios.TimingBouncer].MedianUS,
		st.Timings[scenarios.TimingBouncerReset].MedianUS, st.Ratios)
	if len(st.Ratios) != 2 {
		t.Errorf("ratios %v", st.Ratios)
	}
}

func TestPgBouncerTxPrepared(t *testing.T) {
	t.Parallel()
	_, lab := pbLab(t)
	st := mustRun(t, lab, "pgbouncer-tx", "prepared", nil)
	v := pbVersion(st)
	for _, mode := range []string{"exec", "simple"} {
		for i := 1; i <= 3; i++ {
			rows := pbRequests(st, mode+"-"+strconv.Itoa(i))
			if len(rows) != 1 || rows[0].Error != "" || rows[0].Rows != 3 || rows[0].Leak {
				t.Errorf("%s-%d: %+v", mode, i, rows)
			}
		}
	}
	if v >= 1.21 {
		t.Skipf("PgBouncer %v: prepared statements may be supported; the 1.18 failure is not expected", v)
	}
	c1 := pbRequests(st, "cache-1")
	if len(c1) != 1 || c1[0].Error != "" || c1[0].Rows != 3 {
		t.Errorf("cache-1 (first to prepare on the backend): %+v", c1)
	}
	for _, name := range []string{"cache-2", "cache-3"} {
		rows := pbRequests(st, name)
		if len(rows) != 1 || rows[0].SQLState != "42P05" || !strings.Contains(rows[0].Error, `prepared statement "stmtcache_`) ||
			!strings.Contains(rows[0].Error, "already exists") {
			t.Errorf("%s: want 42P05 prepared statement \"stmtcache_...\" already exists, got %+v", name, rows)
		}
	}
	t.Logf("cache-2 error: %s", pbRequests(st, "cache-2")[0].Error)
}

func TestPgBouncerTxFanIn(t *testing.T) {
	t.Parallel()
	_, lab := pbLab(t)
	st := mustRun(t, lab, "pgbouncer-tx", "fan-in", map[string]string{"instances": "3", "conns": "2", "pool_size": "2"})
	if st.Status != engine.StatusDone {
		t.Fatalf("status %q: %s", st.Status, st.Error)
	}
	if len(st.Requests) != 18 || st.Leaks() != 0 || st.Errors() != 0 {
		t.Fatalf("want 18 requests, no leak, no error: %d, %d, %d", len(st.Requests), st.Leaks(), st.Errors())
	}
	pids := map[uint32]bool{}
	for _, r := range st.Requests {
		pids[r.PID] = true
		if r.Rows != 3 || r.Tenant == nil || !isTenant(r.SeenTenant, *r.Tenant) {
			t.Errorf("request %+v", r)
		}
	}
	if len(pids) < 1 || len(pids) > 2 {
		t.Errorf("6 clients through default_pool_size 2 ran on %d backends %v", len(pids), pids)
	}
	if st.Pairing == nil || len(st.Pairing.Clients) != 6 || len(st.Pairing.Servers) > 2 {
		t.Errorf("pairing %+v", st.Pairing)
	}
	if _, ok := st.Ratios[scenarios.TimingBouncer+" / "+scenarios.TimingDirect]; !ok {
		t.Errorf("no direct vs PgBouncer ratio: %v", st.Ratios)
	}
	t.Logf("notes: %q; timings %+v", st.Notes, st.Timings)

	st = mustRun(t, lab, "pgbouncer-tx", "fan-in", map[string]string{"instances": "1", "conns": "1", "pool_size": "20"})
	if st.Status != engine.StatusDone || len(st.Notes) == 0 || !strings.Contains(st.Notes[0], "CONNECTION LIMIT") {
		t.Errorf("pool_size 20: status %q, notes %q", st.Status, st.Notes)
	}
}

func TestPgBouncerTxKilledMidRun(t *testing.T) {
	t.Parallel()
	_, lab := pbLab(t)
	d := startDirect(t, lab, "pgbouncer-tx", engine.PatternSessionSet, nil, engine.Speed{Single: true})
	// Held on the first request's first frame: its client connection
	// through PgBouncer is acquired.
	st, ok := d.stepTo(t, func(_ int, st engine.State) bool { return len(st.Requests) > 0 })
	if !ok {
		t.Fatalf("the run ended before its first request: %v", d.err)
	}
	pid := pbPID(t, st)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.pace.Set(engine.Speed{Max: true})
	runErr := d.wait(t)
	st = d.tr.Snapshot()
	d.env.Close()
	if runErr == nil || st.Status != engine.StatusFailed || strings.Count(st.Error, "PgBouncer "+st.Pairing.Version) != 1 || !strings.Contains(st.Error, "stopped answering") {
		t.Fatalf("after kill -9: run error %v, status %q, error %q", runErr, st.Status, st.Error)
	}
	t.Logf("run error: %s", st.Error)
	st = mustRun(t, lab, "pgbouncer-tx", engine.PatternSessionSet, nil)
	if st.Status != engine.StatusDone || st.Leaks() != 2 {
		t.Fatalf("next run: status %q (%s), %d leaks", st.Status, st.Error, st.Leaks())
	}
	if np := pbPID(t, st); np == pid {
		t.Errorf("next run's PgBouncer %d (killed one %d)", np, pid)
	}
}

// assertOnlySandbox checks the lab has its own two roles, one policy, two
// tables, and no backend of the app role.
func assertOnlySandbox(t *testing.T, m *sessions.Manager, lab *sessions.Lab) {
	t.Helper()
	ctx := t.Context()
	var roles []string
	rows, err := m.Admin().Query(ctx, `SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY 1`, lab.Sandbox.Database)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			t.Fatal(err)
		}
		roles = append(roles, r)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	if want := []string{lab.Sandbox.AppRole, lab.Sandbox.OwnerRole}; !slices.Equal(roles, want) {
		t.Errorf("roles %v, want %v", roles, want)
	}
	conn, release, err := lab.Sandbox.Admin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	var policies, tables string
	var backends int
	if err := conn.QueryRow(ctx, `SELECT
		(SELECT string_agg(tablename || '.' || policyname, ',' ORDER BY tablename, policyname) FROM pg_policies),
		(SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'),
		(SELECT count(*) FROM pg_stat_activity WHERE usename = $1)`, lab.Sandbox.AppRole).Scan(&policies, &tables, &backends); err != nil {
		t.Fatal(err)
	}
	if policies != "invoices.tenant_isolation" || tables != "invoices,tenants" || backends != 0 {
		t.Errorf("policies %q, tables %q, app-role backends %d", policies, tables, backends)
	}
}

func TestPgBouncerTxCancelLeavesNothing(t *testing.T) {
	t.Parallel()
	m, lab := pbLab(t)
	mustRun(t, lab, "pgbouncer-tx", "fan-in", nil)
	if err := lab.Reset(t.Context()); err != nil { // closes that run's pools and PgBouncer
		t.Fatal(err)
	}
	// Cancelled between requests, with the run's PgBouncer serving three
	// app instances.
	st := cancelAt(t, m, lab, "pgbouncer-tx", "reset-always", nil, func(_ int, st engine.State) bool { return len(st.Requests) >= 2 })
	if pid := pbPID(t, st); !processGone(pid) {
		t.Errorf("PgBouncer %d still running after the cancelled run", pid)
	}
	assertOnlySandbox(t, m, lab)
}

func TestPgBouncerTxUnreachablePgBouncer(t *testing.T) {
	t.Parallel()
	_, lab := pbLab(t)
	lab.Sandbox.Bouncers = func(ctx context.Context, sb engine.Sandbox, o engine.BouncerOptions) (engine.Bouncer, error) {
		b, err := bouncer.ForApp(ctx, "postgres://admin:secret@127.0.0.1:1/pgbouncer", sb.AppURL, o.PoolSize, o.ResetQueryAlways, nil, nil)
		if err != nil {
			return nil, err
		}
		return b, nil
	}
	st, err := sessionstest.Run(lab, "pgbouncer-tx", engine.PatternSessionSet, nil)
	if err == nil || st.Status != engine.StatusFailed || !strings.Contains(st.Error, "start PgBouncer") || strings.Contains(st.Error, "secret") {
		t.Fatalf("run error %v, status %q, error %q", err, st.Status, st.Error)
	}
	lab.Sandbox.Bouncers = sessionstest.Bouncers
	st = mustRun(t, lab, "pgbouncer-tx", engine.PatternTxLocal, nil)
	if st.Status != engine.StatusDone {
		t.Fatalf("after the failure: %q %s", st.Status, st.Error)
	}
}

// TestPgBouncerTxStepNarrationNamesWhatTheServerHolds plays session-set one
// frame at a time and checks that each acquire's narration says the backend
// holds what it was last read to hold, by whichever client read it: app-2's
// first request gets the server app-1 left scoped to Acme, though app-2's
// own client connection was last read (at connect) holding nothing.
func TestPgBouncerTxStepNarrationNamesWhatTheServerHolds(t *testing.T) {
	t.Parallel()
	_, lab := pbLab(t)
	d := startDirect(t, lab, "pgbouncer-tx", engine.PatternSessionSet, nil, engine.Speed{Single: true})
	acquire := regexp.MustCompile(`^Request #(\d+) .* acquires a connection: backend (\d+), which (holds .*)\.$`)
	release := regexp.MustCompile(`^Request #\d+ .* releases backend (\d+): it now (holds .*)\.$`)
	left := map[string]string{} // backend -> what the last release said it holds
	acquires, linkChecked := 0, false
	check := func(_ int, st engine.State) bool {
		if m := release.FindStringSubmatch(st.Narration); m != nil {
			left[m[1]] = m[2]
		}
		if strings.HasPrefix(st.Narration, "Request #3 (Initech, tx-local) runs BEGIN") && !linkChecked {
			linkChecked = true
			return true // held here: app-3 is inside its transaction
		}
		m := acquire.FindStringSubmatch(st.Narration)
		if m == nil {
			return false
		}
		acquires++
		if want, ok := left[m[2]]; ok && m[3] != want {
			t.Errorf("request #%s: the narration says backend %s %q, the last release read it to %q", m[1], m[2], m[3], want)
		}
		if m[1] == "2" && !strings.Contains(m[3], "tenant Acme") {
			t.Errorf("request #2 (app-2) gets app-1's server, which app-1 left scoped to Acme; the narration says: %s", st.Narration)
		}
		return false
	}
	held, ok := d.stepTo(t, check)
	if !ok {
		t.Fatalf("the run ended before app-3's BEGIN: %+v", held.Requests)
	}
	// While app-3's request holds its transaction open, PgBouncer's admin
	// console shows app-3 linked to the server: the poller must put that
	// pairing on the timeline.
	server := held.Requests[0].PID
	deadline := time.After(10 * time.Second)
	for linked := false; !linked; {
		for _, ev := range d.tr.Snapshot().Timeline.Events {
			linked = linked || (ev.Kind == engine.TimelineLink && ev.Pool == "app-3" && ev.PID == server)
		}
		if linked {
			break
		}
		select {
		case <-d.tr.Changed():
		case <-deadline:
			t.Fatalf("app-3 holds a transaction on backend %d, and no SHOW CLIENTS link to it reached the timeline", server)
		}
	}
	if _, held := d.stepTo(t, check); held {
		t.Fatal("stopped again")
	}
	if err := d.wait(t); err != nil {
		t.Fatal(err)
	}
	if acquires != 4 {
		t.Errorf("%d acquire frames, want 4", acquires)
	}
}
