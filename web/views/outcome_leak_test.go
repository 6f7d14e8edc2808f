package views

import (
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// TestAppLeakWithoutRowsInWords: an app's statement that is a leak by its
// tag (it declared tenant 0 while the backend held Acme's setting) and
// got no rows of Acme's is said to have run under Acme's setting, not to
// have got "Acme's 0 rows"; a leak by rows keeps its count.
func TestAppLeakWithoutRowsInWords(t *testing.T) {
	zero, acme := "0", "1"
	st := engine.State{Status: engine.StatusDone, Requests: []engine.RequestRow{
		{Seq: 7, Tenant: &zero, SeenTenant: &acme, PID: 5980, Leak: true, Rows: 1},
		{Seq: 8, Tenant: &zero, SeenTenant: &acme, PID: 5980, Leak: true, Rows: 3, ForeignRows: 3},
	}}
	o := NewLive(st, []engine.Tenant{{ID: 1, Name: "Acme"}, {ID: 2, Name: "Globex"}}).Outcome()
	if len(o.Leaks) != 2 {
		t.Fatalf("leaks %+v", o.Leaks)
	}
	if got := o.Leaks[0].Text; strings.Contains(got, "0 rows") || !strings.Contains(got, "ran under Acme's setting on backend 5980") {
		t.Errorf("the leak by its tag: %q", got)
	}
	if got := o.Leaks[1].Text; !strings.Contains(got, "got Acme's 3 rows on backend 5980") {
		t.Errorf("the leak by rows: %q", got)
	}
}
