package lessons_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
)

// claimsSession is what a claims test runs its statements on.
type claimsSession struct {
	t *testing.T
	// ctx bounds the test to a minute.
	ctx context.Context
	// pool is the test run's server.
	pool *pgxpool.Pool
	// conn is a connection taken out of pool for good: the test leaves
	// roles, settings and temporary tables on it, so it is closed at the
	// end, never given back.
	conn *pgx.Conn
	// name is a prefix and random hex digits, unique to this run, for the
	// names of the roles and schemas the test creates.
	name  string
	drops []string
}

// newClaimsSession returns a claimsSession whose name starts with prefix.
// When the test ends, its connection is closed and then the statements
// given to dropAtEnd run on the pool.
func newClaimsSession(t *testing.T, prefix string) *claimsSession {
	t.Helper()
	pool := pgenvtest.MustConnect(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := &claimsSession{t: t, ctx: ctx, pool: pool, conn: conn.Hijack(), name: prefix + hex.EncodeToString(b)}
	t.Cleanup(func() {
		ctx := context.Background()
		s.conn.Close(ctx)
		for _, stmt := range s.drops {
			if _, err := pool.Exec(ctx, stmt); err != nil {
				t.Logf("cleanup %s: %v", stmt, err)
			}
		}
	})
	return s
}

// exec runs sql on the session's connection and ends the test on an error.
func (s *claimsSession) exec(sql string) {
	s.t.Helper()
	if _, err := s.conn.Exec(s.ctx, sql); err != nil {
		s.t.Fatalf("%s: %v", sql, err)
	}
}

// dropAtEnd adds statements for the end of the test, run in order on the
// pool after the connection is closed; an error is logged.
func (s *claimsSession) dropAtEnd(stmts ...string) {
	s.drops = append(s.drops, stmts...)
}

// TestClaimsTheScenariosDoNotRun checks, on a real server, the claims the
// lessons make in prose and psql snippets that no scenario runs: what
// row_security = off does, rolbypassrls of a role created SUPERUSER, what
// RESET ALL leaves in place, and SQL injection under the extended protocol.
func TestClaimsTheScenariosDoNotRun(t *testing.T) {
	cs := newClaimsSession(t, "claims_")
	ctx, c, exec, p := cs.ctx, cs.conn, cs.exec, cs.name
	ident := func(s string) string { return pgx.Identifier{p + "_" + s}.Sanitize() }
	app, su, byp, owner, schema := ident("app"), ident("su"), ident("byp"), ident("owner"), ident("s")
	cs.dropAtEnd("DROP SCHEMA IF EXISTS "+schema+" CASCADE",
		"DROP ROLE IF EXISTS "+app, "DROP ROLE IF EXISTS "+su, "DROP ROLE IF EXISTS "+byp, "DROP ROLE IF EXISTS "+owner)
	for _, s := range []string{
		"CREATE ROLE " + owner + " NOLOGIN",
		"CREATE ROLE " + app + " NOLOGIN NOSUPERUSER NOBYPASSRLS",
		"CREATE ROLE " + su + " NOLOGIN SUPERUSER",
		"CREATE ROLE " + byp + " NOLOGIN BYPASSRLS",
		"CREATE SCHEMA " + schema + " AUTHORIZATION " + owner,
		"GRANT USAGE ON SCHEMA " + schema + " TO " + app + ", " + byp,
		"CREATE TABLE " + schema + ".invoices (id serial PRIMARY KEY, tenant_id int NOT NULL, customer text NOT NULL)",
		"ALTER TABLE " + schema + ".invoices OWNER TO " + owner,
		"INSERT INTO " + schema + ".invoices (tenant_id, customer) SELECT t, 'c' || t || '-' || i FROM generate_series(1, 3) t, generate_series(1, 3) i",
		"ALTER TABLE " + schema + ".invoices ENABLE ROW LEVEL SECURITY",
		"ALTER TABLE " + schema + ".invoices FORCE ROW LEVEL SECURITY",
		"CREATE POLICY tenant_isolation ON " + schema + ".invoices USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::int)",
		"GRANT SELECT ON " + schema + ".invoices TO " + app + ", " + byp,
		"SET search_path = " + schema,
	} {
		exec(s)
	}
	count := func(role string) (int, error) {
		t.Helper()
		exec("SET ROLE " + role)
		defer exec("RESET ROLE")
		var n int
		err := c.QueryRow(ctx, "SELECT count(*) FROM invoices").Scan(&n)
		return n, err
	}

	// 05: a role created SUPERUSER shows rolbypassrls = false; the
	// bootstrap superuser shows true.
	var suBypass, bootBypass bool
	if err := c.QueryRow(ctx, "SELECT rolbypassrls FROM pg_roles WHERE rolname = $1", p+"_su").Scan(&suBypass); err != nil {
		t.Fatal(err)
	}
	if err := c.QueryRow(ctx, "SELECT rolbypassrls FROM pg_roles WHERE oid = 10").Scan(&bootBypass); err != nil {
		t.Fatal(err)
	}
	if suBypass || !bootBypass {
		t.Errorf("rolbypassrls: SUPERUSER role %v, bootstrap superuser %v; the lesson says false, true", suBypass, bootBypass)
	}

	// 05: row_security = off changes nothing for roles that bypass RLS, and
	// turns a filtered query into 42501 for a role that RLS filters.
	exec("SELECT set_config('app.current_tenant', '1', false)")
	exec("SET row_security = off")
	for _, r := range []string{su, byp} {
		if n, err := count(r); err != nil || n != 9 {
			t.Errorf("%s with row_security = off: %d rows, %v; want all 9", r, n, err)
		}
	}
	var pe *pgconn.PgError
	if n, err := count(app); !errors.As(err, &pe) || pe.Code != "42501" || !strings.Contains(pe.Message, "query would be affected by row-level security policy") {
		t.Errorf("app role with row_security = off: %d rows, %v; want 42501", n, err)
	}
	exec("RESET row_security")
	if n, err := count(app); err != nil || n != 3 {
		t.Errorf("app role: %d rows, %v; want Acme's 3", n, err)
	}

	// 07: RESET ALL resets the tenant setting but leaves SET ROLE and SET
	// SESSION AUTHORIZATION; RESET ROLE and DISCARD ALL undo the role.
	var who, setting string
	exec("SET ROLE " + app)
	exec("RESET ALL")
	if err := c.QueryRow(ctx, "SELECT current_user, coalesce(current_setting('app.current_tenant', true), 'NULL')").Scan(&who, &setting); err != nil {
		t.Fatal(err)
	}
	if who != p+"_app" || setting != "" {
		t.Errorf("after SET ROLE; RESET ALL: current_user %q, setting %q; want the app role and ''", who, setting)
	}
	exec("RESET ROLE")
	exec("SET SESSION AUTHORIZATION " + app)
	exec("RESET ALL")
	if err := c.QueryRow(ctx, "SELECT session_user").Scan(&who); err != nil || who != p+"_app" {
		t.Errorf("after SET SESSION AUTHORIZATION; RESET ALL: session_user %q, %v; want the app role", who, err)
	}
	exec("RESET SESSION AUTHORIZATION")
	exec("SET ROLE " + app)
	if _, err := c.Exec(ctx, "DISCARD ALL"); err != nil {
		t.Fatal(err)
	}
	// DISCARD ALL also dropped the statements pgx prepared: forget them.
	if err := c.DeallocateAll(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.QueryRow(ctx, "SELECT current_user::text").Scan(&who); err != nil || who == p+"_app" {
		t.Errorf("after SET ROLE; DISCARD ALL: current_user %q, %v; want the role undone", who, err)
	}
	exec("SET search_path = " + schema)

	// 08: under the extended protocol a multi-statement injection fails, but
	// one injected expression switches the tenant for the rest of the session.
	search := func(term string) (rows int, tenants map[int]bool, err error) {
		// What a vulnerable app does: paste the term into the SQL text.
		sql := "SELECT tenant_id FROM invoices WHERE customer ILIKE '%" + term + "%'"
		tenants = map[int]bool{}
		r, err := c.Query(ctx, sql) // pgx's default mode: the extended protocol
		if err != nil {
			return 0, nil, err
		}
		for r.Next() {
			var id int
			if err := r.Scan(&id); err != nil {
				return 0, nil, err
			}
			rows++
			tenants[id] = true
		}
		return rows, tenants, r.Err()
	}
	exec("SET ROLE " + app)
	exec("BEGIN")
	exec("SELECT set_config('app.current_tenant', '1', true)")
	if _, _, err := search("'; SELECT set_config('app.current_tenant','2',false); --"); !errors.As(err, &pe) || pe.Code != "42601" ||
		!strings.Contains(pe.Message, "cannot insert multiple commands into a prepared statement") {
		t.Errorf("multi-statement injection under the extended protocol: %v; want 42601 cannot insert multiple commands", err)
	}
	exec("ROLLBACK")
	exec("BEGIN")
	exec("SELECT set_config('app.current_tenant', '1', true)")
	_, tenants, err := search("x' OR set_config('app.current_tenant','2',false) IS NULL OR customer ILIKE '")
	if err != nil || !tenants[2] {
		t.Errorf("single-expression injection under the extended protocol: tenants %v, %v; want Globex's rows among them", tenants, err)
	}
	exec("COMMIT")
	if err := c.QueryRow(ctx, "SELECT current_setting('app.current_tenant', true)").Scan(&setting); err != nil || setting != "2" {
		t.Errorf("after the injected request committed: setting %q, %v; want '2' left on the session", setting, err)
	}
	if _, tenants, err := search(""); err != nil || len(tenants) != 1 || !tenants[2] {
		t.Errorf("the next query on that session: tenants %v, %v; want only Globex's", tenants, err)
	}
	exec("RESET ROLE")
	exec("RESET app.current_tenant")
}
