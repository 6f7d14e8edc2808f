package scenarios_test

import (
	"testing"

	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

func TestScopingCostMeasuresEveryPattern(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	for _, n := range []int{300, 100} {
		st := mustRun(t, lab, "scoping-cost", "measure", map[string]string{"iterations": scopingItoa(n)})
		if st.Status != engine.StatusDone {
			t.Fatalf("%d iterations: status %q (%s)", n, st.Status, st.Error)
		}
		for _, p := range scenarios.ScopingPatterns {
			tm, ok := st.Timings[p]
			if !ok || tm.N != n || tm.MedianUS <= 0 || tm.P99US < tm.MedianUS {
				t.Errorf("%d iterations: timing of %s: %+v (present %v)", n, p, tm, ok)
			}
		}
		for _, p := range []string{scenarios.CostFourTrips, scenarios.CostBatch} {
			if r, ok := st.Ratios[p]; !ok || r <= 0 {
				t.Errorf("%d iterations: ratio of %s: %v (present %v)", n, p, r, ok)
			}
		}
		if len(st.Requests) != 3 {
			t.Fatalf("%d iterations: want one sample request per pattern, got %d rows", n, len(st.Requests))
		}
		pids := map[uint32]bool{}
		for i, r := range st.Requests {
			if r.Pattern != scenarios.ScopingPatterns[i] {
				t.Errorf("%d iterations: sample #%d is labelled %q, it ran %s", n, r.Seq, r.Pattern, scenarios.ScopingPatterns[i])
			}
			pids[r.PID] = true
			if r.Error != "" || r.Rows != 3 || r.ForeignRows != 0 || r.SeenTenant == nil || *r.SeenTenant != *r.Tenant {
				t.Errorf("%d iterations: sample %+v: want its own tenant's 3 rows", n, r)
			}
		}
		if len(pids) != 1 || pids[0] {
			t.Errorf("%d iterations: samples ran on backends %v, want one", n, pids)
		}
		if got := mustMetric(t, st, "wrong results"); got != 0 {
			t.Errorf("%d iterations: %v timed queries returned other rows", n, got)
		}
		// The session-level scope of the bare query is undone at the end.
		if len(st.Connections) != 1 || st.Connections[0].Tenant == nil || *st.Connections[0].Tenant != "" || st.Connections[0].State != engine.ConnClosed {
			t.Errorf("%d iterations: connection after the run: %+v", n, st.Connections)
		}
		lines := 0
		for _, c := range st.Charts {
			lines += len(c.Lines)
		}
		if lines != 5 {
			t.Errorf("%d iterations: want 3 median lines and 2 ratio lines, got %d in %+v", n, lines, st.Charts)
		}
	}
}

func TestScopingCostCancelledLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	// Cancelled on a sample, with the connection scoped for the session.
	cancelAt(t, m, lab, "scoping-cost", scenarios.ScopingCostMeasure, nil, func(_ int, st engine.State) bool { return len(st.Requests) >= 2 })
}

func scopingItoa(n int) string {
	if n == 0 {
		return "0"
	}
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}
