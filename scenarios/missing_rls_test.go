package scenarios_test

import (
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// TestMissingRLSVariants runs each variant of missing-rls on one lab: a
// partition read directly and a table without RLS return every tenant's
// rows to Acme, the check names them, and with RLS on every table and
// partition Acme gets its own rows only and the check finds nothing.
func TestMissingRLSVariants(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	app := lab.Sandbox.AppRole
	type read struct{ rows, foreign int }
	cases := []struct {
		variant     string
		reads       []read
		unprotected string
	}{
		{"unprotected-partition", []read{{3, 0}, {9, 6}}, "events_2026_11, events_2026_12"},
		{"new-table", []read{{9, 6}}, "notes"},
		{"rls-everywhere", []read{{3, 0}, {3, 0}, {3, 0}}, "none"},
	}
	for _, c := range cases {
		st := mustRun(t, lab, "missing-rls", c.variant, nil)
		if st.Status != engine.StatusDone || len(st.Requests) != len(c.reads) {
			t.Fatalf("%s: status %q (%s), %d requests", c.variant, st.Status, st.Error, len(st.Requests))
		}
		for i, want := range c.reads {
			r := st.Requests[i]
			if r.Rows != want.rows || r.ForeignRows != want.foreign || r.Leak != (want.foreign > 0) || r.Error != "" {
				t.Errorf("%s request #%d: want %d rows (%d foreign), got %+v", c.variant, i+1, want.rows, want.foreign, r)
			}
			if r.Role != app || r.SeenTenant == nil || *r.SeenTenant != "1" {
				t.Errorf("%s request #%d: want a read as %s under setting '1', got role %q setting %v", c.variant, i+1, app, r.Role, r.SeenTenant)
			}
		}
		found := false
		for _, mt := range st.Metrics {
			if mt.Name == "unprotected_tables" {
				found = true
				if mt.Value != c.unprotected {
					t.Errorf("%s: the check found %q, want %q", c.variant, mt.Value, c.unprotected)
				}
			}
		}
		if !found {
			t.Errorf("%s: no unprotected_tables metric", c.variant)
		}
		if leftoverObjects(t, lab) != 0 {
			t.Errorf("%s: its tables are still there", c.variant)
		}
		t.Logf("%s: %v", c.variant, st.Notes)
	}
}

// TestMissingRLSCancelledLeavesNothing stops a run at its first request and
// checks that its tables are gone.
func TestMissingRLSCancelledLeavesNothing(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	cancelAt(t, m, lab, "missing-rls", "unprotected-partition", nil, narrationStarts("Request #1"))
	if leftoverObjects(t, lab) != 0 {
		t.Error("the tables are still there after a cancelled run")
	}
}
