package stackfix_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/lessons/stackfix"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// TestMain runs the tests with one shared PostgreSQL. The tests spend most
// of their time waiting for node, python and PostgreSQL, not computing, so
// unless -parallel is given, up to 8 of them run at once instead of
// GOMAXPROCS (2 on a small machine, which ran them nearly one by one).
func TestMain(m *testing.M) {
	flag.Parse()
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if !given {
		if err := flag.Set("test.parallel", "8"); err != nil {
			panic(err)
		}
	}
	pgenvtest.Main(m)
}

// quoted lists, per lesson file, the snippets (of pgx.go and of the node
// app's fixes.js) that the lesson shows and must quote verbatim.
var quoted = map[string][]string{
	"01-set-leak.md":          {"tenant-tx", "tenant-batch", "pg-tenant-tx", "typeorm-tenant-tx"},
	"02-split-calls.md":       {"tenant-tx", "pg-tenant-tx", "typeorm-tenant-tx"},
	"07-reset-on-release.md":  {"guards", "pg-guards", "typeorm-guards"},
	"08-set-role.md":          {"tenant-role", "pg-tenant-role", "typeorm-tenant-role"},
	"10-pgbouncer-tx.md":      {"pgbouncer-config", "tenant-tx", "pg-tenant-tx", "typeorm-tenant-tx"},
	"04-wrong-scope.md":       {"tenant-context", "pg-tenant-context", "typeorm-tenant-context"},
	"03-shared-pool.md":       {"tenant-tx", "pg-tenant-tx", "typeorm-tenant-tx"},
	"05-rls-bypass.md":        {"tenant-tx", "pg-tenant-tx", "typeorm-tenant-tx"},
	"06-unset-setting.md":     {"tenant-tx", "pg-tenant-tx", "typeorm-tenant-tx"},
	"19-missing-rls.md":       {"check-forced-rls", "pg-check-forced-rls", "typeorm-check-forced-rls"},
	"12-reset-scope.md":       {"discard-on-release", "pg-discard", "typeorm-discard"},
	"09-scoping-cost.md":      {"tenant-tx", "tenant-batch", "pg-tenant-tx", "typeorm-tenant-tx"},
	"13-lost-context.md":      {"background-work", "pg-tenant-context", "typeorm-tenant-context"},
	"11-view-bypass.md":       {"check-owner-rights", "catalog-check", "pg-catalog-check", "typeorm-catalog-check"},
	"14-trusted-flag.md":      {"search-param", "pg-search-param", "typeorm-search-param", "not-member", "pg-not-member", "typeorm-not-member"},
	"15-side-channels.md":     {"check-tenant-keys", "catalog-check", "pg-catalog-check", "typeorm-catalog-check", "typeorm-purge"},
	"16-rls-performance.md":   {"check-tenant-indexes", "catalog-check", "explain-as-tenant", "pg-catalog-check", "pg-explain-as-tenant", "typeorm-catalog-check", "typeorm-explain-as-tenant"},
	"17-stale-plan.md":        {"check-immutable-readers", "catalog-check", "pg-catalog-check", "typeorm-catalog-check"},
	"21-schema-per-tenant.md": {"pg-schema-per-tenant", "typeorm-schema-per-tenant"},
	"22-pinned-state.md":      {"pg-pinned-state", "typeorm-pinned-state"},
	"23-orm-transactions.md":  {"tenant-tx", "pg-tenant-tx"},
	"18-your-app.md":          {"tenant-tx", "pg-tenant-tx", "typeorm-tenant-tx"},
	"20-cross-tenant-fk.md":   {"check-tenant-fks", "catalog-check", "pg-catalog-check", "typeorm-composite-fk", "typeorm-catalog-check"},
}

// nodeApp is the directory of the node fixes.
const nodeApp = "../apps/stack-fixes"

// snippets reads the text between "// snippet: NAME" and "// end snippet"
// lines of the file at path, without the blank lines at either end.
func snippets(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	name := ""
	var body []string
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "// snippet: "):
			name, body = strings.TrimPrefix(line, "// snippet: "), nil
		case line == "// end snippet" && name != "":
			out[name] = strings.Trim(strings.Join(body, "\n"), "\n")
			name = ""
		case name != "":
			body = append(body, line)
		}
	}
	return out
}

