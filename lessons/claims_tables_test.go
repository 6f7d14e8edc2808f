package lessons_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestClaimsAboutObjectsAroundRLS checks, on a real server, claims of
// lessons 11, 14, 17 and 19 that no scenario runs: a materialized view is
// not filtered by the base table's policy and takes neither security_invoker
// nor RLS of its own; a policy TO a role applies to its members with no SET
// ROLE; an IMMUTABLE helper in a policy is folded into the generic plan a
// parameterised prepared statement switches to after five executions, and
// into the plan PL/pgSQL caches; a partition read through its parent needs
// no grant of its own, and read directly without one is refused.
func TestClaimsAboutObjectsAroundRLS(t *testing.T) {
	cs := newClaimsSession(t, "claims2_")
	ctx, c, exec, p := cs.ctx, cs.conn, cs.exec, cs.name
	ident := func(s string) string { return pgx.Identifier{p + "_" + s}.Sanitize() }
	app, admin, owner, schema := ident("app"), ident("admin"), ident("owner"), ident("s")
	cs.dropAtEnd("DROP SCHEMA IF EXISTS "+schema+" CASCADE",
		"DROP ROLE IF EXISTS "+app, "DROP ROLE IF EXISTS "+admin, "DROP ROLE IF EXISTS "+owner)
	policy := "USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::int)"
	for _, s := range []string{
		"CREATE ROLE " + owner + " NOLOGIN",
		"CREATE ROLE " + app + " NOLOGIN NOSUPERUSER NOBYPASSRLS",
		"CREATE ROLE " + admin + " NOLOGIN",
		"CREATE SCHEMA " + schema + " AUTHORIZATION " + owner,
		"GRANT USAGE ON SCHEMA " + schema + " TO " + app + ", " + admin,
		"SET search_path = " + schema,
		"CREATE TABLE invoices (id serial PRIMARY KEY, tenant_id int NOT NULL)",
		"INSERT INTO invoices (tenant_id) SELECT t FROM generate_series(1, 3) t, generate_series(1, 3) i",
		"ALTER TABLE invoices ENABLE ROW LEVEL SECURITY",
		"ALTER TABLE invoices FORCE ROW LEVEL SECURITY",
		"CREATE POLICY tenant_isolation ON invoices " + policy,
		"GRANT SELECT ON invoices TO " + app + ", " + admin,
		// Created by the superuser, as a migration run by postgres would.
		"CREATE MATERIALIZED VIEW invoice_totals AS SELECT tenant_id FROM invoices",
		"GRANT SELECT ON invoice_totals TO " + app,
		"CREATE TABLE events (tenant_id int NOT NULL, created_on date NOT NULL) PARTITION BY RANGE (created_on)",
		"CREATE TABLE events_2026_12 PARTITION OF events FOR VALUES FROM ('2026-12-01') TO ('2027-01-01')",
		"INSERT INTO events SELECT t, date '2026-12-01' FROM generate_series(1, 3) t",
		"ALTER TABLE events ENABLE ROW LEVEL SECURITY",
		"ALTER TABLE events FORCE ROW LEVEL SECURITY",
		"CREATE POLICY tenant_isolation ON events " + policy,
		"GRANT SELECT ON events TO " + app, // the parent only
		"SELECT set_config('app.current_tenant', '1', false)",
	} {
		exec(s)
	}
	countAs := func(role, from string) (int, error) {
		t.Helper()
		exec("SET ROLE " + role)
		defer exec("RESET ROLE")
		var n int
		err := c.QueryRow(ctx, "SELECT count(*) FROM "+from, pgx.QueryExecModeSimpleProtocol).Scan(&n)
		return n, err
	}

	// 11: the materialized view returns every row to the app role.
	if n, err := countAs(app, "invoices"); err != nil || n != 3 {
		t.Errorf("app role on invoices: %d rows, %v; want Acme's 3", n, err)
	}
	if n, err := countAs(app, "invoice_totals"); err != nil || n != 9 {
		t.Errorf("app role on the materialized view: %d rows, %v; want all 9", n, err)
	}
	// 11: security_invoker is refused for a materialized view, and so is
	// row-level security of its own.
	if _, err := c.Exec(ctx, "ALTER MATERIALIZED VIEW invoice_totals SET (security_invoker = true)"); err == nil {
		t.Error("security_invoker was accepted on a materialized view")
	} else {
		t.Logf("security_invoker on a materialized view: %v", err)
	}
	if _, err := c.Exec(ctx, "ALTER TABLE invoice_totals ENABLE ROW LEVEL SECURITY"); err == nil {
		t.Error("ENABLE ROW LEVEL SECURITY was accepted on a materialized view")
	} else {
		t.Logf("RLS on a materialized view: %v", err)
	}

	// 14: a policy TO admin applies to a member of admin, with no SET ROLE.
	exec("CREATE POLICY admin_override ON invoices TO " + admin + " USING (true)")
	if n, err := countAs(app, "invoices"); err != nil || n != 3 {
		t.Errorf("app role, not a member: %d rows, %v; want 3", n, err)
	}
	exec("GRANT " + admin + " TO " + app)
	if n, err := countAs(app, "invoices"); err != nil || n != 9 {
		t.Errorf("app role, a member of the admin role, no SET ROLE: %d rows, %v; want all 9", n, err)
	}

	// 19: through the parent the partition needs no grant and is
	// filtered; read directly without a grant it is refused; with a grant
	// it has no policy of its own.
	if n, err := countAs(app, "events"); err != nil || n != 1 {
		t.Errorf("app role on the parent: %d rows, %v; want Acme's 1", n, err)
	}
	var pe *pgconn.PgError
	if n, err := countAs(app, "events_2026_12"); !errors.As(err, &pe) || pe.Code != "42501" {
		t.Errorf("app role on the partition, no grant: %d rows, %v; want 42501 permission denied", n, err)
	}
	exec("GRANT SELECT ON events_2026_12 TO " + app)
	if n, err := countAs(app, "events_2026_12"); err != nil || n != 3 {
		t.Errorf("app role on the partition with a grant: %d rows, %v; want all 3 tenants' rows", n, err)
	}
	exec("RESET app.current_tenant")

	// 17: an IMMUTABLE helper in the policy. A parameterised prepared
	// statement is planned per execution for its first five runs, each
	// tenant getting its own rows; later runs may use a cached generic plan
	// that keeps the tenant it was built with. A PL/pgSQL function caches
	// its statement's plan in the session.
	for _, s := range []string{
		"CREATE FUNCTION current_tenant_id() RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT NULLIF(current_setting('app.current_tenant', true), '')::int $$",
		"CREATE TABLE plan_invoices (id int PRIMARY KEY, tenant_id int NOT NULL)",
		"INSERT INTO plan_invoices SELECT id, tenant_id FROM invoices",
		"ALTER TABLE plan_invoices ENABLE ROW LEVEL SECURITY",
		"ALTER TABLE plan_invoices FORCE ROW LEVEL SECURITY",
		"CREATE POLICY tenant_isolation ON plan_invoices USING (tenant_id = current_tenant_id())",
		"GRANT SELECT ON plan_invoices TO " + app,
		"CREATE FUNCTION plan_tenant() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN (SELECT min(tenant_id) FROM plan_invoices); END $$",
		"GRANT EXECUTE ON FUNCTION plan_tenant() TO " + app,
		"SET ROLE " + app,
		"PREPARE by_id(int) AS SELECT array_agg(DISTINCT tenant_id) FROM plan_invoices WHERE id > $1",
	} {
		exec(s)
	}
	run := func(tenant int) []int32 {
		t.Helper()
		exec(fmt.Sprintf("SELECT set_config('app.current_tenant', '%d', false)", tenant))
		var got []int32
		if err := c.QueryRow(ctx, "EXECUTE by_id(0)", pgx.QueryExecModeSimpleProtocol).Scan(&got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	var seen []string
	stale := 0
	for i := 1; i <= 8; i++ {
		tenant := 1 + i%2 // 2, 1, 2, 1, ...
		got := run(tenant)
		seen = append(seen, fmt.Sprintf("#%d tenant %d: %v", i, tenant, got))
		if len(got) != 1 || int(got[0]) != tenant {
			if i <= 5 {
				t.Errorf("execution %d (a custom plan) as tenant %d got %v", i, tenant, got)
			}
			stale++
		}
	}
	t.Logf("prepared statement with a parameter: %v", seen)
	if stale == 0 {
		t.Errorf("no execution after the fifth reused another tenant's plan: %v", seen)
	}
	exec("SELECT set_config('app.current_tenant', '1', false)")
	var first, second int
	if err := c.QueryRow(ctx, "SELECT plan_tenant()", pgx.QueryExecModeSimpleProtocol).Scan(&first); err != nil {
		t.Fatal(err)
	}
	exec("SELECT set_config('app.current_tenant', '2', false)")
	if err := c.QueryRow(ctx, "SELECT plan_tenant()", pgx.QueryExecModeSimpleProtocol).Scan(&second); err != nil {
		t.Fatal(err)
	}
	t.Logf("PL/pgSQL: tenant 1 read tenant %d's rows, then tenant 2 read tenant %d's", first, second)
	if first != 1 || second != 1 {
		t.Errorf("PL/pgSQL: tenant 1 read tenant %d's rows, then tenant 2 read tenant %d's; want the cached plan to give 1 both times", first, second)
	}
	exec("DEALLOCATE by_id")
	exec("RESET ROLE")
	exec("RESET app.current_tenant")
}
