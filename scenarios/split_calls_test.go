package scenarios_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// p4Schema is what a lab's database holds that a scenario could leave
// behind: the roles of the lab, the policies and the tables.
type p4Schema struct {
	Roles, Policies, Tables string
}

// p4ReadSchema reads the lab's roles (by its prefix), policies and tables.
func p4ReadSchema(t *testing.T, m *sessions.Manager, lab *sessions.Lab) p4Schema {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var s p4Schema
	prefix := strings.TrimSuffix(lab.Sandbox.AppRole, "_app")
	if err := m.Admin().QueryRow(ctx, `SELECT coalesce(string_agg(rolname, ',' ORDER BY rolname), '') FROM pg_roles WHERE starts_with(rolname, $1)`, prefix).Scan(&s.Roles); err != nil {
		t.Fatal(err)
	}
	conn, release, err := lab.Sandbox.Admin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := conn.QueryRow(ctx, `SELECT
		(SELECT coalesce(string_agg(tablename || '.' || policyname, ',' ORDER BY tablename, policyname), '') FROM pg_policies),
		(SELECT coalesce(string_agg(c.relname, ',' ORDER BY c.relname), '') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND c.relkind IN ('r', 'p', 'v', 'm'))`).Scan(&s.Policies, &s.Tables); err != nil {
		t.Fatal(err)
	}
	return s
}