// TestLessonsQuoteTheTestedFixes checks that each lesson shows its fixes
// for pgx, node-postgres and TypeORM exactly as the code the other tests
// run.
func TestLessonsQuoteTheTestedFixes(t *testing.T) {
	all := snippets(t, "pgx.go")
	for k, v := range snippets(t, filepath.Join(nodeApp, "fixes.js")) {
		all[k] = v
	}
	content := lessons.Content()
	for file, names := range quoted {
		b, err := fs.ReadFile(content, file)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			s, ok := all[n]
			if !ok || s == "" {
				t.Fatalf("no snippet %q", n)
			}
			if !strings.Contains(string(b), s) {
				t.Errorf("%s does not quote the snippet %q as tested:\n%s", file, n, s)
			}
		}
	}
}

// fixture is a lab, its app role's pools, and the test's node process.
type fixture struct {
	t   *testing.T
	lab *sessions.Lab
	ctx context.Context
	// app is the lab's app role, quoted for SQL.
	app      string
	nodeOnce sync.Once
	nodeProc *nodeChecks
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 1})
	lab := sessionstest.MustCreateLab(t, m, "owner")
	// A generous bound for the whole test: the tests run at once, and
	// start node and python, which take seconds each on a loaded machine.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return &fixture{t: t, lab: lab, ctx: ctx, app: pgx.Identifier{lab.Sandbox.AppRole}.Sanitize()}
}

