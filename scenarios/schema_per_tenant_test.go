package scenarios_test

import (
	"context"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// TestSchemaPerTenantVariants runs each variant of schema-per-tenant on one
// lab: a session-level search_path hands Acme's schema to Globex's next
// request on the backend, a transaction-local one leaves that request
// without a tickets table (42P01); a SECURITY DEFINER function with an
// unqualified table name reads the schema the caller's search_path names,
// and a qualified one with SET search_path reads its own; behind PgBouncer
// in transaction mode Globex's SET lands between Acme's SET and Acme's
// query, and set_config(..., true) in the query's transaction does not.
func TestSchemaPerTenantVariants(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	runEachVariant(t, m, lab, "schema-per-tenant", []variantRun{
		{"session-search-path", []wantRequest{{3, 0, ""}, {3, 3, ""}, {3, 0, ""}}},
		{"local-search-path", []wantRequest{{3, 0, ""}, {0, 0, "42P01"}, {3, 0, ""}}},
		{"definer-unqualified", []wantRequest{{3, 0, ""}, {3, 3, ""}}},
		{"definer-qualified", []wantRequest{{3, 0, ""}, {3, 0, ""}}},
		{"pgbouncer-session-path", []wantRequest{{3, 3, ""}, {3, 0, ""}}},
		{"pgbouncer-local-path", []wantRequest{{3, 0, ""}, {3, 0, ""}}},
	}, func(variant string, st engine.State) {
		if strings.HasPrefix(variant, "definer") {
			// Globex's call runs as Globex's own role, which may not use
			// Acme's schema.
			if r := st.Requests[1]; r.Role != "lab_"+lab.ID+"_tenant_globex" {
				t.Errorf("%s: Globex's call ran as %q", variant, r.Role)
			}
		}
	}, func() []string { return append(labLeftovers(t, m, lab), tenantSchemasLeft(t, lab)...) })
}

// tenantSchemasLeft lists the schemas of lab's database besides the
// sandbox's own.
func tenantSchemasLeft(t *testing.T, lab *sessions.Lab) []string {
	t.Helper()
	ctx := context.Background()
	conn, release, err := lab.Sandbox.Admin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	var left []string
	rows, err := conn.Query(ctx, `SELECT nspname::text FROM pg_namespace WHERE nspname NOT IN ('public', 'information_schema') AND nspname NOT LIKE 'pg\_%'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		left = append(left, "schema "+n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return left
}

// TestSchemaPerTenantCancelledLeavesNothing stops the definer variant at its
// first request and checks that its schemas and roles are gone.
func TestSchemaPerTenantCancelledLeavesNothing(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	cancelAt(t, m, lab, "schema-per-tenant", "definer-unqualified", nil, narrationStarts("Request #1"))
	if left := tenantSchemasLeft(t, lab); len(left) > 0 {
		t.Errorf("a cancelled run left: %v", left)
	}
}
