package lessons_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// The fixes lessons 21 and 22 show in Go are the functions between the
// fix:begin and fix:end lines below; TestFixSnippetsAreInTheLessons checks
// each lesson shows them as they are here. Their node-postgres fixes are the
// pg-schema-per-tenant and pg-pinned-state snippets of
// lessons/apps/stack-fixes/fixes.js, which lessons/stackfix runs and checks
// against the lessons too. The other tests run both against a lab.

// fix:begin schema-per-tenant
// withTenantSchema runs fn in a transaction whose search_path is the
// tenant's schema, then public. set_config(..., true) is SET LOCAL: the
// path ends with the transaction, so the connection goes back to the pool
// with the default path.
func withTenantSchema(ctx context.Context, pool *pgxpool.Pool, schema string, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		path := pgx.Identifier{schema}.Sanitize() + ", public"
		if _, err := tx.Exec(ctx, "SELECT set_config('search_path', $1, true)", path); err != nil {
			return err
		}
		return fn(tx)
	})
}

// fix:end schema-per-tenant

// fix:begin pinned-state
// report fills a temp table for one tenant and reads it, holding the
// tenant's numbering lock. The table (ON COMMIT DROP) and the lock
// (pg_advisory_xact_lock) both end with the transaction, on every path:
// nothing of them stays on the pooled connection.
func report(ctx context.Context, pool *pgxpool.Pool, tenant string) ([]int32, error) {
	var ids []int32
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT set_config('app.current_tenant', $1, true)", tenant); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(4242, $1::int)", tenant); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "CREATE TEMP TABLE report (tenant_id int, customer text) ON COMMIT DROP"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO report SELECT tenant_id, customer FROM invoices"); err != nil {
			return err
		}
		rows, _ := tx.Query(ctx, "SELECT tenant_id FROM report")
		var err error
		ids, err = pgx.CollectRows(rows, pgx.RowTo[int32])
		return err
	})
	return ids, err
}

// listen keeps a connection of its own for LISTEN, opened straight to
// PostgreSQL (not through PgBouncer in transaction mode), and calls
// onInvoice with each notification's payload until ctx ends; ready is
// called once the LISTEN is in place.
func listen(ctx context.Context, directURL string, ready func(), onInvoice func(payload string)) error {
	conn, err := pgx.Connect(ctx, directURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN invoices_ready"); err != nil {
		return err
	}
	ready()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		onInvoice(n.Payload)
	}
}

// fix:end pinned-state