// pool opens a pool of one connection to the lab as its app role.
func (f *fixture) pool(t *testing.T, configure ...func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(f.lab.Sandbox.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	for _, c := range configure {
		c(cfg)
	}
	p, err := pgxpool.NewWithConfig(f.ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// seen is what a query that forgot to scope reads.
type seen struct {
	PID     uint32
	Setting *string
	User    string
	Tenants []int32
}

const observeSQL = `SELECT pg_backend_pid(), current_setting('app.current_tenant', true), current_user::text,
       coalesce(array_agg(tenant_id ORDER BY id), '{}') FROM invoices`

func observe(ctx context.Context, t *testing.T, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) seen {
	t.Helper()
	var s seen
	var pid int32
	if err := q.QueryRow(ctx, observeSQL).Scan(&pid, &s.Setting, &s.User, &s.Tenants); err != nil {
		t.Fatal(err)
	}
	s.PID = uint32(pid)
	return s
}

func ownTenants(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) ([]int32, error) {
	rows, err := q.Query(ctx, "SELECT tenant_id FROM invoices ORDER BY id")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int32])
}

func setting(v *string) string {
	if v == nil {
		return "NULL"
	}
	return "'" + *v + "'"
}

// TestGoFixes runs the pgx fixes against a lab with pools of one
// connection, so that the query after each fix runs on the backend the
// fix used: scoped in a transaction or a batch, Acme reads its 3 rows and
// the next, unscoped query finds the setting empty and no rows (while the
// session-level set_config it replaces leaves Acme's rows to it); the
// guards clear or refuse a connection left scoped; SET LOCAL ROLE leaves
// the connection as the app role.
func TestGoFixes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := f.ctx
	app := f.lab.Sandbox.AppRole

	t.Run("session-set leaks on this lab", func(t *testing.T) {
		p := f.pool(t)
		if _, err := p.Exec(ctx, `SELECT set_config('app.current_tenant', '1', false)`); err != nil {
			t.Fatal(err)
		}
		if s := observe(ctx, t, p); fmt.Sprint(s.Tenants) != "[1 1 1]" {
			t.Errorf("the wrong way should leave Acme's rows to the next query, got %+v", s)
		}
	})
	t.Run("tenant-tx", func(t *testing.T) {
		p := f.pool(t)
		var own []int32
		err := stackfix.InTenantTx(ctx, p, "1", func(tx pgx.Tx) (err error) {
			own, err = ownTenants(ctx, tx)
			return err
		})
		if err != nil || fmt.Sprint(own) != "[1 1 1]" {
			t.Fatalf("InTenantTx: %v %v", own, err)
		}
		if s := observe(ctx, t, p); len(s.Tenants) != 0 || setting(s.Setting) != "''" {
			t.Errorf("after InTenantTx the next query got %v under %s", s.Tenants, setting(s.Setting))
		}
	})
	t.Run("tenant-batch", func(t *testing.T) {
		p := f.pool(t)
		var own []int32
		b := stackfix.TenantBatch("1", func(b *pgx.Batch) {
			b.Queue("SELECT tenant_id FROM invoices ORDER BY id").Query(func(rows pgx.Rows) (err error) {
				own, err = pgx.CollectRows(rows, pgx.RowTo[int32])
				return err
			})
		})
		if err := p.SendBatch(ctx, b).Close(); err != nil || fmt.Sprint(own) != "[1 1 1]" {
			t.Fatalf("TenantBatch: %v %v", own, err)
		}
		if s := observe(ctx, t, p); len(s.Tenants) != 0 || setting(s.Setting) != "''" {
			t.Errorf("after the batch the next query got %v under %s", s.Tenants, setting(s.Setting))
		}
	})
	t.Run("pgbouncer-config", func(t *testing.T) {
		cfg, err := stackfix.BouncerPoolConfig(f.lab.Sandbox.AppURL)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.ConnConfig.DefaultQueryExecMode != pgx.QueryExecModeExec {
			t.Errorf("exec mode %v", cfg.ConnConfig.DefaultQueryExecMode)
		}
		p := f.pool(t, func(c *pgxpool.Config) { c.ConnConfig.DefaultQueryExecMode = cfg.ConnConfig.DefaultQueryExecMode })
		var own []int32
		if err := stackfix.InTenantTx(ctx, p, "2", func(tx pgx.Tx) (err error) { own, err = ownTenants(ctx, tx); return err }); err != nil || fmt.Sprint(own) != "[2 2 2]" {
			t.Fatalf("InTenantTx in exec mode: %v %v", own, err)
		}
		var named int
		if err := p.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_statements").Scan(&named); err != nil || named != 0 {
			t.Errorf("exec mode left %d named prepared statements (%v)", named, err)
		}
	})
	t.Run("reset-on-release", func(t *testing.T) {
		p := f.pool(t, stackfix.ResetOnRelease)
		if _, err := p.Exec(ctx, `SELECT set_config('app.current_tenant', '1', false)`); err != nil {
			t.Fatal(err)
		}
		if s := observe(ctx, t, p); len(s.Tenants) != 0 || setting(s.Setting) != "''" {
			t.Errorf("after a session-level set and the reset, the next query got %v under %s", s.Tenants, setting(s.Setting))
		}
	})
	t.Run("check-before-use", func(t *testing.T) {
		p := f.pool(t, stackfix.CheckBeforeUse)
		var left int32
		if err := p.QueryRow(ctx, `SELECT pg_backend_pid() FROM (SELECT set_config('app.current_tenant', '1', false)) s`).Scan(&left); err != nil {
			t.Fatal(err)
		}
		s := observe(ctx, t, p)
		if s.PID == uint32(left) || s.Setting != nil || len(s.Tenants) != 0 {
			t.Errorf("the connection left scoped (backend %d) was handed out again: %+v", left, s)
		}
	})
	t.Run("tenant-context", func(t *testing.T) {
		p := f.pool(t, func(c *pgxpool.Config) { c.MaxConns = 2 })
		// Two requests in flight at once, each with its own context.
		gate := make(chan struct{})
		got := make([]chan []int32, 2)
		for i, tenant := range []string{"1", "2"} {
			got[i] = make(chan []int32, 1)
			go func(ctx context.Context) {
				<-gate
				var own []int32
				err := stackfix.InRequestTenantTx(ctx, p, func(tx pgx.Tx) (err error) { own, err = ownTenants(ctx, tx); return err })
				if err != nil {
					t.Error(err)
				}
				got[i] <- own
			}(stackfix.WithTenant(ctx, tenant))
		}
		close(gate)
		if a, b := <-got[0], <-got[1]; fmt.Sprint(a) != "[1 1 1]" || fmt.Sprint(b) != "[2 2 2]" {
			t.Errorf("two requests at once: Acme got %v, Globex %v", a, b)
		}
		ran := false
		if err := stackfix.InRequestTenantTx(ctx, p, func(pgx.Tx) error { ran = true; return nil }); !errors.Is(err, stackfix.ErrNoTenant) || ran {
			t.Errorf("a context without a tenant: %v, ran %v; want ErrNoTenant and nothing run", err, ran)
		}
	})
	t.Run("background-work", func(t *testing.T) {
		p := f.pool(t)
		reqCtx, cancel := context.WithCancel(stackfix.WithTenant(ctx, "1"))
		gate := make(chan struct{})
		var own []int32
		done := stackfix.StartForRequest(reqCtx, func(ctx context.Context) error {
			<-gate
			return stackfix.InRequestTenantTx(ctx, p, func(tx pgx.Tx) (err error) { own, err = ownTenants(ctx, tx); return err })
		})
		cancel() // the response has been sent
		close(gate)
		if err := <-done; err != nil || fmt.Sprint(own) != "[1 1 1]" {
			t.Errorf("work started for Acme's request, run after it ended: %v %v", own, err)
		}
		// The request's own context, for contrast, is cancelled by then.
		if err := stackfix.InRequestTenantTx(reqCtx, p, func(pgx.Tx) error { return nil }); !errors.Is(err, context.Canceled) {
			t.Errorf("with the request's cancelled context: %v, want context.Canceled", err)
		}
	})
	t.Run("tenant-role", func(t *testing.T) {
		role := f.tenantRole(t)
		p := f.pool(t)
		var inside seen
		err := stackfix.InTenantRole(ctx, p, role, func(tx pgx.Tx) error { inside = observe(ctx, t, tx); return nil })
		if err != nil || inside.User != role || fmt.Sprint(inside.Tenants) != "[1 1 1]" {
			t.Fatalf("InTenantRole: %+v %v", inside, err)
		}
		if s := observe(ctx, t, p); s.User != app || len(s.Tenants) != 0 {
			t.Errorf("after InTenantRole the next query ran as %s and got %v", s.User, s.Tenants)
		}
	})
}

