package sessions

import (
	"strings"
	"testing"
)

const guardApp = "lab_ab12cd34_app"

func guardTenantRole(name string) bool { return name == "lab_ab12cd34_t1" }

func TestCheckSQL(t *testing.T) {
	refused := []string{
		"SELECT pg_read_file('/etc/passwd')",
		"select PG_READ_FILE('/etc/passwd')",
		`SELECT "pg_read_file"('/etc/passwd')`,
		"SELECT pg_catalog.pg_read_binary_file('/etc/passwd')",
		"SELECT pg_ls_dir('.')",
		"SELECT lo_import('/etc/passwd')",
		"COPY invoices TO PROGRAM 'id'",
		"/* c */ copy invoices from '/etc/passwd'",
		"-- comment\nCOPY invoices TO STDOUT",
		"LISTEN x",
		"NOTIFY x, 'y'",
		"SELECT pg_notify('x', 'y')",
		"SELECT pg_advisory_lock(1)",
		"SELECT pg_try_advisory_lock_shared(1)",
		"SELECT pg_terminate_backend(1)",
		"SELECT pg_cancel_backend(1)",
		"DROP TABLE invoices",
		"drop policy tenant_isolation on invoices",
		"TRUNCATE invoices",
		"ALTER TABLE invoices DISABLE ROW LEVEL SECURITY",
		"ALTER ROLE lab_ab12cd34_app BYPASSRLS",
		"CREATE EXTENSION dblink",
		"GRANT ALL ON invoices TO PUBLIC",
		"SET ROLE lab_ab12cd34_owner",
		`SET ROLE "lab_ab12cd34_owner"`,
		"SET LOCAL ROLE postgres",
		"SET SESSION ROLE postgres",
		"SET SESSION AUTHORIZATION postgres",
		"SET ROLE 'postgres'",
		`SET "role" = 'postgres'`,
		`SET "ROLE" = 'postgres'`,
		"SET role TO postgres",
		"set session_authorization = postgres",
		"SELECT set_config('role', 'postgres', false)",
		"SELECT set_config('ROLE ', 'postgres', false)",
		"SELECT set_config('ro' || 'le', 'postgres', false)",
		"SELECT 1; SELECT pg_sleep(1); LISTEN x",
		"DO $$ BEGIN PERFORM pg_advisory_lock(1); END $$",
		"DO $body$ BEGIN EXECUTE 'SELECT pg_notify(''x'', ''y'')'; END $body$",
		"DO E'BEGIN PERFORM pg_read_file(\\'/etc/passwd\\'); END'",
		"(COPY invoices TO STDOUT)",
	}
	for _, sql := range refused {
		if r := checkSQL(sql, guardApp, guardTenantRole); r == nil {
			t.Errorf("allowed: %s", sql)
		} else if !strings.HasPrefix(r.Error(), "refused by rlslab: ") {
			t.Errorf("%s: %q", sql, r.Error())
		}
	}
	allowed := []string{
		"",
		"SELECT * FROM invoices",
		"SET app.current_tenant = '2'",
		"SET app.current_tenant TO 'anything at all'",
		"SELECT set_config('app.current_tenant', '3', false)",
		"SET statement_timeout = 0",
		"RESET ROLE",
		"RESET ALL; DISCARD ALL",
		"SET ROLE lab_ab12cd34_app",
		`SET ROLE "lab_ab12cd34_app"`,
		"SET LOCAL ROLE lab_ab12cd34_t1",
		"SET ROLE NONE",
		"SET role TO lab_ab12cd34_app",
		`SET "role" = 'lab_ab12cd34_app'`,
		"SET SESSION AUTHORIZATION DEFAULT",
		"BEGIN; SELECT set_config('app.current_tenant', '1', true); SELECT * FROM invoices; COMMIT",
		"SELECT 'pg_read_file is just a word here'",
		"SELECT 'DROP TABLE invoices'",
		"-- DROP TABLE invoices\nSELECT 1",
		"/* LISTEN x /* nested */ still a comment */ SELECT 1",
		`SELECT 1 AS "copy"`,
		"SELECT pg_sleep(1)",
		"DO $$ BEGIN LOOP END LOOP; END $$",
		"UPDATE invoices SET amount = amount + 1",
		"SELECT pg_advisory_xact_lock(1)",
		"EXPLAIN ANALYZE SELECT * FROM invoices",
		"SELECT $1",
		"SELECT a$b FROM (SELECT 1 AS a$b) x",
	}
	for _, sql := range allowed {
		if r := checkSQL(sql, guardApp, guardTenantRole); r != nil {
			t.Errorf("refused %q: %v", sql, r)
		}
	}
}

