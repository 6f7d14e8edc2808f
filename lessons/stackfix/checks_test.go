package stackfix_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rlslab/rlslab/lessons/stackfix"
)

// admin runs stmts on the lab as its superuser, one after the other.
func (f *fixture) admin(t *testing.T, stmts ...string) {
	t.Helper()
	conn, release, err := f.lab.Sandbox.Admin(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	for _, s := range stmts {
		if _, err := conn.Exec(f.ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// cleanup runs stmts as the lab's superuser when the test ends.
func (f *fixture) cleanup(t *testing.T, stmts ...string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, release, err := f.lab.Sandbox.Admin(ctx)
		if err != nil {
			t.Error(err)
			return
		}
		defer release()
		for _, s := range stmts {
			if _, err := conn.Exec(ctx, s); err != nil {
				t.Errorf("%s: %v", s, err)
			}
		}
	})
}

// catalogCheck runs a lesson's catalog query with CatalogCheck in Go and
// with catalogCheck (node-postgres) and catalogCheckWith (TypeORM) in Node
// (when node is installed), and fails the test unless all report want (""
// for nothing found).
func (f *fixture) catalogCheck(t *testing.T, p *pgxpool.Pool, what, query, want string) {
	t.Helper()
	got := ""
	if err := stackfix.CatalogCheck(f.ctx, p, what, query); err != nil {
		got = err.Error()
	}
	if got != want {
		t.Errorf("Go check: %q, want %q", got, want)
	}
	for _, check := range []string{"pg-catalog-check", "typeorm-catalog-check"} {
		var r struct{ Error *string }
		if f.node(t, f.lab.Sandbox.AppURL, check, &r, "what", what, "sql", query) {
			n := ""
			if r.Error != nil {
				n = *r.Error
			}
			if n != want {
				t.Errorf("%s: %q, want %q", check, n, want)
			}
		}
	}
}

// tenantsVia reads the tenant_id of every row query returns, as the app
// role scoped to tenant.
func tenantsVia(ctx context.Context, t *testing.T, p *pgxpool.Pool, tenant, query string) []int32 {
	t.Helper()
	var ids []int32
	err := stackfix.InTenantTx(ctx, p, tenant, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, query)
		var err error
		ids, err = pgx.CollectRows(rows, pgx.RowTo[int32])
		return err
	})
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return ids
}

