package scenarios_test

import (
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

func TestViewBypassVariants(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	app := lab.Sandbox.AppRole
	cases := []struct {
		variant       string
		rows, foreign int
	}{
		{"owner-view", 9, 6},
		{"definer-function", 9, 6},
		{"invoker-view", 3, 0},
		{"invoker-function", 3, 0},
	}
	for _, c := range cases {
		st := mustRun(t, lab, "view-bypass", c.variant, nil)
		if st.Status != engine.StatusDone || len(st.Requests) != 2 {
			t.Fatalf("%s: status %q (%s), %d requests", c.variant, st.Status, st.Error, len(st.Requests))
		}
		r, direct := st.Requests[0], st.Requests[1]
		if r.Rows != c.rows || r.ForeignRows != c.foreign || r.Leak != (c.foreign > 0) || r.Error != "" {
			t.Errorf("%s: want %d rows (%d foreign) through the object, got %+v", c.variant, c.rows, c.foreign, r)
		}
		if r.Role != app || r.SeenTenant == nil || *r.SeenTenant != "1" {
			t.Errorf("%s: want the read as %s under setting '1', got role %q setting %v", c.variant, app, r.Role, r.SeenTenant)
		}
		if direct.Rows != 3 || direct.Leak {
			t.Errorf("%s: the direct read: %+v", c.variant, direct)
		}
		if left := labLeftovers(t, m, lab); len(left) > 0 {
			t.Errorf("%s left: %v", c.variant, left)
		}
		if leftoverObjects(t, lab) != 0 {
			t.Errorf("%s: the view or function is still there", c.variant)
		}
		t.Logf("%s: %v", c.variant, st.Notes)
	}
}

func TestViewBypassCancelledLeavesNothing(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	cancelAt(t, m, lab, "view-bypass", "owner-view", nil, narrationStarts("Request #1"))
	if leftoverObjects(t, lab) != 0 {
		t.Error("the view is still there after a cancelled run")
	}
}
