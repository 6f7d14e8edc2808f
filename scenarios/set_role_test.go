package scenarios_test

import (
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"

	"github.com/rlslab/rlslab/sessions/sessionstest"
)

func TestSetRoleVariants(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	t1 := "lab_" + lab.ID + "_t1"
	app := lab.Sandbox.AppRole
	for round := 0; round < 2; round++ {
		st := mustRun(t, lab, "set-role", "set-role", nil)
		a, g := st.Requests[0], st.Requests[1]
		if a.Pattern != "role" || a.Role != t1 || a.Rows != 3 || a.Leak {
			t.Errorf("set-role: Acme's SET ROLE request: %+v", a)
		}
		if g.Pattern != "forgot" || g.PID != a.PID || g.Role != t1 || !g.Leak || g.ForeignRows != 3 {
			t.Errorf("set-role: want Globex's next request on backend %d to run as %s and get Acme's 3 rows, got %+v", a.PID, t1, g)
		}
		if round == 0 {
			t.Logf("set-role: %v", st.Notes)
		}
		if left := labLeftovers(t, m, lab); len(left) > 0 {
			t.Errorf("set-role left: %v", left)
		}

		st = mustRun(t, lab, "set-role", "set-local-role", nil)
		a, g, g2 := st.Requests[0], st.Requests[1], st.Requests[2]
		if a.Pattern != "local-role" || a.Role != t1 || a.Rows != 3 || a.Leak {
			t.Errorf("set-local-role: Acme: %+v", a)
		}
		if g.PID != a.PID || g.Role != app || g.Rows != 0 || g.Leak {
			t.Errorf("set-local-role: want the next request on backend %d back as %s with 0 rows, got %+v", a.PID, app, g)
		}
		if g2.Role != "lab_"+lab.ID+"_t2" || g2.Rows != 3 || g2.Leak {
			t.Errorf("set-local-role: Globex's own: %+v", g2)
		}
		if st.Leaks() != 0 {
			t.Errorf("set-local-role: %d leaks", st.Leaks())
		}
		if round == 0 {
			t.Logf("set-local-role: %v", st.Notes)
		}

		st = mustRun(t, lab, "set-role", "injection", nil)
		s, l := st.Requests[0], st.Requests[1]
		if s.Pattern != "tx-local" || !s.Leak || s.Rows != 3 || s.ForeignRows != 3 || s.SeenTenant == nil || *s.SeenTenant != "2" || s.Role != app {
			t.Errorf("injection: want Acme's request to read Globex's 3 rows under setting '2', got %+v", s)
		}
		if l.Pattern != "local-role" || !l.Leak || l.ForeignRows != 3 || l.Role != app || l.SeenTenant == nil || *l.SeenTenant != "3" || l.PID == s.PID {
			t.Errorf("injection: want the local-role request to RESET ROLE and read Initech's rows, got %+v", l)
		}
		if round == 0 {
			t.Logf("injection: %v", st.Notes)
		}
		if left := labLeftovers(t, m, lab); len(left) > 0 {
			t.Errorf("injection left: %v", left)
		}
	}
}

// TestSetRoleCancelledLeavesNothing cancels set-role at every one of its
// frames in turn: wherever the run stops, its roles, policy and backends
// are gone without any reset of the lab.
func TestSetRoleCancelledLeavesNothing(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	frames := countFrames(t, lab, "set-role", "set-role", nil)
	if frames < 8 {
		t.Fatalf("set-role showed %d frames", frames)
	}
	for k := 1; k <= frames; k++ {
		cancelAt(t, m, lab, "set-role", "set-role", nil, atFrame(k))
	}
	cancelAt(t, m, lab, "set-role", "injection", nil, func(_ int, st engine.State) bool { return strings.Contains(st.Narration, "searches for the term") })
}