// TestOwnerRightsCheck runs the view-bypass lesson's check in Go and Node:
// nothing on the lab as it is; after a superuser creates a view, a
// materialized view and a SECURITY DEFINER function over invoices and
// grants them to the app role (through which Acme reads all 9 invoices),
// it names all three; after security_invoker on the view, SECURITY
// INVOKER on the function and the SELECT on the materialized view revoked,
// nothing again, and Acme reads its 3 through the view and the function.
func TestOwnerRightsCheck(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := f.ctx
	p := f.pool(t)
	const what = "read with their owner's rights"
	f.cleanup(t, "DROP VIEW IF EXISTS stackfix_report", "DROP VIEW IF EXISTS stackfix_typeorm_report", "DROP MATERIALIZED VIEW IF EXISTS stackfix_totals", "DROP FUNCTION IF EXISTS stackfix_list()")
	f.catalogCheck(t, p, what, stackfix.OwnerRightsSQL, "")
	f.admin(t,
		"CREATE VIEW stackfix_report AS SELECT id, tenant_id FROM invoices",
		"CREATE MATERIALIZED VIEW stackfix_totals AS SELECT tenant_id, count(*) AS n FROM invoices GROUP BY tenant_id",
		"CREATE FUNCTION stackfix_list() RETURNS SETOF invoices LANGUAGE sql STABLE SECURITY DEFINER AS 'SELECT * FROM invoices'",
		"GRANT SELECT ON stackfix_report, stackfix_totals TO "+f.app,
	)
	if got := tenantsVia(ctx, t, p, "1", "SELECT tenant_id FROM stackfix_report ORDER BY id"); fmt.Sprint(got) != "[1 1 1 2 2 2 3 3 3]" {
		t.Errorf("through the superuser's view Acme should read every tenant's invoices, got %v", got)
	}
	if got := tenantsVia(ctx, t, p, "1", "SELECT tenant_id FROM stackfix_list() ORDER BY id"); fmt.Sprint(got) != "[1 1 1 2 2 2 3 3 3]" {
		t.Errorf("through the definer function Acme should read every tenant's invoices, got %v", got)
	}
	if got := tenantsVia(ctx, t, p, "1", "SELECT tenant_id FROM stackfix_totals ORDER BY tenant_id"); fmt.Sprint(got) != "[1 2 3]" {
		t.Errorf("the materialized view should hold every tenant's totals, got %v", got)
	}
	// The view TypeORM's schema builder creates for a view entity, run as a
	// migration that connects as a superuser would run it.
	var typeorm struct{ Up []string }
	want := what + ": stackfix_list(), stackfix_report, stackfix_totals"
	if f.node(t, f.lab.Sandbox.AppURL, "typeorm-view-sql", &typeorm) {
		if len(typeorm.Up) == 0 || typeorm.Up[0] != `CREATE VIEW "stackfix_typeorm_report" AS SELECT id, tenant_id FROM invoices` {
			t.Fatalf("TypeORM's SQL for the view entity: %q", typeorm.Up)
		}
		f.admin(t, typeorm.Up[0], "GRANT SELECT ON stackfix_typeorm_report TO "+f.app)
		if got := tenantsVia(ctx, t, p, "1", "SELECT tenant_id FROM stackfix_typeorm_report ORDER BY id"); fmt.Sprint(got) != "[1 1 1 2 2 2 3 3 3]" {
			t.Errorf("through TypeORM's view Acme should read every tenant's invoices, got %v", got)
		}
		want += ", stackfix_typeorm_report"
	}
	f.catalogCheck(t, p, what, stackfix.OwnerRightsSQL, want)
	f.admin(t,
		"ALTER VIEW IF EXISTS stackfix_typeorm_report SET (security_invoker = true)",
		"ALTER VIEW stackfix_report SET (security_invoker = true)",
		"ALTER FUNCTION stackfix_list() SECURITY INVOKER",
		"REVOKE SELECT ON stackfix_totals FROM "+f.app,
	)
	f.catalogCheck(t, p, what, stackfix.OwnerRightsSQL, "")
	reads := []string{"SELECT tenant_id FROM stackfix_report ORDER BY id", "SELECT tenant_id FROM stackfix_list() ORDER BY id"}
	if len(typeorm.Up) > 0 {
		reads = append(reads, "SELECT tenant_id FROM stackfix_typeorm_report ORDER BY id")
	}
	for _, q := range reads {
		if got := tenantsVia(ctx, t, p, "1", q); fmt.Sprint(got) != "[1 1 1]" {
			t.Errorf("%s after the fix: %v, want Acme's [1 1 1]", q, got)
		}
	}
}

// injectedTerm is the trusted-flag scenario's search term.
const injectedTerm = `no-such-customer' OR set_config('app.is_admin', 'on', true) IS NULL OR customer LIKE '`

