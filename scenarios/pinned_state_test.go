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
	// locks_held_idle of the variants that count it.
	idle := map[string]float64{"session-lock": 1, "xact-lock": 0}
	runEachVariant(t, m, lab, "pinned-state", []variantRun{
		{"temp-table", []wantRequest{{3, 0, ""}, {6, 3, ""}}},
		{"on-commit-drop", []wantRequest{{3, 0, ""}, {3, 0, ""}}},
		{"session-lock", []wantRequest{{3, 0, ""}, {0, 0, "55P03"}}},
		{"xact-lock", []wantRequest{{3, 0, ""}, {3, 0, ""}}},
		{"listen-pgbouncer", []wantRequest{{3, 0, ""}}},
		{"listen-direct", []wantRequest{{3, 0, ""}, {3, 0, ""}}},
	}, func(variant string, st engine.State) {
		if want, ok := idle[variant]; ok {
			if got := mustMetric(t, st, "locks_held_idle"); got != want {
				t.Errorf("%s: locks_held_idle %v, want %v", variant, got, want)
			}
		}
		if strings.HasPrefix(variant, "listen") {
			heard, stray := 1.0, 0.0
			if variant == "listen-pgbouncer" {
				heard, stray = 0, 1
			}
			if got, gotStray := mustMetric(t, st, "notifications_received"), mustMetric(t, st, "notifications_misdelivered"); got != heard || gotStray != stray {
				t.Errorf("%s: the worker received %v, app-2 %v; want %v and %v", variant, got, gotStray, heard, stray)
			}
		}
	}, func() []string { return labLeftovers(t, m, lab) })
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
