package sessions_test

import (
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
)

// TestEvidenceSaysEachLeakOnce checks that two requests that leaked alike
// are one sentence with a count, and that a different leak keeps its own.
func TestEvidenceSaysEachLeakOnce(t *testing.T) {
	acme, globex := "1", "2"
	leak := engine.RequestRow{Tenant: &globex, SeenTenant: &acme, Leak: true, Rows: 3, ForeignRows: 3, FinishedAt: 1}
	other := engine.RequestRow{Tenant: &acme, SeenTenant: &globex, Leak: true, Rows: 3, ForeignRows: 3, FinishedAt: 1}
	got := sessions.Evidence(engine.State{Tenants: []engine.Tenant{{ID: 1, Name: "Acme"}, {ID: 2, Name: "Globex"}}, Requests: []engine.RequestRow{leak, leak, other}})
	want := "Globex's request got 3 rows of another tenant (it ran with the tenant setting Acme), 2 times"
	if !strings.Contains(got, want) || strings.Count(got, "Globex's request got") != 1 || !strings.Contains(got, "Acme's request got 3 rows") {
		t.Errorf("evidence %q, want one %q and Acme's own sentence", got, want)
	}
}