// TestAdminOverrideFixes runs the trusted-flag lesson's fixes in Go and
// Node. With the flag policy on invoices, the search that pastes the term
// into its SQL turns the flag on and Acme's listing in the same
// transaction gets all 9 invoices; the search that sends the term as a
// parameter (pgx, node-postgres, TypeORM) finds nothing, leaves the flag
// unset, and the listing gets Acme's 3. With the override as a policy TO
// a support role: the staff's own login (an INHERIT member) reads all 9
// with no SET ROLE; the app role passes CheckNotMember (and its
// node-postgres and TypeORM versions) and reads 3; made a member (it is
// NOINHERIT), it fails the three checks, still reads 3, and reads 9 after
// SET ROLE.
func TestAdminOverrideFixes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := f.ctx
	p := f.pool(t)

	t.Run("search-param", func(t *testing.T) {
		f.admin(t, "CREATE POLICY stackfix_flag ON invoices USING (current_setting('app.is_admin', true) = 'on')")
		f.cleanup(t, "DROP POLICY IF EXISTS stackfix_flag ON invoices")
		var pasted []int32
		err := stackfix.InTenantTx(ctx, p, "1", func(tx pgx.Tx) error {
			rows, _ := tx.Query(ctx, `SELECT id FROM invoices WHERE customer LIKE '%`+injectedTerm+`%'`)
			if _, err := pgx.CollectRows(rows, pgx.RowTo[int32]); err != nil {
				return err
			}
			var err error
			pasted, err = ownTenants(ctx, tx)
			return err
		})
		if err != nil || fmt.Sprint(pasted) != "[1 1 1 2 2 2 3 3 3]" {
			t.Errorf("the pasted search should open every tenant's invoices to Acme's listing, got %v (%v)", pasted, err)
		}
		var found, own []int32
		var flag *string
		err = stackfix.InTenantTx(ctx, p, "1", func(tx pgx.Tx) (err error) {
			if found, err = stackfix.SearchInvoices(ctx, tx, injectedTerm); err != nil {
				return err
			}
			if own, err = ownTenants(ctx, tx); err != nil {
				return err
			}
			return tx.QueryRow(ctx, `SELECT current_setting('app.is_admin', true)`).Scan(&flag)
		})
		if err != nil || len(found) != 0 || fmt.Sprint(own) != "[1 1 1]" || (flag != nil && *flag == "on") {
			t.Errorf("SearchInvoices: found %v, then the listing got %v, app.is_admin %s (%v); want nothing, Acme's [1 1 1], not on", found, own, setting(flag), err)
		}
		for _, check := range []string{"pg-search-param", "typeorm-search-param"} {
			var r struct {
				Found, Own []int
				Admin      *string
			}
			if f.node(t, f.lab.Sandbox.AppURL, check, &r, "term", injectedTerm) {
				if len(r.Found) != 0 || fmt.Sprint(r.Own) != "[1 1 1]" || (r.Admin != nil && *r.Admin == "on") {
					t.Errorf("%s: found %v, then the listing got %v, app.is_admin %s", check, r.Found, r.Own, setting(r.Admin))
				}
			}
		}
	})

	t.Run("not-member", func(t *testing.T) {
		support := "lab_" + f.lab.ID + "_support"
		staff := "lab_" + f.lab.ID + "_staff"
		qs, qf := pgx.Identifier{support}.Sanitize(), pgx.Identifier{staff}.Sanitize()
		f.admin(t,
			"CREATE ROLE "+qs+" NOLOGIN",
			"CREATE ROLE "+qf+" LOGIN PASSWORD 'stackfix-staff'",
			"GRANT "+qs+" TO "+qf,
			"GRANT CONNECT ON DATABASE "+pgx.Identifier{f.lab.Sandbox.Database}.Sanitize()+" TO "+qf,
			"GRANT USAGE ON SCHEMA public TO "+qs,
			"GRANT SELECT ON invoices TO "+qs,
			"CREATE POLICY stackfix_support ON invoices TO "+qs+" USING (true)",
		)
		f.cleanup(t, "DROP POLICY IF EXISTS stackfix_support ON invoices", "DROP OWNED BY "+qs+", "+qf, "DROP ROLE IF EXISTS "+qf, "DROP ROLE IF EXISTS "+qs)

		staffPool := f.pool(t, func(c *pgxpool.Config) {
			c.ConnConfig.User, c.ConnConfig.Password = staff, "stackfix-staff"
		})
		if got := tenantsVia(ctx, t, staffPool, "1", "SELECT tenant_id FROM invoices ORDER BY id"); fmt.Sprint(got) != "[1 1 1 2 2 2 3 3 3]" {
			t.Errorf("the staff login, an INHERIT member of the support role, should read all 9 with no SET ROLE, got %v", got)
		}
		if err := stackfix.CheckNotMember(ctx, p, support); err != nil {
			t.Errorf("CheckNotMember on the app role: %v", err)
		}
		if got := tenantsVia(ctx, t, p, "1", "SELECT tenant_id FROM invoices ORDER BY id"); fmt.Sprint(got) != "[1 1 1]" {
			t.Errorf("the app role should read Acme's 3, got %v", got)
		}
		nodeCheck := func(want string) {
			t.Helper()
			for _, check := range []string{"pg-not-member", "typeorm-not-member"} {
				var r struct{ Error *string }
				if f.node(t, f.lab.Sandbox.AppURL, check, &r, "role", support) {
					got := ""
					if r.Error != nil {
						got = *r.Error
					}
					if got != want {
						t.Errorf("%s: %q, want %q", check, got, want)
					}
				}
			}
		}
		nodeCheck("")

		f.admin(t, "GRANT "+qs+" TO "+f.app)
		member := fmt.Sprintf("%s is a member of %s, whose policies it can reach", f.lab.Sandbox.AppRole, support)
		if err := stackfix.CheckNotMember(ctx, p, support); err == nil || err.Error() != member {
			t.Errorf("CheckNotMember after GRANT: %v, want %q", err, member)
		}
		nodeCheck(member)
		if got := tenantsVia(ctx, t, p, "1", "SELECT tenant_id FROM invoices ORDER BY id"); fmt.Sprint(got) != "[1 1 1]" {
			t.Errorf("the NOINHERIT app role, a member now, should still read Acme's 3 without SET ROLE, got %v", got)
		}
		var got []int32
		err := stackfix.InTenantTx(ctx, p, "1", func(tx pgx.Tx) (err error) {
			if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+qs); err != nil {
				return err
			}
			got, err = ownTenants(ctx, tx)
			return err
		})
		if err != nil || fmt.Sprint(got) != "[1 1 1 2 2 2 3 3 3]" {
			t.Errorf("after SET ROLE to the support role the app's request should read all 9, got %v (%v)", got, err)
		}
	})
}

