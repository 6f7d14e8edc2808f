package scenarios_test

import (
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

func TestTrustedFlagVariants(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	for _, c := range []struct {
		variant       string
		rows, foreign int
	}{{"settable-flag", 9, 6}, {"admin-role", 3, 0}} {
		st := mustRun(t, lab, "trusted-flag", c.variant, nil)
		if st.Status != engine.StatusDone || len(st.Requests) != 2 {
			t.Fatalf("%s: status %q (%s), requests %+v", c.variant, st.Status, st.Error, st.Requests)
		}
		// Both permissive policies are in force, combined with OR.
		if p := st.Policy; p == nil || !strings.Contains(p.Name, "tenant_isolation") || strings.Count(p.Using, " OR ") != 1 || !p.Force {
			t.Errorf("%s: policy in force %+v, want the lab's and the admin policy, OR'd", c.variant, p)
		}
		plain, injected := st.Requests[0], st.Requests[1]
		if plain.Rows != 3 || plain.Leak {
			t.Errorf("%s: the plain request: %+v", c.variant, plain)
		}
		if injected.Rows != c.rows || injected.ForeignRows != c.foreign || injected.Error != "" || injected.SeenTenant == nil || *injected.SeenTenant != "1" || injected.Role != lab.Sandbox.AppRole {
			t.Errorf("%s: want %d rows (%d foreign) under '1' as the app role, got %+v", c.variant, c.rows, c.foreign, injected)
		}
		if mustMetric(t, st, "admin_flag_set") != 1 {
			t.Errorf("%s: the injection did not set the flag", c.variant)
		}
		if left := labLeftovers(t, m, lab); len(left) > 0 {
			t.Errorf("%s left: %v", c.variant, left)
		}
		t.Logf("%s: %v", c.variant, st.Notes)
	}
}

func TestTrustedFlagCancelledLeavesNothing(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	cancelAt(t, m, lab, "trusted-flag", "admin-role", nil, narrationStarts("A second policy"))
}
