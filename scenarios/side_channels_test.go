package scenarios_test

import (
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

func TestSideChannelsVariants(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")

	st := mustRun(t, lab, "side-channels", "unique-probe", nil)
	if st.Status != engine.StatusDone || len(st.Requests) != 1 {
		t.Fatalf("unique-probe: status %q (%s), requests %+v", st.Status, st.Error, st.Requests)
	}
	r := st.Requests[0]
	if r.SQLState != "23505" || !strings.Contains(r.Error, "duplicate key") || r.Rows != 2 || r.Leak {
		t.Errorf("unique-probe: want Acme's 2 contacts and a 23505 on the insert, got %+v", r)
	}
	if mustMetric(t, st, "existence_revealed") != 1 {
		t.Error("unique-probe: existence_revealed is not 1")
	}

	st = mustRun(t, lab, "side-channels", "tenant-unique", nil)
	r = st.Requests[0]
	if st.Status != engine.StatusDone || r.Error != "" || r.Rows != 2 || r.Leak || mustMetric(t, st, "existence_revealed") != 0 {
		t.Errorf("tenant-unique: want no error and nothing revealed, got %+v (%s)", r, st.Error)
	}

	st = mustRun(t, lab, "side-channels", "truncate", nil)
	if st.Status != engine.StatusDone || len(st.Requests) != 1 || st.Requests[0].Error != "" {
		t.Fatalf("truncate: status %q (%s), requests %+v", st.Status, st.Error, st.Requests)
	}
	if got := mustMetric(t, st, "wiped_rows"); got != 4 {
		t.Errorf("truncate: wiped_rows %v, want the other tenants' 4", got)
	}

	st = mustRun(t, lab, "side-channels", "no-truncate", nil)
	if st.Status != engine.StatusDone || len(st.Requests) != 2 {
		t.Fatalf("no-truncate: status %q (%s), requests %+v", st.Status, st.Error, st.Requests)
	}
	if r := st.Requests[0]; r.SQLState != "42501" || !strings.Contains(r.Error, "permission denied") {
		t.Errorf("no-truncate: want TRUNCATE refused with 42501, got %+v", r)
	}
	if d := st.Requests[1]; d.Error != "" || d.Rows != 0 || d.Leak {
		t.Errorf("no-truncate: the DELETE request: %+v", d)
	}
	if got := mustMetric(t, st, "wiped_rows"); got != 0 {
		t.Errorf("no-truncate: wiped_rows %v", got)
	}
	if left := labLeftovers(t, m, lab); len(left) > 0 {
		t.Errorf("left: %v", left)
	}
	if leftoverObjects(t, lab) != 0 {
		t.Error("the contacts table is still there")
	}
}
