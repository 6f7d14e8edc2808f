package scenarios_test

import (
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

func TestResetScopeVariants(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	// What each reset leaves on the backend, read by the next request.
	cases := []struct {
		variant string
		kept    map[string]float64
		leaks   int
	}{
		{"reset-setting", map[string]float64{"kept_tenant": 0, "kept_role": 1, "kept_search_path": 1, "kept_prepared": 1, "kept_temp_table": 1, "kept_advisory_lock": 1, "survivors": 5}, 0},
		{"reset-all", map[string]float64{"kept_tenant": 0, "kept_role": 1, "kept_search_path": 0, "kept_prepared": 1, "kept_temp_table": 1, "kept_advisory_lock": 1, "survivors": 4}, 0},
		{"reset-role", map[string]float64{"kept_tenant": 1, "kept_role": 0, "kept_search_path": 1, "kept_prepared": 1, "kept_temp_table": 1, "kept_advisory_lock": 1, "survivors": 5}, 1},
		{"discard-all", map[string]float64{"kept_tenant": 0, "kept_role": 0, "kept_search_path": 0, "kept_prepared": 0, "kept_temp_table": 0, "kept_advisory_lock": 0, "survivors": 0}, 0},
	}
	for _, c := range cases {
		st := mustRun(t, lab, "reset-scope", c.variant, nil)
		if st.Status != engine.StatusDone || len(st.Requests) != 2 {
			t.Fatalf("%s: status %q (%s), %d requests", c.variant, st.Status, st.Error, len(st.Requests))
		}
		for name, want := range c.kept {
			if got := mustMetric(t, st, name); got != want {
				t.Errorf("%s: %s = %v, want %v", c.variant, name, got, want)
			}
		}
		first, next := st.Requests[0], st.Requests[1]
		if next.PID != first.PID || next.Error != "" || st.Errors() != 0 {
			t.Errorf("%s: the next request ran on %d (first on %d), errors %d: %+v", c.variant, next.PID, first.PID, st.Errors(), next)
		}
		if st.Leaks() != c.leaks || next.Leak != (c.leaks > 0) {
			t.Errorf("%s: %d leaks, want %d: %+v", c.variant, st.Leaks(), c.leaks, next)
		}
		if c.leaks > 0 && (next.ForeignRows != 3 || next.SeenTenant == nil || *next.SeenTenant != "1") {
			t.Errorf("%s: want Globex's request to get Acme's 3 rows under '1', got %+v", c.variant, next)
		}
		if left := labLeftovers(t, m, lab); len(left) > 0 {
			t.Errorf("%s left: %v", c.variant, left)
		}
		t.Logf("%s: %v", c.variant, st.Notes)
	}
}

func TestResetScopeCancelledLeavesNothing(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	cancelAt(t, m, lab, "reset-scope", "reset-all", nil, narrationStarts("Request #1 (Acme, session-set) runs RESET ALL"))
}