// snippet returns the lines of file between "// fix:begin name" and
// "// fix:end name", without a trailing blank line.
func snippet(t *testing.T, file, name string) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	begin, end := "// fix:begin "+name, "// fix:end "+name
	var lines []string
	in, found := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		switch l := sc.Text(); {
		case l == begin:
			in, found = true, true
		case l == end:
			in = false
		case in:
			lines = append(lines, l)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !found || in {
		t.Fatalf("%s: no complete %q ... %q block", file, begin, end)
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return strings.Join(lines, "\n")
}

// lessonText returns the Markdown of the lesson whose file name starts
// with prefix.
func lessonText(t *testing.T, prefix string) string {
	t.Helper()
	names, err := fs.Glob(lessons.Content(), prefix+"*.md")
	if err != nil || len(names) != 1 {
		t.Fatalf("lesson %s*: %v %v", prefix, names, err)
	}
	b, err := fs.ReadFile(lessons.Content(), names[0])
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestFixSnippetsAreInTheLessons checks that lessons 21 and 22 show the Go
// fixes exactly as the tests below run them (lessons/stackfix's
// TestLessonsQuoteTheTestedFixes does the same for the Node ones).
func TestFixSnippetsAreInTheLessons(t *testing.T) {
	for _, c := range []struct{ lesson, name string }{{"21-", "schema-per-tenant"}, {"22-", "pinned-state"}} {
		if s := snippet(t, "fixes_test.go", c.name); !strings.Contains(lessonText(t, c.lesson), s) {
			t.Errorf("lesson %s does not show the Go fix %s as it runs:\n%s", c.lesson, c.name, s)
		}
	}
}

// fixLab opens a lab for the fix tests and returns it with a superuser
// exec on its database (as the lab's owner when asOwner).
func fixLab(t *testing.T) (*sessions.Lab, func(asOwner bool, stmts ...string)) {
	t.Helper()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 1, Catalog: scenarios.DefaultCatalog()})
	lab := sessionstest.MustCreateLab(t, m, "owner")
	exec := func(asOwner bool, stmts ...string) {
		t.Helper()
		ctx := context.Background()
		conn, release, err := lab.Sandbox.Admin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if asOwner {
			stmts = append([]string{"SET LOCAL ROLE " + pgx.Identifier{lab.Sandbox.OwnerRole}.Sanitize()}, stmts...)
		}
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return lab, exec
}

// onePool opens a pool of one connection to url, closed when the test
// ends, and returns it with a context that bounds the test to a minute.
func onePool(t *testing.T, url string) (context.Context, *pgxpool.Pool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return ctx, pool
}

// runNode runs the check of lessons/apps/stack-fixes/fixes.js against url
// and decodes the JSON it prints into out; it skips the test without Node
// or the app's packages.
func runNode(t *testing.T, check, url string, out any) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed (scripts/setup-debian.sh installs it)")
	}
	dir, _ := filepath.Abs(filepath.Join("apps", "stack-fixes"))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "typeorm")); err != nil {
		t.Skip("the fixes' packages are not installed: run scripts/setup-debian.sh (npm ci in lessons/apps/stack-fixes)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "fixes.js", "--url", url, "--check", check)
	cmd.Dir = dir
	b, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("node fixes.js --check %s: %v\n%s", check, err, ee.Stderr)
		}
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("node fixes.js --check %s printed %q: %v", check, b, err)
	}
}

// TestSchemaPerTenantFix runs lesson 21's fix in Go and in Node on a pool
// of one connection: Acme's request reads tenant_acme, a request that sets
// no schema afterwards finds no tickets table (42P01) instead of Acme's,
// and Globex's request reads tenant_globex.
func TestSchemaPerTenantFix(t *testing.T) {
	lab, exec := fixLab(t)
	app := pgx.Identifier{lab.Sandbox.AppRole}.Sanitize()
	for i, schema := range []string{"tenant_acme", "tenant_globex"} {
		exec(true,
			"CREATE SCHEMA "+schema,
			"CREATE TABLE "+schema+".tickets (id serial PRIMARY KEY, tenant_id int NOT NULL)",
			"INSERT INTO "+schema+".tickets (tenant_id) SELECT "+[]string{"1", "2"}[i]+" FROM generate_series(1, 3)",
			"GRANT USAGE ON SCHEMA "+schema+" TO "+app,
			"GRANT SELECT ON "+schema+".tickets TO "+app)
	}
	want := func(lang string, acme, forgot, globex []int32, code string) {
		t.Helper()
		if !slices.Equal(acme, []int32{1, 1, 1}) || !slices.Equal(globex, []int32{2, 2, 2}) || len(forgot) != 0 || code != "42P01" {
			t.Errorf("%s: Acme got %v, the request without a schema %v (%s), Globex %v; want Acme's 3, an error 42P01, Globex's 3", lang, acme, forgot, code, globex)
		}
	}
	t.Run("go", func(t *testing.T) {
		ctx, pool := onePool(t, lab.Sandbox.AppURL)
		read := func(q interface {
			Query(context.Context, string, ...any) (pgx.Rows, error)
		}) ([]int32, error) {
			rows, _ := q.Query(ctx, "SELECT tenant_id FROM tickets ORDER BY id")
			return pgx.CollectRows(rows, pgx.RowTo[int32])
		}
		var acme, forgot, globex []int32
		if err := withTenantSchema(ctx, pool, "tenant_acme", func(tx pgx.Tx) (err error) { acme, err = read(tx); return err }); err != nil {
			t.Fatal(err)
		}
		forgot, ferr := read(pool)
		var pe *pgconn.PgError
		code := ""
		if errors.As(ferr, &pe) {
			code = pe.Code
		}
		if err := withTenantSchema(ctx, pool, "tenant_globex", func(tx pgx.Tx) (err error) { globex, err = read(tx); return err }); err != nil {
			t.Fatal(err)
		}
		want("go", acme, forgot, globex, code)
	})
	t.Run("node", func(t *testing.T) {
		var out struct {
			Acme, Globex []int32
			Forgot       json.RawMessage
		}
		runNode(t, "pg-schema-per-tenant", lab.Sandbox.AppURL, &out)
		var forgot []int32
		var failed struct{ Code string }
		if err := json.Unmarshal(out.Forgot, &forgot); err != nil {
			if err := json.Unmarshal(out.Forgot, &failed); err != nil {
				t.Fatalf("node printed forgot=%s", out.Forgot)
			}
		}
		want("node", out.Acme, forgot, out.Globex, failed.Code)
	})
}