// TestTenantKeysCheck runs the side-channels lesson's check in Go and
// Node, and TypeORM's two ways to empty a tenant's contacts: with
// contacts UNIQUE (email) and ALL granted to the app role, the check names
// the index and the three extra privileges, and repository.clear() in
// Acme's transaction removes the other tenants' 4 contacts too; with
// UNIQUE (tenant_id, email) and only SELECT, INSERT, UPDATE, DELETE, the
// check finds nothing, clear() fails with 42501, and purgeContacts removes
// Acme's 2 and leaves the other 4.
func TestTenantKeysCheck(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := f.ctx
	p := f.pool(t)
	const what = "tenant tables with keys or privileges across tenants"
	f.cleanup(t, "DROP TABLE IF EXISTS contacts")
	f.catalogCheck(t, p, what, stackfix.TenantKeysSQL, "")
	seed := func() {
		t.Helper()
		f.admin(t, "TRUNCATE contacts", `INSERT INTO contacts (tenant_id, email)
			SELECT t, r || '@' || n || '.example' FROM (VALUES (1, 'acme'), (2, 'globex'), (3, 'initech')) v(t, n), unnest(ARRAY['ceo', 'billing']) r`)
	}
	others := func() int {
		t.Helper()
		conn, release, err := f.lab.Sandbox.Admin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM contacts WHERE tenant_id <> 1").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	f.admin(t,
		"CREATE TABLE contacts (id serial PRIMARY KEY, tenant_id int NOT NULL, email text NOT NULL UNIQUE)",
		"ALTER TABLE contacts ENABLE ROW LEVEL SECURITY",
		"ALTER TABLE contacts FORCE ROW LEVEL SECURITY",
		"CREATE POLICY tenant_isolation ON contacts USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::int)",
		"GRANT ALL ON contacts TO "+f.app,
		"GRANT USAGE ON SEQUENCE contacts_id_seq TO "+f.app,
	)
	seed()
	f.catalogCheck(t, p, what, stackfix.TenantKeysSQL, what+": REFERENCES on contacts, TRIGGER on contacts, TRUNCATE on contacts, contacts_email_key")
	var cleared struct {
		Error *string
		Code  string
	}
	ranNode := f.node(t, f.lab.Sandbox.AppURL, "typeorm-clear", &cleared)
	if ranNode && (cleared.Error != nil || others() != 0) {
		t.Errorf("repository.clear() in Acme's transaction with ALL granted: %+v, %d other tenants' contacts left; want them all gone", cleared, others())
	}

	seed()
	f.admin(t,
		"ALTER TABLE contacts DROP CONSTRAINT contacts_email_key",
		"ALTER TABLE contacts ADD UNIQUE (tenant_id, email)",
		"REVOKE ALL ON contacts FROM "+f.app,
		"GRANT SELECT, INSERT, UPDATE, DELETE ON contacts TO "+f.app,
	)
	f.catalogCheck(t, p, what, stackfix.TenantKeysSQL, "")
	if ranNode {
		if !f.node(t, f.lab.Sandbox.AppURL, "typeorm-clear", &cleared) || cleared.Code != "42501" || others() != 4 {
			t.Errorf("repository.clear() without TRUNCATE: %+v, %d other tenants' contacts left; want 42501 and 4", cleared, others())
		}
		var purged struct{ Deleted int }
		f.node(t, f.lab.Sandbox.AppURL, "typeorm-purge", &purged)
		if purged.Deleted != 2 || others() != 4 {
			t.Errorf("purgeContacts deleted %d, %d other tenants' contacts left; want 2 and 4", purged.Deleted, others())
		}
	}
	// The insert of the unique-probe variant, now: accepted for Acme.
	err := stackfix.InTenantTx(ctx, p, "1", func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO contacts (tenant_id, email) VALUES (1, 'ceo@globex.example')")
		return err
	})
	if err != nil {
		t.Errorf("Acme's insert of another tenant's address under UNIQUE (tenant_id, email): %v", err)
	}
}

