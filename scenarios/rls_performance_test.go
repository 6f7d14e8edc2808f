package scenarios_test

import (
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

func TestRLSPerformanceVariants(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	cases := []struct {
		variant string
		metrics map[string]float64
		rows    int
	}{
		{"per-row", map[string]float64{"seq_scan": 1, "setting_per_row": 1, "initplan": 0, "index_used": 0, "rows_scanned": 30000}, 300},
		{"initplan", map[string]float64{"seq_scan": 1, "setting_per_row": 0, "initplan": 1, "index_used": 0}, 300},
		{"not-leakproof", map[string]float64{"seq_scan": 1, "index_used": 0, "index_used_without_rls": 1, "rows_scanned": 30000}, 3},
		{"indexed", map[string]float64{"seq_scan": 0, "index_used": 1, "index_used_without_rls": 1, "rows_scanned": 300}, 3},
	}
	for _, c := range cases {
		st := mustRun(t, lab, "rls-performance", c.variant, nil)
		if st.Status != engine.StatusDone || len(st.Requests) != 1 {
			t.Fatalf("%s: status %q (%s), requests %+v", c.variant, st.Status, st.Error, st.Requests)
		}
		for name, want := range c.metrics {
			if got := mustMetric(t, st, name); got != want {
				t.Errorf("%s: %s = %v, want %v", c.variant, name, got, want)
			}
		}
		if r := st.Requests[0]; r.Rows != c.rows || r.Leak || r.Error != "" {
			t.Errorf("%s: want %d rows, all Acme's, got %+v", c.variant, c.rows, r)
		}
		if tm, ok := st.Timings[c.variant]; !ok || tm.N != 15 || tm.MedianUS <= 0 {
			t.Errorf("%s: timing %+v", c.variant, st.Timings)
		}
		t.Logf("%s: %v %v", c.variant, st.Timings, st.Notes)
	}
	if left := labLeftovers(t, m, lab); len(left) > 0 {
		t.Errorf("left: %v", left)
	}
	if leftoverObjects(t, lab) != 0 {
		t.Error("the perf table is still there")
	}
}
