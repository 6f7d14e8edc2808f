package stackfix_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestNodePostgresSchemaPerTenant runs the schema-per-tenant lesson's
// node-postgres fix (withTenantSchema) on a Pool of one connection:
// Acme's request reads tenant_acme's tickets, a query that sets no schema
// afterwards, on the same connection, finds no tickets table (42P01)
// instead of Acme's, and Globex's request reads tenant_globex's.
func TestNodePostgresSchemaPerTenant(t *testing.T) {
	t.Parallel()
	if node, _ := nodeInstalled(); node == "" {
		t.Skip("node or the fixes' packages are not installed (scripts/setup-debian.sh installs them)")
	}
	f := newFixture(t)
	app := pgx.Identifier{f.lab.Sandbox.AppRole}.Sanitize()
	for i, schema := range []string{"tenant_acme", "tenant_globex"} {
		f.admin(t,
			"CREATE SCHEMA "+schema,
			"CREATE TABLE "+schema+".tickets (id serial PRIMARY KEY, tenant_id int NOT NULL)",
			fmt.Sprintf("INSERT INTO %s.tickets (tenant_id) SELECT %d FROM generate_series(1, 3)", schema, i+1),
			"GRANT USAGE ON SCHEMA "+schema+" TO "+app,
			"GRANT SELECT ON "+schema+".tickets TO "+app)
	}
	var r struct {
		Acme, Globex []int
		Forgot       json.RawMessage
	}
	f.node(t, f.lab.Sandbox.AppURL, "pg-schema-per-tenant", &r)
	var failed struct{ Code string }
	_ = json.Unmarshal(r.Forgot, &failed)
	if fmt.Sprint(r.Acme) != "[1 1 1]" || fmt.Sprint(r.Globex) != "[2 2 2]" || failed.Code != "42P01" {
		t.Errorf("Acme got %v, the query without a schema %s, Globex %v; want Acme's 3, an error 42P01, Globex's 3", r.Acme, r.Forgot, r.Globex)
	}
}

// TestNodePostgresPinnedState runs the pinned-state lesson's node-postgres
// fix on a Pool of one connection: report for Acme and then for Globex
// each read their own 3 rows and leave no temp table and no advisory lock
// on the connection; a NOTIFY sent through the Pool is heard by listen's
// Client of its own.
func TestNodePostgresPinnedState(t *testing.T) {
	t.Parallel()
	if node, _ := nodeInstalled(); node == "" {
		t.Skip("node or the fixes' packages are not installed (scripts/setup-debian.sh installs them)")
	}
	f := newFixture(t)
	f.admin(t, "GRANT TEMPORARY ON DATABASE "+pgx.Identifier{f.lab.Sandbox.Database}.Sanitize()+" TO "+pgx.Identifier{f.lab.Sandbox.AppRole}.Sanitize())
	var r struct {
		Acme, Globex []int
		Left         struct {
			Temp  bool
			Locks int
		}
		Notified string
	}
	f.node(t, f.lab.Sandbox.AppURL, "pg-pinned-state", &r)
	if fmt.Sprint(r.Acme) != "[1 1 1]" || fmt.Sprint(r.Globex) != "[2 2 2]" || r.Left.Temp || r.Left.Locks != 0 || r.Notified != "1" {
		t.Errorf("Acme got %v, Globex %v, left %+v, the listener heard %q; want 3 rows each, nothing left, '1' heard", r.Acme, r.Globex, r.Left, r.Notified)
	}
}
