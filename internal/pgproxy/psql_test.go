package pgproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

const psqlBin = "/usr/bin/psql"

// psqlScript exercises what psql sends: simple queries, several statements
// in one message, errors, COPY in and out, transactions with SET LOCAL,
// PREPARE/EXECUTE and extended-protocol \bind.
const psqlScript = `SELECT count(*) FROM items;
SET app.current_tenant = '1';
SELECT id, tenant_id, name FROM items ORDER BY id;
SELECT 1/0;
SELECT 'after error';
BEGIN;
SET LOCAL app.current_tenant = '2';
SELECT id, tenant_id FROM items ORDER BY id;
COMMIT;
SELECT current_setting('app.current_tenant');
COPY notes (tenant_id, body) FROM STDIN;
1	first
2	second
\.
COPY (SELECT * FROM notes ORDER BY body) TO STDOUT;
\copy notes (tenant_id, body) from stdin
3	third
\.
\copy (SELECT * FROM notes ORDER BY body) to stdout
PREPARE q(int) AS SELECT id FROM items WHERE id > $1 ORDER BY id;
EXECUTE q(2);
SELECT 21 * 2 AS doubled;
SELECT 1; SELECT 2; SELECT set_config('app.current_tenant', '3', false);
SELECT id FROM items ORDER BY id;
DISCARD ALL;
SELECT count(*) FROM items;
`

// runPsql runs psql with the script on a connection URL.
func runPsql(t *testing.T, connURL, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, psqlBin, "-X", "-A", "-f", path, connURL)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=20")
	out, err := cmd.CombinedOutput()
	if err != nil && ctx.Err() != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	return string(out)
}

func requirePsql(t *testing.T) {
	if _, err := os.Stat(psqlBin); err != nil {
		t.Skip("no psql at " + psqlBin + ": install postgresql-client to run this test")
	}
}

// psql's output for a script through the proxy (over TLS) is the same as
// direct.
func TestPsqlSameAsDirect(t *testing.T) {
	t.Parallel()
	requirePsql(t)
	f := newFixture(t, nil)
	path := filepath.Join(t.TempDir(), "script.sql")
	if err := os.WriteFile(path, []byte(psqlScript), 0o600); err != nil {
		t.Fatal(err)
	}
	want := runPsql(t, f.directURL, path)
	if _, err := f.admin.Exec(context.Background(), "TRUNCATE "+f.schema+".notes"); err != nil {
		t.Fatal(err)
	}
	got := runPsql(t, f.url(clientPassword, labDB, "require"), path)
	if got != want {
		t.Errorf("psql through the proxy:\n%s\ndirect:\n%s", got, want)
	}
	if !strings.Contains(want, "after error") || !strings.Contains(want, "second") || !strings.Contains(want, "doubled") {
		t.Errorf("the script did not run as meant:\n%s", want)
	}
}

// A psql session that runs SET app.current_tenant = '1' shows its PID
// holding 1, read by the probe, within a second.
func TestPsqlSetShowsWithinASecond(t *testing.T) {
	requirePsql(t)
	f := newFixture(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, psqlBin, "-X", "-A", "-t", "-q", f.proxyURL)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}()
	lines := bufio.NewScanner(stdout)
	if _, err := io.WriteString(stdin, "SELECT pg_backend_pid();\n"); err != nil {
		t.Fatal(err)
	}
	if !lines.Scan() {
		t.Fatal("psql printed no PID")
	}
	pid64, err := strconv.ParseUint(strings.TrimSpace(lines.Text()), 10, 32)
	if err != nil {
		t.Fatalf("pid %q: %v", lines.Text(), err)
	}
	pid := uint32(pid64)
	start := time.Now()
	if _, err := io.WriteString(stdin, "SET app.current_tenant = '1';\n"); err != nil {
		t.Fatal(err)
	}
	f.events.waitFor(t, time.Second, "backend holding 1, read by the probe", func(r *recorder) bool {
		s, ok := r.lastSetting(pid)
		return ok && s.Known && !s.Inferred && s.Value == "1"
	})
	t.Logf("backend %d read holding 1 after %v", pid, time.Since(start))
	f.events.mu.Lock()
	s, _ := f.events.lastSetting(pid)
	f.events.mu.Unlock()
	if !strings.Contains(s.Statement, "SET app.current_tenant") {
		t.Errorf("the reading does not name the statement that wrote it: %+v", s)
	}
}