// tenantRole creates a role for Acme in the lab, as the set-role lesson
// has one (a member role of the app role, with a policy for Acme's rows),
// and drops it when the test ends.
func (f *fixture) tenantRole(t *testing.T) string {
	t.Helper()
	role := "lab_" + f.lab.ID + "_t1"
	q := pgx.Identifier{role}.Sanitize()
	conn, release, err := f.lab.Sandbox.Admin(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	for _, s := range []string{
		"CREATE ROLE " + q + " NOLOGIN NOSUPERUSER NOBYPASSRLS",
		"GRANT USAGE ON SCHEMA public TO " + q,
		"GRANT SELECT ON invoices TO " + q,
		"GRANT " + q + " TO " + pgx.Identifier{f.lab.Sandbox.AppRole}.Sanitize(),
		"CREATE POLICY stackfix_role ON invoices TO " + q + " USING (tenant_id = 1)",
	} {
		if _, err := conn.Exec(f.ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, release, err := f.lab.Sandbox.Admin(ctx)
		if err != nil {
			t.Error(err)
			return
		}
		defer release()
		for _, s := range []string{"DROP POLICY IF EXISTS stackfix_role ON invoices", "DROP OWNED BY " + q, "DROP ROLE IF EXISTS " + q} {
			if _, err := conn.Exec(ctx, s); err != nil {
				t.Errorf("%s: %v", s, err)
			}
		}
	})
	return role
}

// nodeResult is what fixes.js prints for a check.
type nodeResult struct {
	Own   []int `json:"own"`
	After struct {
		Seen    *string `json:"seen"`
		User    string  `json:"user"`
		Tenants []int   `json:"tenants"`
	} `json:"after"`
	Refused    bool   `json:"refused"`
	InsideUser string `json:"inside_user"`
	Other      []int  `json:"other"`
	Wrong      []int  `json:"wrong"`
	Later      []int  `json:"later"`
}

// TestNodeFixes runs the node-postgres and TypeORM fixes of fixes.js
// against a lab, when node and the app's packages are installed.
func TestNodeFixes(t *testing.T) {
	t.Parallel()
	if node, _ := nodeInstalled(); node == "" {
		t.Skip("node or the fixes' packages are not installed, so the node-postgres and TypeORM fixes are not run (scripts/setup-debian.sh installs Node.js and the packages, or npm ci in lessons/apps/stack-fixes)")
	}
	f := newFixture(t)
	role := f.tenantRole(t)
	run := func(t *testing.T, check string) nodeResult {
		t.Helper()
		var r nodeResult
		f.node(t, f.lab.Sandbox.AppURL, check, &r, "role", role)
		return r
	}
	for _, stack := range []string{"pg", "typeorm"} {
		t.Run(stack+"-tenant-context", func(t *testing.T) {
			r := run(t, stack+"-tenant-context")
			if fmt.Sprint(r.Own) != "[1 1 1]" || fmt.Sprint(r.Other) != "[2 2 2]" || fmt.Sprint(r.Later) != "[1 1 1]" || !r.Refused {
				t.Errorf("want Acme's and Globex's own rows at once, Acme's rows after the request, and a refusal without a tenant, got %+v", r)
			}
			if fmt.Sprint(r.Wrong) != "[2 2 2]" {
				t.Errorf("the module-level variable should have given Acme's request Globex's rows, got %v", r.Wrong)
			}
		})
		t.Run(stack+"-tenant-tx", func(t *testing.T) {
			r := run(t, stack+"-tenant-tx")
			if fmt.Sprint(r.Own) != "[1 1 1]" || len(r.After.Tenants) != 0 || r.After.Seen == nil || *r.After.Seen != "" {
				t.Errorf("want Acme's 3 rows, then nothing under '', got %+v", r)
			}
		})
		t.Run(stack+"-guards", func(t *testing.T) {
			r := run(t, stack+"-guards")
			if fmt.Sprint(r.Own) != "[1 1 1]" || len(r.After.Tenants) != 0 || r.After.Seen == nil || *r.After.Seen != "" || !r.Refused {
				t.Errorf("want Acme's 3 rows, the setting reset to '', and the connection left scoped refused, got %+v", r)
			}
		})
		t.Run(stack+"-tenant-role", func(t *testing.T) {
			r := run(t, stack+"-tenant-role")
			if fmt.Sprint(r.Own) != "[1 1 1]" || r.InsideUser != role || r.After.User != f.lab.Sandbox.AppRole || len(r.After.Tenants) != 0 {
				t.Errorf("want Acme's 3 rows as %s, then the app role and nothing, got %+v", role, r)
			}
		})
	}
}

// TestForcedRLSChecks runs the missing-rls lesson's check, in Go and (when
// node is installed) in Node, on a lab as it is (no table found), after a
// table with a tenant_id column and no RLS and a partitioned table with
// RLS on its parent only are added (all three named), and after RLS is
// enabled and forced on each (none found again).
func TestForcedRLSChecks(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := f.ctx
	p := f.pool(t)
	nodeCheck := func(t *testing.T, check string) string {
		t.Helper()
		var r struct{ Error *string }
		if !f.node(t, f.lab.Sandbox.AppURL, check, &r) {
			return "(node not run)"
		}
		if r.Error == nil {
			return ""
		}
		return *r.Error
	}
	admin := func(stmts ...string) {
		t.Helper()
		conn, release, err := f.lab.Sandbox.Admin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		for _, s := range stmts {
			if _, err := conn.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
	}
	t.Cleanup(func() { admin("DROP TABLE IF EXISTS stackfix_notes", "DROP TABLE IF EXISTS stackfix_events CASCADE") })
	check := func(want string) {
		t.Helper()
		got := ""
		if err := stackfix.CheckForcedRLS(ctx, p); err != nil {
			got = err.Error()
		}
		if got != want {
			t.Errorf("Go check: %q, want %q", got, want)
		}
		for _, check := range []string{"pg-check-forced-rls", "typeorm-check-forced-rls"} {
			if n := nodeCheck(t, check); n != want && n != "(node not run)" {
				t.Errorf("%s: %q, want %q", check, n, want)
			}
		}
	}
	check("")
	admin(
		"CREATE TABLE stackfix_notes (id serial PRIMARY KEY, tenant_id int NOT NULL)",
		"CREATE TABLE stackfix_events (tenant_id int NOT NULL, day date NOT NULL) PARTITION BY RANGE (day)",
		"CREATE TABLE stackfix_events_1 PARTITION OF stackfix_events FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')",
		"ALTER TABLE stackfix_events ENABLE ROW LEVEL SECURITY",
		"ALTER TABLE stackfix_events FORCE ROW LEVEL SECURITY",
	)
	check("tables with a tenant_id column and no forced RLS: stackfix_events_1, stackfix_notes")
	var stmts []string
	for _, table := range []string{"stackfix_notes", "stackfix_events_1"} {
		stmts = append(stmts, "ALTER TABLE "+table+" ENABLE ROW LEVEL SECURITY", "ALTER TABLE "+table+" FORCE ROW LEVEL SECURITY")
	}
	admin(stmts...)
	check("")
}

// leftState is what the next request finds of the state a request left on
// its connection (see leaveState).
type leftState struct {
	Tenant        *string `json:"tenant"`
	SearchPath    string  `json:"search_path"`
	Prepared      int     `json:"prepared"`
	Listening     int     `json:"listening"`
	AdvisoryLocks int     `json:"advisory_locks"`
}

var leaveState = []string{
	`SELECT set_config('app.current_tenant', '1', false)`,
	`SET search_path = pg_catalog`,
	`PREPARE leftover AS SELECT 1`,
	`LISTEN leftover`,
	`SELECT pg_advisory_lock(42)`,
}

const leftStateSQL = `SELECT current_setting('app.current_tenant', true), current_setting('search_path'),
  (SELECT count(*)::int FROM pg_prepared_statements WHERE name = 'leftover'),
  (SELECT count(*)::int FROM pg_listening_channels()),
  (SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())`

func (l leftState) clean() bool {
	return l.Tenant != nil && *l.Tenant == "" && l.SearchPath == `"$user", public` && l.Prepared == 0 && l.Listening == 0 && l.AdvisoryLocks == 0
}

// TestDiscardOnRelease runs the reset-scope lesson's fix in Go and (when
// node is installed) in node-postgres and TypeORM: a request leaves a
// session-level tenant, a search_path, a prepared statement, a LISTEN and
// an advisory lock on its connection; after DISCARD ALL on
// release the next request on that backend finds none of them, and pgx's
// queries keep working. Without the reset, for contrast, all five stay.
func TestDiscardOnRelease(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := f.ctx
	read := func(p *pgxpool.Pool) leftState {
		t.Helper()
		var l leftState
		if err := p.QueryRow(ctx, leftStateSQL).Scan(&l.Tenant, &l.SearchPath, &l.Prepared, &l.Listening, &l.AdvisoryLocks); err != nil {
			t.Fatal(err)
		}
		return l
	}
	leave := func(p *pgxpool.Pool) {
		t.Helper()
		c, err := p.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Release()
		for _, s := range leaveState {
			if _, err := c.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
	}
	plain := f.pool(t)
	leave(plain)
	if l := read(plain); l.clean() || l.Prepared != 1 || l.Listening != 1 || l.AdvisoryLocks != 1 {
		t.Errorf("without a reset the next request should find everything, found %+v", l)
	}
	plain.Close()

	p := f.pool(t, stackfix.DiscardOnRelease)
	leave(p)
	for i := 0; i < 3; i++ { // and again: no statement of pgx's went missing
		if l := read(p); !l.clean() {
			t.Errorf("after DISCARD ALL on release the next request found %+v", l)
		}
	}

	if node, _ := nodeInstalled(); node == "" {
		t.Skip("node or the fixes' packages are not installed: the node-postgres and TypeORM versions are not run (scripts/setup-debian.sh installs them)")
	}
	for _, check := range []string{"pg-discard", "typeorm-discard"} {
		var r struct{ Left leftState }
		if f.node(t, f.lab.Sandbox.AppURL, check, &r); !r.Left.clean() {
			t.Errorf("%s: the next request found %+v", check, r.Left)
		}
	}
}
