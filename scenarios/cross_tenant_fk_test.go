package scenarios_test

import (
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// TestCrossTenantFKVariants runs both variants of cross-tenant-fk: with a
// foreign key on id alone Acme writes a line against Globex's order and
// learns which order ids exist; with composite keys the write is refused
// with 23503 and every id it cannot read fails alike.
func TestCrossTenantFKVariants(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	others := 3 * (len(lab.Sandbox.Tenants) - 1)
	cases := []struct {
		variant          string
		written, ids     float64
		firstWriteFailed bool
	}{
		{"unchecked-fk", 1, float64(others), false},
		{"composite-fk", 0, 0, true},
	}
	for _, c := range cases {
		st := mustRun(t, lab, "cross-tenant-fk", c.variant, nil)
		if st.Status != engine.StatusDone || len(st.Requests) != 2 {
			t.Fatalf("%s: status %q (%s), %d requests", c.variant, st.Status, st.Error, len(st.Requests))
		}
		w := st.Requests[0]
		if c.firstWriteFailed != (w.SQLState == "23503") || (!c.firstWriteFailed && w.Error != "") {
			t.Errorf("%s: the write against Globex's order: %+v", c.variant, w)
		}
		got := map[string]float64{}
		for _, mt := range st.Metrics {
			got[mt.Name] = mt.Number
		}
		if want := c.written; got["fks_without_tenant"] != want {
			t.Errorf("%s: the check found %v foreign keys without tenant_id, want %v", c.variant, got["fks_without_tenant"], want)
		}
		if got["foreign_parent_writes"] != c.written || got["ids_revealed"] != c.ids {
			t.Errorf("%s: metrics %v; want foreign_parent_writes %v, ids_revealed %v", c.variant, got, c.written, c.ids)
		}
		for _, r := range st.Requests {
			if r.ForeignRows != 0 || r.Leak {
				t.Errorf("%s: a request read another tenant's rows: %+v", c.variant, r)
			}
		}
		if leftoverObjects(t, lab) != 0 {
			t.Errorf("%s: its tables are still there", c.variant)
		}
		t.Logf("%s: %v", c.variant, st.Notes)
	}
}

// TestCrossTenantFKCancelledLeavesNothing stops a run at its first request
// and checks that its tables are gone.
func TestCrossTenantFKCancelledLeavesNothing(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	cancelAt(t, m, lab, "cross-tenant-fk", "unchecked-fk", nil, narrationStarts("Request #1"))
	if leftoverObjects(t, lab) != 0 {
		t.Error("the tables are still there after a cancelled run")
	}
}