func TestCheckReadOnly(t *testing.T) {
	for _, sql := range []string{"SELECT 1", "with x as (select 1) select * from x", "SHOW ALL", "TABLE invoices", "  -- hi\n values (1)"} {
		if r := checkReadOnly(sql); r != nil {
			t.Errorf("refused %q: %v", sql, r)
		}
	}
	for _, sql := range []string{"SELECT 1; SELECT 2", "UPDATE invoices SET amount = 0", "SET app.current_tenant = '1'", "SELECT set_config('app.current_tenant', '1', false)", "SELECT nextval('invoices_id_seq')", "COMMIT", ""} {
		if r := checkReadOnly(sql); r == nil {
			t.Errorf("allowed %q", sql)
		}
	}
}

func TestLexSQL(t *testing.T) {
	st := lexSQL("SELECT 'a;b', \"x;\"\"y\", $t$c;d$t$, E'e\\';f' -- g;h\n; /* i; /* j; */ k; */ SELECT 2")
	if len(st) != 2 {
		t.Fatalf("%d statements, want 2: %+v", len(st), st)
	}
	want := []sqlToken{{tokWord, "select"}, {tokString, "a;b"}, {tokPunct, ","}, {tokIdent, `x;"y`}, {tokPunct, ","}, {tokString, "c;d"}, {tokPunct, ","}, {tokString, "e';f"}}
	if len(st[0]) != len(want) {
		t.Fatalf("tokens %+v, want %+v", st[0], want)
	}
	for i := range want {
		if st[0][i] != want[i] {
			t.Errorf("token %d: %+v, want %+v", i, st[0][i], want[i])
		}
	}
}

// FuzzCheckSQL feeds the guard arbitrary text: it never panics, never
// loops, and a statement it refuses is still refused behind a comment, a
// leading semicolon or another statement.
func FuzzCheckSQL(f *testing.F) {
	for _, s := range []string{
		"SELECT pg_read_file('/etc/passwd')", "COPY x TO PROGRAM 'id'", "DO $$ BEGIN PERFORM pg_advisory_lock(1); END $$",
		"SET ROLE postgres", "SELECT 1", "SET app.current_tenant = '1'", "/* /* */ */ LISTEN x", "$a$ $b$ $a$", "E'\\\\'", `U&"\0041"`,
		"SELECT set_config('role', 'x', false)", "'unterminated", "\"unterminated", "/* unterminated",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		r := checkSQL(sql, guardApp, guardTenantRole)
		_ = checkReadOnly(sql)
		if mayChangeRows(sql) && !mayChangeRows("SELECT 1;\n"+sql) {
			t.Fatalf("%q may change rows but not after another statement", sql)
		}
		if r == nil {
			return
		}
		for _, wrapped := range []string{"/* c */ " + sql, ";" + sql, "SELECT 1;\n" + sql} {
			if checkSQL(wrapped, guardApp, guardTenantRole) == nil {
				t.Fatalf("%q is refused but %q is not", sql, wrapped)
			}
		}
	})
}

// TestMayChangeRows checks which free-play SQL marks the lab's rows as
// changed (and puts them back before the next run).
func TestMayChangeRows(t *testing.T) {
	for sql, want := range map[string]bool{
		"SELECT * FROM invoices":                                false,
		"SELECT 'delete from invoices'":                         false,
		"-- delete\nSELECT 1":                                   false,
		"SET app.current_tenant = '2'":                          false,
		"EXPLAIN ANALYZE SELECT * FROM invoices":                false,
		"DELETE FROM invoices":                                  true,
		"select 1; update invoices set amount = 0":              true,
		"WITH d AS (DELETE FROM invoices RETURNING *) SELECT 1": true,
		"DO $$ BEGIN DELETE FROM invoices; END $$":              true,
		"SELECT nextval('invoices_id_seq')":                     true,
		"TRUNCATE invoices":                                     true,
		"INSERT INTO invoices (tenant_id) VALUES (1)":           true,
	} {
		if got := mayChangeRows(sql); got != want {
			t.Errorf("mayChangeRows(%q) = %v, want %v", sql, got, want)
		}
	}
	for tag, want := range map[string]bool{
		"SELECT 3": false, "INSERT 0 1": true, "INSERT 0 0": false, "UPDATE 0": false, "UPDATE 2": true,
		"DELETE 3": true, "TRUNCATE TABLE": true, "MERGE 1": true, "SET": false, "": false,
	} {
		if got := tagChangedRows(tag); got != want {
			t.Errorf("tagChangedRows(%q) = %v, want %v", tag, got, want)
		}
	}
}
