package scenarios_test

import (
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// TestORMTransactionsScoping runs the three scoping variants: with
// set_config(..., true) sent as a call of its own (on the pool, or on one
// pinned connection without a transaction), Acme's first query runs with
// the tenant setting empty and gets nothing, and its second, on the backend
// Globex's older route scoped for the session, gets Globex's 3 rows; inside
// one transaction both get Acme's own 3 rows.
func TestORMTransactionsScoping(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	for _, c := range []struct {
		variant string
		fixed   bool
	}{
		{scenarios.ORMDataSourceQuery, false},
		{scenarios.ORMRunnerAutocommit, false},
		{scenarios.ORMRunnerTransaction, true},
	} {
		st := mustRun(t, lab, "orm-transactions", c.variant, nil)
		if st.Status != engine.StatusDone || len(st.Requests) != 4 {
			t.Fatalf("%s: status %q (%s), %d requests", c.variant, st.Status, st.Error, len(st.Requests))
		}
		var acme []engine.RequestRow
		var globex engine.RequestRow
		for _, r := range st.Requests {
			switch {
			case r.Pattern == c.variant:
				acme = append(acme, r)
			case r.Pattern == engine.PatternSessionSet:
				globex = r
			}
			if r.Error != "" {
				t.Errorf("%s: request #%d failed: %s", c.variant, r.Seq, r.Error)
			}
		}
		if len(acme) != 2 || globex.PID == 0 {
			t.Fatalf("%s: want two Acme requests and Globex's, got %+v", c.variant, st.Requests)
		}
		first, second := acme[0], acme[1]
		if second.PID != globex.PID {
			t.Errorf("%s: Acme's second query ran on backend %d, Globex's route scoped %d", c.variant, second.PID, globex.PID)
		}
		if !strings.Contains(second.Why, "set_config(..., true) ran on backend") {
			t.Errorf("%s: the row does not say where set_config ran: %q", c.variant, second.Why)
		}
		unset := mustMetric(t, st, "unset_tenant")
		if c.fixed {
			for _, r := range acme {
				if r.Rows != 3 || r.Leak || r.SeenTenant == nil || *r.SeenTenant != "1" {
					t.Errorf("%s: want Acme's 3 rows under '1', got %+v", c.variant, r)
				}
			}
			if unset != 0 || st.Leaks() != 0 {
				t.Errorf("%s: %v unset, %d leaks, want none", c.variant, unset, st.Leaks())
			}
			continue
		}
		if first.Rows != 0 || first.Leak || first.SeenTenant == nil || *first.SeenTenant != "" {
			t.Errorf("%s: want Acme's first query to run under '' and get nothing, got %+v", c.variant, first)
		}
		if !second.Leak || second.Rows != 3 || second.ForeignRows != 3 || second.SeenTenant == nil || *second.SeenTenant != "2" {
			t.Errorf("%s: want Acme's second query to get Globex's 3 rows under '2', got %+v", c.variant, second)
		}
		if unset != 1 || st.Leaks() != 1 {
			t.Errorf("%s: %v unset, %d leaks, want 1 and 1", c.variant, unset, st.Leaks())
		}
	}
}

// TestORMTransactionsIdleInTransaction runs the two spanning variants: with
// the transaction spanning the request, pg_stat_activity shows both of the
// pool's backends idle in transaction while the requests wait on another
// service, and Initech's request waits for a connection; with the
// transaction around the database calls only, neither.
func TestORMTransactionsIdleInTransaction(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	for _, c := range []struct {
		variant       string
		idle, waiting float64
	}{
		{scenarios.ORMRequestTransaction, 2, 1},
		{scenarios.ORMShortTransaction, 0, 0},
	} {
		st := mustRun(t, lab, "orm-transactions", c.variant, nil)
		if st.Status != engine.StatusDone || len(st.Requests) != 3 {
			t.Fatalf("%s: status %q (%s), %d requests", c.variant, st.Status, st.Error, len(st.Requests))
		}
		for _, r := range st.Requests {
			if r.Rows != 3 || r.Leak || r.Error != "" {
				t.Errorf("%s: want each tenant's own 3 rows, got %+v", c.variant, r)
			}
		}
		if got := mustMetric(t, st, "idle_in_transaction"); got != c.idle {
			t.Errorf("%s: %v backends idle in transaction, want %v", c.variant, got, c.idle)
		}
		if got := mustMetric(t, st, "requests_waiting"); got != c.waiting {
			t.Errorf("%s: %v requests waiting, want %v", c.variant, got, c.waiting)
		}
		want := "idle in transaction"
		if c.idle == 0 {
			want = ": idle."
		}
		if !strings.Contains(st.Requests[0].Why, want) {
			t.Errorf("%s: Acme's row does not say %q: %q", c.variant, want, st.Requests[0].Why)
		}
		t.Logf("%s: %v", c.variant, st.Notes)
	}
}
