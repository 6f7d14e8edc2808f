package stackfix_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestNodeStateFixes runs the Node fixes of the schema-per-tenant and
// pinned-state lessons, once per stack, each on a pool of one connection
// (a node-postgres Pool, a TypeORM DataSource):
//   - schema per tenant (withTenantSchema, inTenantSchema): Acme's request
//     reads tenant_acme's tickets, a query that sets no schema afterwards,
//     on the same connection, finds no tickets table (42P01) instead of
//     Acme's, and Globex's request reads tenant_globex's;
//   - pinned state (report, reportWith): Acme's report and then Globex's
//     each read their own 3 rows and leave no temp table and no advisory
//     lock on the connection; a NOTIFY sent through the pool is heard by a
//     node-postgres Client of its own.
func TestNodeStateFixes(t *testing.T) {
	t.Parallel()
	if node, _ := nodeInstalled(); node == "" {
		t.Skip("node or the fixes' packages are not installed (scripts/setup-debian.sh installs them)")
	}
	f := newFixture(t)
	for i, schema := range []string{"tenant_acme", "tenant_globex"} {
		f.admin(t,
			"CREATE SCHEMA "+schema,
			"CREATE TABLE "+schema+".tickets (id serial PRIMARY KEY, tenant_id int NOT NULL)",
			fmt.Sprintf("INSERT INTO %s.tickets (tenant_id) SELECT %d FROM generate_series(1, 3)", schema, i+1),
			"GRANT USAGE ON SCHEMA "+schema+" TO "+f.app,
			"GRANT SELECT ON "+schema+".tickets TO "+f.app)
	}
	f.admin(t, "GRANT TEMPORARY ON DATABASE "+pgx.Identifier{f.lab.Sandbox.Database}.Sanitize()+" TO "+f.app)
	for _, stack := range []struct{ name, prefix string }{{"node-postgres", "pg"}, {"typeorm", "typeorm"}} {
		t.Run(stack.name, func(t *testing.T) {
			var s struct {
				Acme, Globex []int
				Forgot       json.RawMessage
			}
			f.node(t, f.lab.Sandbox.AppURL, stack.prefix+"-schema-per-tenant", &s)
			var failed struct{ Code string }
			_ = json.Unmarshal(s.Forgot, &failed)
			if fmt.Sprint(s.Acme) != "[1 1 1]" || fmt.Sprint(s.Globex) != "[2 2 2]" || failed.Code != "42P01" {
				t.Errorf("schema per tenant: Acme got %v, the query without a schema %s, Globex %v; want Acme's 3, an error 42P01, Globex's 3", s.Acme, s.Forgot, s.Globex)
			}
			var p struct {
				Acme, Globex []int
				Left         struct {
					Temp  bool
					Locks int
				}
				Notified string
			}
			f.node(t, f.lab.Sandbox.AppURL, stack.prefix+"-pinned-state", &p)
			if fmt.Sprint(p.Acme) != "[1 1 1]" || fmt.Sprint(p.Globex) != "[2 2 2]" || p.Left.Temp || p.Left.Locks != 0 || p.Notified != "1" {
				t.Errorf("pinned state: Acme got %v, Globex %v, left %+v, the listener heard %q; want 3 rows each, nothing left, '1' heard", p.Acme, p.Globex, p.Left, p.Notified)
			}
		})
	}
}
