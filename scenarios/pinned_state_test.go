package scenarios_test

import (
	"context"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// TestPinnedStateVariants runs each variant of pinned-state on one lab: a
// temp table without ON COMMIT DROP hands Acme's rows to Globex's correctly
// scoped request on the same backend, and ON COMMIT DROP does not; a
// session advisory lock left by a request that returned early is held by
// an idle backend and the next request times out waiting (55P03), and a
// transaction-level lock is gone with its transaction; a LISTEN through
// PgBouncer in transaction mode hears nothing and the notification reaches
// another client, while a direct listener hears it.
func TestPinnedStateVariants(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	type req struct {
		rows, foreign int
		sqlstate      string
	}
	cases := []struct {
		variant string
		reqs    []req
		idle    float64 // locks_held_idle, -1 when the variant has none
	}{
		{"temp-table", []req{{3, 0, ""}, {6, 3, ""}}, -1},
		{"on-commit-drop", []req{{3, 0, ""}, {3, 0, ""}}, -1},
		{"session-lock", []req{{3, 0, ""}, {0, 0, "55P03"}}, 1},
		{"xact-lock", []req{{3, 0, ""}, {3, 0, ""}}, 0},
		{"listen-pgbouncer", []req{{3, 0, ""}}, -1},
		{"listen-direct", []req{{3, 0, ""}, {3, 0, ""}}, -1},
	}
	for _, c := range cases {
		st := mustRun(t, lab, "pinned-state", c.variant, nil)
		if st.Status != engine.StatusDone || len(st.Requests) != len(c.reqs) {
			t.Fatalf("%s: status %q (%s), %d requests", c.variant, st.Status, st.Error, len(st.Requests))
		}
		for i, want := range c.reqs {
			r := st.Requests[i]
			if r.Rows != want.rows || r.ForeignRows != want.foreign || r.Leak != (want.foreign > 0) || r.SQLState != want.sqlstate {
				t.Errorf("%s request #%d: want %d rows (%d foreign), SQLSTATE %q; got %+v", c.variant, i+1, want.rows, want.foreign, want.sqlstate, r)
			}
		}
		if c.idle >= 0 {
			if got := mustMetric(t, st, "locks_held_idle"); got != c.idle {
				t.Errorf("%s: locks_held_idle %v, want %v", c.variant, got, c.idle)
			}
		}
		if strings.HasPrefix(c.variant, "listen") {
			heard, stray := 1.0, 0.0
			if c.variant == "listen-pgbouncer" {
				heard, stray = 0, 1
			}
			if got, gotStray := mustMetric(t, st, "notifications_received"), mustMetric(t, st, "notifications_misdelivered"); got != heard || gotStray != stray {
				t.Errorf("%s: the worker received %v, app-2 %v; want %v and %v", c.variant, got, gotStray, heard, stray)
			}
		}
		sessionstest.WaitNoBackends(t, m, lab)
		if left := labLeftovers(t, m, lab); len(left) > 0 {
			t.Errorf("%s left: %v", c.variant, left)
		}
		t.Logf("%s: %v", c.variant, st.Notes)
	}
}

// TestPinnedStateCancelledLeavesNothing stops temp-table at its first
// request and checks that the app role may no longer create temp tables.
func TestPinnedStateCancelledLeavesNothing(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	temp := func() bool {
		t.Helper()
		ctx := context.Background()
		conn, release, err := lab.Sandbox.Admin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT has_database_privilege($1, current_database(), 'TEMPORARY')", lab.Sandbox.AppRole).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if temp() {
		t.Fatal("the sandbox's app role may create temp tables before the run")
	}
	st := cancelAt(t, m, lab, "pinned-state", "temp-table", nil, narrationStarts("Request #1"))
	if temp() {
		t.Errorf("the app role may still create temp tables after a run cancelled at %q", st.Narration)
	}
}