// TestPinnedStateFix runs lesson 22's fixes in Go and in Node: on a pool of
// one connection Acme's report and then Globex's each read their own 3
// rows and leave no temp table and no advisory lock behind; a listener on
// a connection of its own hears a notification sent through the pool.
func TestPinnedStateFix(t *testing.T) {
	lab, exec := fixLab(t)
	db, app := pgx.Identifier{lab.Sandbox.Database}.Sanitize(), pgx.Identifier{lab.Sandbox.AppRole}.Sanitize()
	exec(false, "GRANT TEMPORARY ON DATABASE "+db+" TO "+app)
	type left struct {
		Temp  bool
		Locks int
	}
	want := func(lang string, acme, globex []int32, l left, heard string) {
		t.Helper()
		if !slices.Equal(acme, []int32{1, 1, 1}) || !slices.Equal(globex, []int32{2, 2, 2}) || l.Temp || l.Locks != 0 || heard != "1" {
			t.Errorf("%s: Acme got %v, Globex %v, left %+v, the listener heard %q; want 3 rows each, nothing left, '1' heard", lang, acme, globex, l, heard)
		}
	}
	t.Run("go", func(t *testing.T) {
		ctx, pool := onePool(t, lab.Sandbox.AppURL)
		acme, err := report(ctx, pool, "1")
		if err != nil {
			t.Fatal(err)
		}
		globex, err := report(ctx, pool, "2")
		if err != nil {
			t.Fatal(err)
		}
		var l left
		if err := pool.QueryRow(ctx, `SELECT to_regclass('pg_temp.report') IS NOT NULL,
			(SELECT count(*)::int FROM pg_locks l JOIN pg_database d ON d.oid = l.database
			  WHERE l.locktype = 'advisory' AND d.datname = current_database())`).Scan(&l.Temp, &l.Locks); err != nil {
			t.Fatal(err)
		}
		lctx, stop := context.WithCancel(ctx)
		ready, heard, done := make(chan struct{}), make(chan string, 1), make(chan error, 1)
		go func() {
			done <- listen(lctx, lab.Sandbox.AppURL, func() { close(ready) }, func(p string) { heard <- p })
		}()
		var payload string
		select {
		case <-ready:
			if _, err := pool.Exec(ctx, "NOTIFY invoices_ready, '1'"); err != nil {
				t.Fatal(err)
			}
			select {
			case payload = <-heard:
			case <-ctx.Done():
			}
		case err := <-done:
			t.Fatalf("listen: %v", err)
		}
		stop()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("listen ended with %v, want context.Canceled", err)
		}
		want("go", acme, globex, l, payload)
	})
	t.Run("node", func(t *testing.T) {
		var out struct {
			Acme, Globex []int32
			Left         left
			Notified     string
		}
		runNode(t, "pg-pinned-state", lab.Sandbox.AppURL, &out)
		want("node", out.Acme, out.Globex, out.Left, out.Notified)
	})
}