// TestPlanChecks runs the rls-performance lesson's index check in Go and
// Node, and ExplainAsTenant (Go) and explainAsTenant (Node) on a table of
// 20,000 rows over 100 tenants: under the per-row policy, with no index,
// the app role's plan scans the table and calls current_setting in its
// filter; under the policy that reads the setting in a scalar subquery,
// the plan has an InitPlan and no call in the filter; with an index on
// tenant_id, the check is clear of the table and the plan uses the index.
func TestPlanChecks(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := f.ctx
	p := f.pool(t)
	const what = "tenant tables without an index on tenant_id"
	const query = "SELECT id FROM stackfix_perf"
	f.cleanup(t, "DROP TABLE IF EXISTS stackfix_perf")
	// The lab's own invoices (9 rows) has its primary key only.
	f.catalogCheck(t, p, what, stackfix.UnindexedTenantTablesSQL, what+": invoices")
	f.admin(t,
		"CREATE TABLE stackfix_perf (id serial PRIMARY KEY, tenant_id int NOT NULL)",
		"INSERT INTO stackfix_perf (tenant_id) SELECT 1 + g % 100 FROM generate_series(1, 20000) g",
		"ALTER TABLE stackfix_perf ENABLE ROW LEVEL SECURITY",
		"ALTER TABLE stackfix_perf FORCE ROW LEVEL SECURITY",
		"CREATE POLICY tenant_isolation ON stackfix_perf USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::int)",
		"GRANT SELECT ON stackfix_perf TO "+f.app,
		"ANALYZE stackfix_perf",
	)
	f.catalogCheck(t, p, what, stackfix.UnindexedTenantTablesSQL, what+": invoices, stackfix_perf")
	plan := func(t *testing.T) string {
		t.Helper()
		got, err := stackfix.ExplainAsTenant(ctx, p, "1", query)
		if err != nil {
			t.Fatal(err)
		}
		for _, check := range []string{"pg-explain-as-tenant", "typeorm-explain-as-tenant"} {
			var r struct{ Plan string }
			if f.node(t, f.lab.Sandbox.AppURL, check, &r, "sql", query) && r.Plan != got {
				t.Errorf("%s: the plan differs from Go's:\n%s\n---\n%s", check, r.Plan, got)
			}
		}
		return got
	}
	filter := func(plan string) string {
		for _, l := range strings.Split(plan, "\n") {
			if strings.Contains(l, "Filter:") || strings.Contains(l, "Index Cond:") {
				return l
			}
		}
		return ""
	}
	if got := plan(t); !strings.Contains(got, "Seq Scan on stackfix_perf") || !strings.Contains(filter(got), "current_setting") {
		t.Errorf("per-row policy, no index: want a Seq Scan calling current_setting in its filter, got\n%s", got)
	}
	f.admin(t,
		"ALTER POLICY tenant_isolation ON stackfix_perf USING (tenant_id = (SELECT NULLIF(current_setting('app.current_tenant', true), '')::int))",
	)
	if got := plan(t); !strings.Contains(got, "InitPlan") || strings.Contains(filter(got), "current_setting") {
		t.Errorf("policy with a scalar subquery: want an InitPlan and no current_setting in the filter, got\n%s", got)
	}
	f.admin(t, "CREATE INDEX stackfix_perf_tenant ON stackfix_perf (tenant_id)", "ANALYZE stackfix_perf")
	f.catalogCheck(t, p, what, stackfix.UnindexedTenantTablesSQL, what+": invoices")
	if got := plan(t); !strings.Contains(got, "stackfix_perf_tenant") || !strings.Contains(filter(got), "tenant_id") {
		t.Errorf("with an index on tenant_id: want the index, with the policy's condition, got\n%s", got)
	}
}

