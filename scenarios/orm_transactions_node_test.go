package scenarios_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rlslab/rlslab/internal/pgproxy"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// seedApp returns the node binary and the seed app's directory, or skips
// the test when either is missing.
func seedApp(t *testing.T) (node, dir string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed, so the seed app's TypeORM code is not run (scripts/setup-debian.sh installs Node.js and the app's packages)")
	}
	dir, _ = filepath.Abs("../lessons/apps/seed-app")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "typeorm")); err != nil {
		t.Skip("the seed app's packages are not installed: run scripts/setup-debian.sh, or npm ci in lessons/apps/seed-app")
	}
	return node, dir
}

// startProxy serves m's labs through rlslab's proxy on a loopback port
// and returns a function that gives a lab's URL through it.
func startProxy(t *testing.T, m *sessions.Manager) func(*sessions.Lab) string {
	t.Helper()
	srv, err := pgproxy.New(pgproxy.Config{Lookup: m.ProxyLookup, ProbeDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return func(lab *sessions.Lab) string {
		return fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", sessions.AppUser, url.QueryEscape(lab.ProxyPassword()), ln.Addr(), lab.ProxyDatabase())
	}
}

// appAnswer is one line the seed app prints for a driven request.
type appAnswer struct {
	Tenant  string  `json:"tenant"`
	Mode    string  `json:"mode"`
	PID     uint32  `json:"pid"`
	Tenants []int   `json:"tenants"`
	Rows    int     `json:"rows"`
	Error   string  `json:"error"`
	Code    *string `json:"code"`
}

// parseAnswers reads the app's output lines.
func parseAnswers(t *testing.T, out []byte) []appAnswer {
	t.Helper()
	var list []appAnswer
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var a appAnswer
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("the app printed %q: %v", line, err)
		}
		list = append(list, a)
	}
	return list
}

// waitAppSession waits until the lab's "your app" session has ended and
// returns its last state.
func waitAppSession(t *testing.T, lab *sessions.Lab) engine.State {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	wait := 5 * time.Millisecond
	for {
		st := lab.Tracker().Snapshot()
		if st.Scenario == sessions.AppScenario && st.Status == engine.StatusDone {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("the app session did not end: %s %s", st.Scenario, st.Status)
		}
		time.Sleep(wait)
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// TestSeedAppORMScopingThroughProxy runs the seed app's TypeORM code
// through the lab's proxy, one request after another: Acme with the mode
// under test, Globex on an older route with a session-level set_config,
// Acme again. With set_config(..., true) through dataSource.query or a
// QueryRunner without a transaction, Acme's first find gets nothing and its
// second gets Globex's rows (and the lab's live view marks that statement a
// leak); with a QueryRunner transaction both get Acme's 3 rows.
func TestSeedAppORMScopingThroughProxy(t *testing.T) {
	node, dir := seedApp(t)
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 4})
	urlOf := startProxy(t, m)
	for _, c := range []struct {
		mode  string
		fixed bool
	}{{"datasource-query", false}, {"runner-autocommit", false}, {"runner-transaction", true}} {
		lab := sessionstest.MustCreateLab(t, m, "owner")
		cmd := exec.Command(node, filepath.Join(dir, "app.js"), "--url", urlOf(lab), "--mode", c.mode, "--drive", "1,2:session-set,1", "--order", "serial")
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Fatalf("%s: node: %v\n%s", c.mode, err, ee.Stderr)
			}
			t.Fatal(err)
		}
		answers := parseAnswers(t, out)
		if len(answers) != 3 {
			t.Fatalf("%s: %d answers: %s", c.mode, len(answers), out)
		}
		first, globex, second := answers[0], answers[1], answers[2]
		for _, a := range answers {
			if a.Error != "" || a.PID == 0 {
				t.Fatalf("%s: the app answered %+v", c.mode, a)
			}
		}
		if globex.Mode != "session-set" || globex.Rows != 3 {
			t.Errorf("%s: Globex's older route: %+v", c.mode, globex)
		}
		st := waitAppSession(t, lab)
		leaks := 0
		for _, r := range st.Requests {
			if r.Leak {
				leaks++
				if r.PID != second.PID {
					t.Errorf("%s: a leak on backend %d, Acme's second request ran on %d", c.mode, r.PID, second.PID)
				}
			}
		}
		if c.fixed {
			if first.Rows != 3 || second.Rows != 3 || fmt.Sprint(second.Tenants) != "[1 1 1]" || leaks != 0 {
				t.Errorf("%s: want Acme's 3 rows twice and no leak, got %+v %+v, %d leaks", c.mode, first, second, leaks)
			}
			continue
		}
		if first.Rows != 0 {
			t.Errorf("%s: want Acme's first find to get nothing (tenant unset), got %+v", c.mode, first)
		}
		if second.PID != globex.PID || fmt.Sprint(second.Tenants) != "[2 2 2]" {
			t.Errorf("%s: want Acme's second find to get Globex's rows on Globex's backend %d, got %+v", c.mode, globex.PID, second)
		}
		if leaks == 0 {
			t.Errorf("%s: the live view marks no leak: %+v", c.mode, st.Requests)
		}
		t.Logf("%s: %s", c.mode, strings.TrimSpace(string(out)))
	}
}

// TestSeedAppRequestTransactionThroughProxy runs the seed app's
// request-wide transaction through the proxy with three requests at once
// on its pool of two: while the first two wait on the other service,
// pg_stat_activity shows both backends idle in transaction; with the
// transaction around the database calls only, none.
func TestSeedAppRequestTransactionThroughProxy(t *testing.T) {
	node, dir := seedApp(t)
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 4})
	urlOf := startProxy(t, m)
	for _, c := range []struct {
		mode    string
		waiters int // requests waiting on the other service when pg_stat_activity is read
		idleTx  int
	}{{"request-transaction", 2, 2}, {"short-transaction", 3, 0}} {
		lab := sessionstest.MustCreateLab(t, m, "owner")
		cmd := exec.Command(node, filepath.Join(dir, "app.js"), "--url", urlOf(lab), "--mode", c.mode, "--drive", "1,2,3", "--service", "stdin")
		cmd.Dir = dir
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stdout strings.Builder
		cmd.Stdout = &stdout
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var errText strings.Builder
		sc := bufio.NewScanner(stderr)
		for waiting := 0; waiting < c.waiters && sc.Scan(); {
			errText.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), `"event":"waiting"`) {
				waiting++
			}
		}
		states := map[string]int{}
		rows, err := m.Admin().Query(context.Background(),
			"SELECT coalesce(state, '') FROM pg_stat_activity WHERE datname = $1 AND usename = $2 AND backend_type = 'client backend'", lab.Sandbox.Database, lab.Sandbox.AppRole)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			states[s]++
		}
		if rows.Err() != nil {
			t.Fatal(rows.Err())
		}
		if _, err := io.WriteString(stdin, "go\n"); err != nil {
			t.Fatal(err)
		}
		rest, _ := io.ReadAll(stderr)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%s: node: %v\n%s%s", c.mode, err, errText.String(), rest)
		}
		if states["idle in transaction"] != c.idleTx {
			t.Errorf("%s: pg_stat_activity showed %v, want %d backends idle in transaction", c.mode, states, c.idleTx)
		}
		for _, a := range parseAnswers(t, []byte(stdout.String())) {
			if a.Error != "" || a.Rows != 3 {
				t.Errorf("%s: want each tenant's own 3 rows, got %+v", c.mode, a)
			}
		}
		waitAppSession(t, lab)
		t.Logf("%s: pg_stat_activity while waiting: %v", c.mode, states)
	}
}
