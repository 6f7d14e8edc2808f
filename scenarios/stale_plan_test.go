package scenarios_test

import (
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

func TestStalePlanVariants(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	for _, c := range []struct {
		variant string
		leaks   int
	}{{"immutable-wrapper", 2}, {"stable-wrapper", 0}} {
		st := mustRun(t, lab, "stale-plan", c.variant, nil)
		if st.Status != engine.StatusDone || len(st.Requests) != 3 {
			t.Fatalf("%s: status %q (%s), requests %+v", c.variant, st.Status, st.Error, st.Requests)
		}
		first := st.Requests[0]
		for i, r := range st.Requests {
			if r.PID != first.PID || r.Rows != 3 || r.Error != "" || r.SeenTenant == nil || *r.SeenTenant != *r.Tenant {
				t.Errorf("%s: request %d: want 3 rows on backend %d under its own setting, got %+v", c.variant, i+1, first.PID, r)
			}
			if wantLeak := i > 0 && c.leaks > 0; r.Leak != wantLeak || (wantLeak && r.ForeignRows != 3) {
				t.Errorf("%s: request %d: leak %v (%d foreign), want %v", c.variant, i+1, r.Leak, r.ForeignRows, wantLeak)
			}
		}
		if st.Leaks() != c.leaks {
			t.Errorf("%s: %d leaks, want %d", c.variant, st.Leaks(), c.leaks)
		}
		if left := labLeftovers(t, m, lab); len(left) > 0 {
			t.Errorf("%s left: %v", c.variant, left)
		}
		if leftoverObjects(t, lab) != 0 {
			t.Errorf("%s: the table or function is still there", c.variant)
		}
	}
}