// TestImmutableReadersCheck runs the stale-plan lesson's check in Go and
// Node, and the lesson's query for Acme then Globex on one connection
// through each client's ways of sending it: with an IMMUTABLE helper in
// the policy, the check names it, and Globex gets Acme's rows wherever a
// plan is reused (pgx's default statement cache, a named node-postgres
// query) and its own where it is not (pgx's exec mode, an unnamed
// node-postgres query); with the helper STABLE, the check finds nothing
// and every way gives each tenant its own rows.
func TestImmutableReadersCheck(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := f.ctx
	const what = "IMMUTABLE functions that read a setting"
	const query = "SELECT tenant_id FROM stackfix_plan ORDER BY id"
	f.cleanup(t, "DROP TABLE IF EXISTS stackfix_plan", "DROP FUNCTION IF EXISTS stackfix_tenant()")
	check := f.pool(t)
	f.catalogCheck(t, check, what, stackfix.ImmutableSettingReadersSQL, "")
	f.admin(t,
		"CREATE FUNCTION stackfix_tenant() RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT NULLIF(current_setting('app.current_tenant', true), '')::int $$",
		"CREATE TABLE stackfix_plan AS SELECT id, tenant_id FROM invoices",
		"ALTER TABLE stackfix_plan ENABLE ROW LEVEL SECURITY",
		"ALTER TABLE stackfix_plan FORCE ROW LEVEL SECURITY",
		"CREATE POLICY tenant_isolation ON stackfix_plan USING (tenant_id = stackfix_tenant())",
		"GRANT SELECT ON stackfix_plan TO "+f.app,
	)
	f.catalogCheck(t, check, what, stackfix.ImmutableSettingReadersSQL, what+": stackfix_tenant()")
	// run returns what Acme, then Globex, read, on a fresh connection per way.
	type way struct {
		name   string
		reuses bool
		run    func(t *testing.T) (acme, globex string)
	}
	goWay := func(mode pgx.QueryExecMode) func(t *testing.T) (string, string) {
		return func(t *testing.T) (string, string) {
			p := f.pool(t, func(c *pgxpool.Config) { c.ConnConfig.DefaultQueryExecMode = mode })
			defer p.Close()
			return fmt.Sprint(tenantsVia(ctx, t, p, "1", query)), fmt.Sprint(tenantsVia(ctx, t, p, "2", query))
		}
	}
	nodeWay := func(check, name string) func(t *testing.T) (string, string) {
		return func(t *testing.T) (string, string) {
			var r struct{ Acme, Globex []int }
			if !f.node(t, f.lab.Sandbox.AppURL, check, &r, "sql", query, "name", name) {
				t.Skip("node is not installed")
			}
			return fmt.Sprint(r.Acme), fmt.Sprint(r.Globex)
		}
	}
	ways := []way{
		{"pgx default (statement cache)", true, goWay(pgx.QueryExecModeCacheStatement)},
		{"pgx exec mode", false, goWay(pgx.QueryExecModeExec)},
		{"node-postgres named query", true, nodeWay("pg-plan-cache", "plan-invoices")},
		{"node-postgres unnamed query", false, nodeWay("pg-plan-cache", "")},
		{"TypeORM manager.query", false, nodeWay("typeorm-plan-cache", "")},
	}
	for _, w := range ways {
		t.Run("immutable/"+w.name, func(t *testing.T) {
			acme, globex := w.run(t)
			want := "[2 2 2]"
			if w.reuses {
				want = "[1 1 1]"
			}
			if acme != "[1 1 1]" || globex != want {
				t.Errorf("Acme got %s, Globex %s; want [1 1 1] and %s", acme, globex, want)
			}
		})
	}
	t.Run("immutable/psycopg", func(t *testing.T) {
		cursor, client := psycopgRuns(t, f, query)
		// Executions 1 to 6 (Acme, Globex, Initech, twice) read their own;
		// psycopg prepares the query at its sixth run, planned for Initech,
		// and the seventh to ninth reuse that plan.
		if want := "[[1 1 1] [2 2 2] [3 3 3] [1 1 1] [2 2 2] [3 3 3] [3 3 3] [3 3 3] [3 3 3]]"; cursor != want {
			t.Errorf("psycopg Cursor: %s, want %s", cursor, want)
		}
		if want := "[[1 1 1] [2 2 2] [3 3 3] [1 1 1] [2 2 2] [3 3 3] [1 1 1] [2 2 2] [3 3 3]]"; client != want {
			t.Errorf("psycopg ClientCursor: %s, want %s", client, want)
		}
	})
	f.admin(t, "ALTER FUNCTION stackfix_tenant() STABLE")
	t.Run("stable/psycopg", func(t *testing.T) {
		cursor, client := psycopgRuns(t, f, query)
		want := "[[1 1 1] [2 2 2] [3 3 3] [1 1 1] [2 2 2] [3 3 3] [1 1 1] [2 2 2] [3 3 3]]"
		if cursor != want || client != want {
			t.Errorf("psycopg with the STABLE helper: Cursor %s, ClientCursor %s; want each its own: %s", cursor, client, want)
		}
	})
	f.catalogCheck(t, check, what, stackfix.ImmutableSettingReadersSQL, "")
	for _, w := range ways {
		t.Run("stable/"+w.name, func(t *testing.T) {
			if acme, globex := w.run(t); acme != "[1 1 1]" || globex != "[2 2 2]" {
				t.Errorf("Acme got %s, Globex %s; want their own", acme, globex)
			}
		})
	}
}