// p4AppBackends counts the app role's backends in the lab's database.
func p4AppBackends(t *testing.T, m *sessions.Manager, lab *sessions.Lab) int {
	t.Helper()
	var n int
	if err := m.Admin().QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2`,
		lab.Sandbox.Database, lab.Sandbox.AppRole).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// p4CheckClean runs scenario/variant, resets the lab, and checks the lab
// holds the same roles, policies and tables as before and no app backend.
func p4CheckClean(t *testing.T, m *sessions.Manager, lab *sessions.Lab, scenario, variant string, params map[string]string) {
	t.Helper()
	before := p4ReadSchema(t, m, lab)
	mustRun(t, lab, scenario, variant, params)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := lab.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if after := p4ReadSchema(t, m, lab); after != before {
		t.Errorf("%s/%s: lab changed: before %+v, after %+v", scenario, variant, before, after)
	}
	if n := p4AppBackends(t, m, lab); n != 0 {
		t.Errorf("%s/%s: %d app backends after reset", scenario, variant, n)
	}
}

// checkCancel cancels scenario/variant on the frame where stop first
// holds, checks it left nothing behind (see cancelAt) and that the lab still
// runs it to the end afterwards.
func checkCancel(t *testing.T, m *sessions.Manager, lab *sessions.Lab, scenario, variant string, params map[string]string, stop func(int, engine.State) bool) {
	t.Helper()
	cancelAt(t, m, lab, scenario, variant, params, stop)
	if st := mustRun(t, lab, scenario, variant, params); st.Status != engine.StatusDone {
		t.Errorf("%s/%s: run after the cancelled one: status %q (%s)", scenario, variant, st.Status, st.Error)
	}
}

func TestSplitCallsSetParamIsASyntaxError(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	for run := range 2 {
		st := mustRun(t, lab, "split-calls", scenarios.SplitCallsSetParam, nil)
		if st.Status != engine.StatusDone || len(st.Requests) != 2 {
			t.Fatalf("run %d: status %q (%s), %d requests", run, st.Status, st.Error, len(st.Requests))
		}
		bound := st.Requests[0]
		if bound.SQLState != "42601" || !strings.Contains(bound.Error, `syntax error at or near "$1"`) {
			t.Errorf("run %d: SET with $1: want 42601 syntax error at or near \"$1\", got %q (%s)", run, bound.Error, bound.SQLState)
		}
		if bound.Rows != 0 || bound.Leak {
			t.Errorf("run %d: the failed request returned rows: %+v", run, bound)
		}
		simple := st.Requests[1]
		if simple.Error != "" || simple.Rows != 3 || simple.Leak || simple.SeenTenant == nil || *simple.SeenTenant != "2" {
			t.Errorf("run %d: simple protocol SET: want 3 own rows under '2', got %+v", run, simple)
		}
		held := false
		for _, c := range st.Connections {
			if c.PID == simple.PID && c.Tenant != nil && *c.Tenant == "2" {
				held = true
			}
		}
		if !held {
			t.Errorf("run %d: backend %d does not hold tenant 2 after release: %+v", run, simple.PID, st.Connections)
		}
	}
}

func TestSplitCallsSplitCrossesBackendsOnEveryRun(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	for run := range 3 {
		st := mustRun(t, lab, "split-calls", scenarios.SplitCallsSplit, nil)
		if st.Status != engine.StatusDone || len(st.Requests) != 3 {
			t.Fatalf("run %d: status %q (%s), %d requests", run, st.Status, st.Error, len(st.Requests))
		}
		backends := map[uint32]bool{}
		for _, r := range st.Requests {
			setPID := uint32(mustMetric(t, st, fmt.Sprintf("request #%d set_config PID", r.Seq)))
			queryPID := uint32(mustMetric(t, st, fmt.Sprintf("request #%d query PID", r.Seq)))
			backends[setPID], backends[queryPID] = true, true
			if queryPID != r.PID || queryPID == 0 || setPID == 0 {
				t.Errorf("run %d: request #%d: query PID metric %d, row PID %d, set PID %d", run, r.Seq, queryPID, r.PID, setPID)
			}
			if setPID == queryPID {
				t.Errorf("run %d: request #%d ran set_config and query on the same backend %d", run, r.Seq, setPID)
			}
			if r.Error != "" || !r.Leak || r.ForeignRows != 3 || r.SeenTenant == nil || *r.SeenTenant == *r.Tenant {
				t.Errorf("run %d: request #%d for tenant %s: want another tenant's 3 rows, got %+v", run, r.Seq, *r.Tenant, r)
			}
		}
		if len(backends) != 2 {
			t.Errorf("run %d: want the two backends of the pool, got %v", run, backends)
		}
		if st.Leaks() != 3 {
			t.Errorf("run %d: want 3 leaks, got %d", run, st.Leaks())
		}
	}
}

func TestSplitCallsOneTxSeesOwnRows(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	for run := range 3 {
		st := mustRun(t, lab, "split-calls", scenarios.SplitCallsOneTx, nil)
		if st.Status != engine.StatusDone || len(st.Requests) != 3 {
			t.Fatalf("run %d: status %q (%s), %d requests", run, st.Status, st.Error, len(st.Requests))
		}
		pids := map[uint32]bool{}
		for _, r := range st.Requests {
			pids[r.PID] = true
			if r.Error != "" || r.Leak || r.Rows != 3 || r.SeenTenant == nil || *r.SeenTenant != *r.Tenant {
				t.Errorf("run %d: request #%d: want its own 3 rows, got %+v", run, r.Seq, r)
			}
		}
		if len(pids) != 2 {
			t.Errorf("run %d: want the three requests on the pool's two backends, got %v", run, pids)
		}
		for _, c := range st.Connections {
			if c.Tenant == nil || *c.Tenant != "" {
				t.Errorf("run %d: backend %d holds %v after the run, want ''", run, c.PID, c.Tenant)
			}
		}
	}
}

func TestSplitCallsLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	variants := scenarios.SplitCalls().VariantNames()
	sort.Strings(variants)
	for _, v := range variants {
		p4CheckClean(t, m, lab, "split-calls", v, nil)
	}
	// Cancelled while two pool calls are held at their gates.
	checkCancel(t, m, lab, "split-calls", scenarios.SplitCallsSplit, nil, func(_ int, st engine.State) bool {
		return strings.Contains(st.Narration, "sends its query as a second call")
	})
}
