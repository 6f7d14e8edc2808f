package scenarios_test

import (
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// wantRequest is what one request of a run should end with: the rows it
// got, how many of them were another tenant's (a leak when any), and the
// SQLSTATE it failed with ("" when it did not fail).
type wantRequest struct {
	rows, foreign int
	sqlstate      string
}

// variantRun is one variant of a scenario and the requests its run should
// make, in order.
type variantRun struct {
	variant string
	reqs    []wantRequest
}

// runEachVariant runs each of runs' variants of scenario on lab in turn, at
// full speed, and checks that each run is done with exactly its wanted
// requests; then check (nil: none) asserts what is the variant's own, and
// once the lab has no backend left, leftovers lists what the run left in it
// (it must be nothing).
func runEachVariant(t *testing.T, m *sessions.Manager, lab *sessions.Lab, scenario string, runs []variantRun,
	check func(variant string, st engine.State), leftovers func() []string) {
	t.Helper()
	for _, c := range runs {
		st := mustRun(t, lab, scenario, c.variant, nil)
		if st.Status != engine.StatusDone || len(st.Requests) != len(c.reqs) {
			t.Fatalf("%s: status %q (%s), %d requests", c.variant, st.Status, st.Error, len(st.Requests))
		}
		for i, want := range c.reqs {
			r := st.Requests[i]
			if r.Rows != want.rows || r.ForeignRows != want.foreign || r.Leak != (want.foreign > 0) || r.SQLState != want.sqlstate {
				t.Errorf("%s request #%d: want %d rows (%d foreign), SQLSTATE %q; got %+v", c.variant, i+1, want.rows, want.foreign, want.sqlstate, r)
			}
		}
		if check != nil {
			check(c.variant, st)
		}
		sessionstest.WaitNoBackends(t, m, lab)
		if left := leftovers(); len(left) > 0 {
			t.Errorf("%s left: %v", c.variant, left)
		}
		t.Logf("%s: %v", c.variant, st.Notes)
	}
}