// TestTenantForeignKeysCheck runs the cross-tenant-fk lesson's check in Go
// and Node: with order_lines.order_id REFERENCES orders (id), it names the
// key and Acme's line against Globex's order 4 is written; with the
// composite key, it finds nothing and the same insert fails with 23503.
func TestTenantForeignKeysCheck(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := f.ctx
	p := f.pool(t)
	const what = "foreign keys between tenant tables without tenant_id"
	f.cleanup(t, "DROP TABLE IF EXISTS order_lines", "DROP TABLE IF EXISTS orders")
	f.catalogCheck(t, p, what, stackfix.ForeignKeysWithoutTenantSQL, "")
	policy := "USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::int)"
	f.admin(t,
		"CREATE TABLE orders (id int PRIMARY KEY, tenant_id int NOT NULL)",
		"INSERT INTO orders SELECT g, 1 + (g - 1) / 3 FROM generate_series(1, 9) g",
		"CREATE TABLE order_lines (tenant_id int NOT NULL, order_id int NOT NULL REFERENCES orders (id), note text)",
		"ALTER TABLE orders ENABLE ROW LEVEL SECURITY", "ALTER TABLE orders FORCE ROW LEVEL SECURITY",
		"ALTER TABLE order_lines ENABLE ROW LEVEL SECURITY", "ALTER TABLE order_lines FORCE ROW LEVEL SECURITY",
		"CREATE POLICY tenant_isolation ON orders "+policy,
		"CREATE POLICY tenant_isolation ON order_lines "+policy,
		"GRANT SELECT ON orders TO "+f.app,
		"GRANT SELECT, INSERT ON order_lines TO "+f.app,
	)
	insert := func() error {
		return stackfix.InTenantTx(ctx, p, "1", func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO order_lines (tenant_id, order_id, note) VALUES (1, 4, 'refund')")
			return err
		})
	}
	f.catalogCheck(t, p, what, stackfix.ForeignKeysWithoutTenantSQL, what+": order_lines_order_id_fkey")
	if err := insert(); err != nil {
		t.Errorf("with a key on id alone, Acme's line against Globex's order 4 should be written: %v", err)
	}
	f.admin(t,
		"DELETE FROM order_lines",
		"ALTER TABLE orders ADD UNIQUE (tenant_id, id)",
		"ALTER TABLE order_lines ADD FOREIGN KEY (tenant_id, order_id) REFERENCES orders (tenant_id, id)",
		"ALTER TABLE order_lines DROP CONSTRAINT order_lines_order_id_fkey",
	)
	f.catalogCheck(t, p, what, stackfix.ForeignKeysWithoutTenantSQL, "")
	var pe *pgconn.PgError
	if err := insert(); !errors.As(err, &pe) || pe.Code != "23503" {
		t.Errorf("with the composite key, Acme's line against order 4: %v, want 23503", err)
	}

	// The same tables as TypeORM entities: the schema TypeORM's schema
	// builder generates for them, run as a migration would run it.
	var typeorm struct{ Up []string }
	if !f.node(t, f.lab.Sandbox.AppURL, "typeorm-fk-sql", &typeorm) {
		return
	}
	f.cleanup(t, "DROP TABLE IF EXISTS stackfix_order_lines", "DROP TABLE IF EXISTS stackfix_orders")
	fks := 0
	for _, q := range typeorm.Up {
		if strings.Contains(q, "FOREIGN KEY") {
			fks++
			if !strings.Contains(q, `FOREIGN KEY ("order_id", "tenant_id") REFERENCES "stackfix_orders"("id","tenant_id")`) {
				t.Errorf("TypeORM's foreign key: %s", q)
			}
		}
	}
	if fks != 1 {
		t.Errorf("TypeORM generated %d foreign keys: %q", fks, typeorm.Up)
	}
	f.admin(t, typeorm.Up...)
	f.admin(t,
		"INSERT INTO stackfix_orders SELECT g, 1 + (g - 1) / 3 FROM generate_series(1, 9) g",
		"ALTER TABLE stackfix_orders ENABLE ROW LEVEL SECURITY", "ALTER TABLE stackfix_orders FORCE ROW LEVEL SECURITY",
		"ALTER TABLE stackfix_order_lines ENABLE ROW LEVEL SECURITY", "ALTER TABLE stackfix_order_lines FORCE ROW LEVEL SECURITY",
		"CREATE POLICY tenant_isolation ON stackfix_orders "+policy,
		"CREATE POLICY tenant_isolation ON stackfix_order_lines "+policy,
		"GRANT SELECT ON stackfix_orders TO "+f.app,
		"GRANT SELECT, INSERT ON stackfix_order_lines TO "+f.app,
		"GRANT USAGE ON SEQUENCE stackfix_order_lines_id_seq TO "+f.app,
	)
	f.catalogCheck(t, p, what, stackfix.ForeignKeysWithoutTenantSQL, "")
	err := stackfix.InTenantTx(ctx, p, "1", func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO stackfix_order_lines (tenant_id, order_id) VALUES (1, 4)")
		return err
	})
	if !errors.As(err, &pe) || pe.Code != "23503" {
		t.Errorf("with TypeORM's composite key, Acme's line against order 4: %v, want 23503", err)
	}
}

// psycopgRuns runs lessons/apps/psycopg/plan_cache.py with query against
// the lab as its app role and returns what each execution read, with
// psycopg's Cursor and with its ClientCursor. It skips the test when
// /usr/bin/python3 has no psycopg.
func psycopgRuns(t *testing.T, f *fixture, query string) (cursor, client string) {
	t.Helper()
	script, _ := filepath.Abs("../apps/psycopg/plan_cache.py")
	b, err := exec.CommandContext(f.ctx, "/usr/bin/python3", script, f.lab.Sandbox.AppURL, query).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && strings.Contains(string(ee.Stderr), "No module named 'psycopg'") {
			t.Skip("psycopg is not installed for /usr/bin/python3 (scripts/setup-debian.sh installs python3-psycopg)")
		}
		if errors.As(err, &ee) {
			t.Fatalf("plan_cache.py: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	var r struct {
		Cursor       [][]int `json:"cursor"`
		ClientCursor [][]int `json:"client_cursor"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("plan_cache.py printed %q: %v", b, err)
	}
	return fmt.Sprint(r.Cursor), fmt.Sprint(r.ClientCursor)
}