// The same with pgx: a session SET, then the reading, within a second;
// also with the probe waiting for 20 ms of idleness.
func TestPgxSetShowsWithinASecond(t *testing.T) {
	for _, delay := range []time.Duration{0, 20 * time.Millisecond} {
		t.Run(delay.String(), func(t *testing.T) {
			f := newFixture(t, func(c *Config) { c.ProbeDelay = delay })
			c := connect(t, f.proxyURL, pgx.QueryExecModeCacheStatement)
			pid := c.PgConn().PID()
			start := time.Now()
			if _, err := c.Exec(context.Background(), "SET app.current_tenant = '1'"); err != nil {
				t.Fatal(err)
			}
			f.events.waitFor(t, time.Second, "backend holding 1, read by the probe", func(r *recorder) bool {
				s, ok := r.lastSetting(pid)
				return ok && s.Known && !s.Inferred && s.Value == "1"
			})
			t.Logf("read after %v", time.Since(start))
		})
	}
}

// A SET ROLE the client runs shows as the backend's role at once, marked
// inferred from the statement, then as read by the next probe; RESET ROLE
// brings back the role it logged in as the same way.
func TestSetRoleShowsInTheReading(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	other := f.role + "_t1"
	for _, q := range []string{"CREATE ROLE " + other + " NOLOGIN", "GRANT " + other + " TO " + f.role} {
		if _, err := f.admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _, _ = f.admin.Exec(context.Background(), "DROP ROLE "+other) })
	c := connect(t, f.proxyURL, pgx.QueryExecModeSimpleProtocol)
	pid := c.PgConn().PID()
	for _, step := range []struct{ sql, role string }{{"SET ROLE " + other, other}, {"RESET ROLE", f.role}} {
		if _, err := c.Exec(ctx, step.sql); err != nil {
			t.Fatal(err)
		}
		f.events.waitFor(t, time.Second, "backend read as role "+step.role, func(r *recorder) bool {
			s, ok := r.lastSetting(pid)
			return ok && !s.Inferred && !s.RoleInferred && s.Role == step.role
		})
		// Before the reading, the role was shown inferred from the
		// statement.
		f.events.mu.Lock()
		all := f.events.settings[pid]
		inferred := len(all) >= 2 && all[len(all)-2].Role == step.role && all[len(all)-2].RoleInferred
		f.events.mu.Unlock()
		if !inferred {
			t.Errorf("%s: the settings reported %+v, want the role inferred from it, then read", step.sql, all)
		}
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// Inside a transaction no probe runs: the role a statement ran as is
// inferred from the SET LOCAL ROLE, SET ROLE, set_config('role', ...) and
// RESET ROLE the client sent, in pgx's extended protocol and in a simple
// query of several statements. A local role ends with the transaction, a
// session-level one rolled back never took effect, a committed one stays;
// every inference matches the current_user the statement itself read.
func TestSetRoleInferredInATransaction(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	other := f.role + "_t2"
	for _, q := range []string{"CREATE ROLE " + other + " NOLOGIN", "GRANT " + other + " TO " + f.role} {
		if _, err := f.admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _, _ = f.admin.Exec(context.Background(), "DROP ROLE "+other) })
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		c := connect(t, f.proxyURL, mode)
		n := 0
		// check runs sql (its last statement reads current_user), and
		// asserts the role the proxy gave that statement.
		check := func(sql, want string) {
			t.Helper()
			n++
			tag := fmt.Sprintf("/* step %d %v */", n, mode)
			var got string
			if err := c.QueryRow(ctx, sql+" "+tag).Scan(&got); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
			if got != want {
				t.Fatalf("%s: current_user %s, want %s (the test is wrong)", sql, got, want)
			}
			r, ok := f.events.result(tag)
			if !ok {
				f.events.waitFor(t, time.Second, "the result of "+tag, func(r *recorder) bool {
					for _, res := range r.results {
						if strings.Contains(res.Text, tag) {
							return true
						}
					}
					return false
				})
				r, _ = f.events.result(tag)
			}
			if r.Setting.Role != want {
				t.Errorf("%v: %q ran as %s, the proxy says %q", mode, sql, want, r.Setting.Role)
			}
		}
		exec := func(sql string) {
			t.Helper()
			if _, err := c.Exec(ctx, sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
		check("SELECT current_user", f.role)
		exec("BEGIN")
		exec("SET LOCAL ROLE " + other)
		check("SELECT current_user", other)
		exec("RESET ROLE")
		check("SELECT current_user", f.role)
		exec("SELECT set_config('role', '" + other + "', true)")
		check("SELECT current_user", other)
		exec("COMMIT")
		exec("BEGIN")
		check("SELECT current_user", f.role)
		exec("SET ROLE " + other)
		check("SELECT current_user", other)
		exec("ROLLBACK")
		exec("BEGIN")
		check("SELECT current_user", f.role)
		exec("SET ROLE " + other)
		exec("COMMIT")
		exec("BEGIN")
		check("SELECT current_user", other)
		exec("SET ROLE NONE")
		check("SELECT current_user", f.role)
		exec("COMMIT")
		if mode == pgx.QueryExecModeSimpleProtocol {
			// Two statements in one simple query: the second ran as the
			// role the first set.
			exec("BEGIN")
			res, err := c.PgConn().Exec(ctx, "SET LOCAL ROLE "+other+"; SELECT current_user /* multi */").ReadAll()
			if err != nil || len(res) != 2 || len(res[1].Rows) != 1 || string(res[1].Rows[0][0]) != other {
				t.Fatalf("SET LOCAL ROLE; SELECT current_user: %v %+v", err, res)
			}
			f.events.waitFor(t, time.Second, "the multi-statement query's result", func(r *recorder) bool {
				for _, res := range r.results {
					if strings.Contains(res.Text, "/* multi */") && strings.HasPrefix(res.Tag, "SELECT") {
						return res.Setting.Role == other
					}
				}
				return false
			})
			exec("COMMIT")
		}
		if err := c.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// A statement that fails to parse, sent with its Bind and Execute before
// the Sync (as node-postgres and pgx's exec mode send it), is reported
// once, failed with the server's SQLSTATE; so is one parsed on its own
// first (pgx's describe-exec mode).
func TestParseErrorReportedOnce(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeExec, pgx.QueryExecModeDescribeExec} {
		c := connect(t, f.proxyURL, mode)
		tag := fmt.Sprintf("/* parse-fail %v */", mode)
		if _, err := c.Exec(ctx, "SELEC $1::int "+tag, 1); errCode(err) != "42601" {
			t.Fatalf("%v: %v, want 42601", mode, err)
		}
		after := fmt.Sprintf("/* after %v */", mode)
		if _, err := c.Exec(ctx, "SELECT 1 "+after); err != nil {
			t.Fatal(err)
		}
		// Events come in order: once the next statement's result is in,
		// every report of the failed one is too.
		f.events.waitFor(t, 5*time.Second, "the next statement's result", func(r *recorder) bool {
			for _, res := range r.results {
				if strings.Contains(res.Text, after) {
					return true
				}
			}
			return false
		})
		f.events.mu.Lock()
		n := 0
		for _, res := range f.events.results {
			if strings.Contains(res.Text, tag) {
				n++
				if res.Err == nil || res.Err.Code != "42601" {
					t.Errorf("%v: the failed statement reported with %v", mode, res.Err)
				}
			}
		}
		f.events.mu.Unlock()
		if n != 1 {
			t.Errorf("%v: the statement that failed to parse reported %d times, want once", mode, n)
		}
		if err := c.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
