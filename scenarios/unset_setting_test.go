package scenarios_test

import (
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// unsetWant is what one request of an unset-setting run must show.
type unsetWant struct {
	tenant, pattern string
	setting         *string // the value the backend held (nil: NULL)
	rows, foreign   int
	sqlstate        string
}

func unsetStr(s string) *string { return &s }

func TestUnsetSettingVariants(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	empty := unsetStr("")
	// using is the policy's USING expression as pg_policies prints it: the
	// live view's policy box must show what the catalog says.
	const (
		noMissingOK = "(tenant_id = (NULLIF(current_setting('app.current_tenant'::text), ''::text))::integer)"
		naiveCast   = "(tenant_id = (current_setting('app.current_tenant'::text, true))::integer)"
	)
	cases := []struct {
		variant string
		reqs    []unsetWant
		using   string
	}{
		{"fresh", []unsetWant{{"2", "forgot", nil, 0, 0, ""}}, originalQual},
		{"after-reset", []unsetWant{{"1", "tx-local", unsetStr("1"), 3, 0, ""}, {"2", "forgot", empty, 0, 0, ""}, {"3", "session-set", unsetStr("3"), 3, 0, ""}, {"2", "reset", empty, 0, 0, ""}}, originalQual},
		{"no-missing-ok", []unsetWant{{"2", "forgot", nil, 0, 0, "42704"}, {"1", "tx-local", unsetStr("1"), 3, 0, ""}, {"3", "forgot", empty, 0, 0, ""}}, noMissingOK},
		{"naive-cast", []unsetWant{{"2", "forgot", nil, 0, 0, ""}, {"1", "tx-local", unsetStr("1"), 3, 0, ""}, {"3", "forgot", empty, 0, 0, "22P02"}}, naiveCast},
		{"fail-open", []unsetWant{{"2", "forgot", nil, 9, 6, ""}, {"1", "tx-local", unsetStr("1"), 3, 0, ""}, {"3", "forgot", empty, 9, 6, ""}}, "CASE"},
		{"nullif", []unsetWant{{"2", "forgot", nil, 0, 0, ""}, {"1", "tx-local", unsetStr("1"), 3, 0, ""}, {"3", "forgot", empty, 0, 0, ""}}, originalQual},
	}
	// Every run starts where the one before it ended: labLeftovers after
	// each proves the policy restored, and fresh once more at the end
	// proves a new backend's setting still unset after all of them.
	cases = append(cases, cases[0])
	for k, c := range cases {
		st := mustRun(t, lab, "unset-setting", c.variant, nil)
		if st.Status != engine.StatusDone {
			t.Fatalf("%s: status %q (%s)", c.variant, st.Status, st.Error)
		}
		if p := st.Policy; p == nil || p.Table != "invoices" || p.Name != "tenant_isolation" || !p.Enabled || !p.Force ||
			(c.using == "CASE" && !strings.HasPrefix(p.Using, "CASE WHEN (COALESCE(")) || (c.using != "CASE" && p.Using != c.using) {
			t.Errorf("%s: policy in force %+v, want invoices' tenant_isolation, enabled, forced, USING %s", c.variant, p, c.using)
		}
		if len(st.Requests) != len(c.reqs) {
			t.Fatalf("%s: %d requests, want %d: %+v", c.variant, len(st.Requests), len(c.reqs), st.Requests)
		}
		var pid uint32
		for i, w := range c.reqs {
			r := st.Requests[i]
			if *r.Tenant != w.tenant || r.Pattern != w.pattern || r.Rows != w.rows || r.ForeignRows != w.foreign || r.SQLState != w.sqlstate || r.Leak != (w.foreign > 0) {
				t.Errorf("%s request %d: want %+v, got %+v", c.variant, i+1, w, r)
			}
			if (w.setting == nil) != (r.SeenTenant == nil) || (w.setting != nil && *w.setting != *r.SeenTenant) {
				t.Errorf("%s request %d: setting %v, want %v", c.variant, i+1, r.SeenTenant, w.setting)
			}
			if r.PID == 0 || r.Why == "" {
				t.Errorf("%s request %d: pid %d why %q", c.variant, i+1, r.PID, r.Why)
			}
			if i > 0 && c.variant != "fresh" && r.PID != pid {
				t.Errorf("%s request %d: backend %d, want the pool's one backend %d", c.variant, i+1, r.PID, pid)
			}
			pid = r.PID
		}
		if k < len(cases)-1 {
			t.Logf("%s: %v", c.variant, st.Notes)
		}
		if left := labLeftovers(t, m, lab); len(left) > 0 {
			t.Errorf("%s left: %v", c.variant, left)
		}
	}
}

func TestUnsetSettingCancelledRestoresPolicy(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	// fail-open: the swapped policy is in force and a request holds the
	// pool's connection; naive-cast: the policy was just swapped.
	cancelAt(t, m, lab, "unset-setting", "fail-open", nil, func(_ int, st engine.State) bool { return len(st.Requests) > 0 && st.Requests[0].Phase == "acquired" })
	cancelAt(t, m, lab, "unset-setting", "naive-cast", nil, atFrame(1))
}
