package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/internal/pgproxy"
	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
	"github.com/rlslab/rlslab/static"
	"github.com/rlslab/rlslab/web"
)

// appFixture is rlslab serving labs with its PostgreSQL proxy in front of
// them, as rlslab serve wires it.
type appFixture struct {
	ts    *testServer
	front string // a server of the same labs that knows the proxy
	proxy string // the proxy's address
}

// startAppFixture starts the web server, the proxy (1 ms probe delay, as
// serve runs it) and a second web handler on the same labs that shows
// the proxy.
func startAppFixture(t *testing.T) *appFixture {
	t.Helper()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 4, Spares: -1})
	srv, err := pgproxy.New(pgproxy.Config{Lookup: ts.Labs.ProxyLookup, ProbeDelay: time.Millisecond})
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
	ls, err := lessons.Load(lessons.Content(), scenarios.DefaultCatalog())
	if err != nil {
		t.Fatal(err)
	}
	h := web.NewServer(ts.Labs, ls, static.FS(), nil).WithProxy(web.Proxy{Addr: ln.Addr().String(), CertPEM: srv.CertificatePEM()})
	front := httptest.NewServer(h)
	t.Cleanup(func() { h.Close(); front.Close() })
	return &appFixture{ts: ts, front: front.URL, proxy: ln.Addr().String()}
}

// lab makes a lab whose owner token is a valid learner cookie.
func (f *appFixture) lab(t *testing.T) *sessions.Lab {
	t.Helper()
	return sessionstest.MustCreateLab(t, f.ts.Labs, sessions.NewToken())
}

// get fetches path of the proxy-aware server with the owner cookie token
// ("" for none) and returns the status and body.
func (f *appFixture) get(t *testing.T, path, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.front+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.AddCookie(&http.Cookie{Name: web.OwnerCookie, Value: token})
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// connectURL asks connect.json for the lab's URL, as its owner.
func (f *appFixture) connectURL(t *testing.T, lab *sessions.Lab) string {
	t.Helper()
	code, body := f.get(t, "/labs/"+lab.ID+"/connect.json", lab.Owner())
	if code != http.StatusOK {
		t.Fatalf("connect.json: %d %s", code, body)
	}
	var v struct{ URL string }
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	return v.URL
}

// appState is what the tests read of state.json.
type appState struct {
	Scenario    string `json:"scenario"`
	Status      string `json:"status"`
	Connections []struct {
		Pool   string  `json:"pool"`
		PID    uint32  `json:"pid"`
		State  string  `json:"state"`
		Tenant *string `json:"tenant"`
		Role   string  `json:"role"`
	} `json:"connections"`
	Requests []struct {
		Seq         int     `json:"seq"`
		PID         uint32  `json:"pid"`
		Tenant      *string `json:"tenant"`
		SeenTenant  *string `json:"seen_tenant"`
		Rows        int     `json:"rows"`
		ForeignRows int     `json:"foreign_rows"`
		Leak        bool    `json:"leak"`
		Why         string  `json:"why"`
		SQLState    string  `json:"sqlstate"`
	} `json:"requests"`
}

// state reads the lab's state.json.
func (f *appFixture) state(t *testing.T, lab *sessions.Lab) appState {
	t.Helper()
	resp, err := http.Get(f.ts.URL + "/labs/" + lab.ID + "/state.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st appState
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// waitState reads state.json until ok says yes or the time is up (backing
// off), and returns the last state read.
func (f *appFixture) waitState(t *testing.T, lab *sessions.Lab, within time.Duration, ok func(appState) bool) (appState, bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	wait := 5 * time.Millisecond
	for {
		st := f.state(t, lab)
		if ok(st) {
			return st, true
		}
		if time.Now().After(deadline) {
			return st, false
		}
		time.Sleep(wait)
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// waitRunConns waits until the budget's run connections are n.
func waitRunConns(t *testing.T, m *sessions.Manager, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	wait := 5 * time.Millisecond
	for m.Usage().RunConns != n {
		if time.Now().After(deadline) {
			t.Fatalf("run connections: %d, want %d", m.Usage().RunConns, n)
		}
		time.Sleep(wait)
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// seedJS is the seed's pattern with node-postgres and a pool of 2: request
// A sets the tenant setting for the session and queries, request B (another
// tenant) forgets to and gets the same pooled connection; each query is
// tagged with its tenant and reads pg_backend_pid() itself.
const seedJS = `
const { Pool } = require('pg');
(async () => {
  const pool = new Pool({ connectionString: process.argv[1], max: 2 });
  const a = await pool.connect();
  await a.query("SELECT set_config('app.current_tenant', $1, false) /* tenant='1' */", ['1']);
  const ra = await a.query("SELECT pg_backend_pid() AS pid, id, tenant_id FROM invoices /* tenant='1' */ ORDER BY id");
  a.release();
  const b = await pool.connect();
  const rb = await b.query("SELECT pg_backend_pid() AS pid, id, tenant_id FROM invoices /* tenant='2' */ ORDER BY id");
  b.release();
  await pool.end();
  console.log(JSON.stringify({ a: ra.rows[0].pid, b: rb.rows[0].pid, brows: rb.rows.length }));
})().catch((e) => { console.error(e); process.exit(1); });
`

// TestYourAppSeedLeakOnStateJSON runs the seed's pattern with node-postgres
// through the proxy: state.json marks the second tenant's query as a leak,
// on the backend PID the app read itself, with the setting it saw; the
// first query is not a leak. The session is recorded like a run.
func TestYourAppSeedLeakOnStateJSON(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed (scripts/setup-debian.sh installs it)")
	}
	modules, _ := filepath.Abs("../internal/pgproxy/testdata/node/node_modules")
	if _, err := os.Stat(filepath.Join(modules, "pg")); err != nil {
		t.Skip("node-postgres is not installed: run scripts/setup-debian.sh")
	}
	f := startAppFixture(t)
	lab := f.lab(t)
	u := strings.Replace(f.connectURL(t, lab), "sslmode=require", "sslmode=no-verify", 1)
	cmd := exec.Command(node, "-e", seedJS, u)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("node: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	var pids struct{ A, B uint32 }
	if err := json.Unmarshal(out, &pids); err != nil {
		t.Fatalf("node printed %q: %v", out, err)
	}
	if pids.A != pids.B {
		t.Fatalf("the pool gave request B another connection (%d, %d): the seed's pattern needs the same one", pids.A, pids.B)
	}
	// The pool ended: the session ends with its last connection.
	st, ok := f.waitState(t, lab, 10*time.Second, func(s appState) bool { return s.Scenario == sessions.AppScenario && s.Status == engine.StatusDone })
	if !ok {
		t.Fatalf("the app session did not end: %+v", st)
	}
	var leaks, firsts int
	for _, r := range st.Requests {
		if !strings.Contains(r.Why, "FROM invoices") {
			continue
		}
		switch str(r.Tenant) {
		case "1":
			firsts++
			if r.Leak || r.PID != pids.A || str(r.SeenTenant) != "1" || r.ForeignRows != 0 || r.Rows == 0 {
				t.Errorf("tenant 1's query: %+v", r)
			}
		case "2":
			leaks++
			if !r.Leak || r.PID != pids.B || str(r.SeenTenant) != "1" || r.Rows == 0 || r.ForeignRows != r.Rows {
				t.Errorf("tenant 2's query should be a leak on backend %d seeing tenant 1's setting: %+v", pids.B, r)
			}
		}
	}
	if leaks != 1 || firsts != 1 {
		t.Errorf("want one query per tenant, got %d for 1 and %d for 2: %+v", firsts, leaks, st.Requests)
	}
	for _, c := range st.Connections {
		if c.Pool != sessions.AppPool || c.State != engine.ConnClosed || c.Role == "" {
			t.Errorf("connection after the pool ended: %+v", c)
		}
	}
	waitRunConns(t, f.ts.Labs, 0)
	// Recorded like a run: the lab's runs list it.
	deadline := time.Now().Add(10 * time.Second)
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		resp, err := http.Get(f.ts.URL + "/labs/" + lab.ID + "/runs.json")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), `"`+sessions.AppScenario+`"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the app session was not recorded: %d %s", resp.StatusCode, b)
		}
		time.Sleep(wait)
	}
}

// TestYourAppPsqlSetShowsTenant: a psql session through the proxy that
// runs SET app.current_tenant = '1' shows its backend holding 1 in
// state.json within a second; its connection counts in the budget while
// open and is given back when psql ends; a run cannot start meanwhile.
func TestYourAppPsqlSetShowsTenant(t *testing.T) {
	if _, err := os.Stat("/usr/bin/psql"); err != nil {
		t.Skip("psql is not installed")
	}
	f := startAppFixture(t)
	lab := f.lab(t)
	cmd := exec.Command("/usr/bin/psql", "-X", "-A", "-t", "-q", f.connectURL(t, lab))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
	if _, err := io.WriteString(stdin, "SELECT pg_backend_pid();\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.ParseUint(strings.TrimSpace(line), 10, 32)
	if err != nil {
		t.Fatalf("psql printed %q", line)
	}
	if n := f.ts.Labs.Usage().RunConns; n != 1 {
		t.Errorf("run connections with psql connected: %d, want 1", n)
	}
	err = lab.Start(sessions.RunRequest{Scenario: "set-leak", Variant: engine.PatternSessionSet})
	if rlslab.ErrorCode(err) != rlslab.ECONFLICT || !strings.Contains(rlslab.ErrorMessage(err), "your app") {
		t.Errorf("a run's start while the app is connected: %v", err)
	}
	if _, err := io.WriteString(stdin, "SET app.current_tenant = '1';\n"); err != nil {
		t.Fatal(err)
	}
	set := time.Now()
	st, ok := f.waitState(t, lab, time.Second, func(s appState) bool {
		for _, c := range s.Connections {
			if c.PID == uint32(pid) && str(c.Tenant) == "1" {
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("backend %d not shown holding 1 within a second: %+v", pid, st.Connections)
	}
	t.Logf("shown %s after the SET was sent", time.Since(set).Round(time.Millisecond))
	_ = stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("psql: %v", err)
	}
	waitRunConns(t, f.ts.Labs, 0)
}

// TestYourAppRefusals: a wrong password, another lab's database, a user
// other than the app and an unknown database are refused; a stranger
// asking for connect.json gets 403 and its owner a URL that works; while a
// scenario run is going the app is refused, and nothing is left in the
// budget.
func TestYourAppRefusals(t *testing.T) {
	f := startAppFixture(t)
	a, b := f.lab(t), f.lab(t)
	good := f.connectURL(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, good)
	if err != nil {
		t.Fatalf("the owner's URL: %v", err)
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 through the proxy: %d %v", one, err)
	}
	conn.Close(ctx)

	with := func(user, password, database string) string {
		u, _ := url.Parse(good)
		u.User = url.UserPassword(user, password)
		u.Path = "/" + database
		return u.String()
	}
	cases := []struct{ name, url, code string }{
		{"wrong password", with(sessions.AppUser, "not-the-password", a.ProxyDatabase()), "28P01"},
		{"another lab's database", with(sessions.AppUser, a.ProxyPassword(), b.ProxyDatabase()), "28P01"},
		{"another user", with("postgres", a.ProxyPassword(), a.ProxyDatabase()), "28P01"},
		{"unknown database", with(sessions.AppUser, a.ProxyPassword(), "lab_00000000"), "3D000"},
		{"not a lab", with(sessions.AppUser, a.ProxyPassword(), "postgres"), "3D000"},
	}
	for _, tc := range cases {
		_, err := pgx.Connect(ctx, tc.url)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != tc.code {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.code)
		}
	}
	for _, token := range []string{"", b.Owner(), sessions.NewToken()} {
		if code, body := f.get(t, "/labs/"+a.ID+"/connect.json", token); code != http.StatusForbidden || strings.Contains(string(body), a.ProxyPassword()) {
			t.Errorf("a stranger's connect.json: %d %s", code, body)
		}
	}
	if code, body := f.get(t, "/labs/"+a.ID, b.Owner()); code != http.StatusOK || strings.Contains(string(body), a.ProxyPassword()) || strings.Contains(string(body), "Connect your app") {
		t.Errorf("a watcher's lab page shows the panel or the password: %d", code)
	}
	if code, body := f.get(t, "/labs/"+a.ID, a.Owner()); code != http.StatusOK || !strings.Contains(string(body), "Connect your app") || !strings.Contains(string(body), a.ProxyPassword()) {
		t.Errorf("the owner's lab page has no panel: %d", code)
	}
	if code, body := f.get(t, "/proxy.crt", ""); code != http.StatusOK || !strings.Contains(string(body), "BEGIN CERTIFICATE") {
		t.Errorf("GET /proxy.crt: %d %s", code, body)
	}

	// A run held in single-step mode: the app is refused until it ends.
	if err := a.Start(sessions.RunRequest{Scenario: "set-leak", Variant: engine.PatternSessionSet, Speed: engine.Speed{Single: true}}); err != nil {
		t.Fatal(err)
	}
	_, err = pgx.Connect(ctx, good)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57P03" {
		t.Errorf("connect during a run: %v, want 57P03", err)
	}
	if err := a.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	waitRunConns(t, f.ts.Labs, 0)
}

// seedAppDrive is the requests lesson 18 has the seed app send, one after
// the other: Globex, Acme, a request that forgets to scope, Globex again.
const seedAppDrive = "2,1,0,2"

// seedAppAnswer is one line the seed app prints per request it drove.
type seedAppAnswer struct {
	Tenant  string `json:"tenant"`
	PID     uint32 `json:"pid"`
	Tenants []int  `json:"tenants"`
	Rows    int    `json:"rows"`
	Error   string `json:"error"`
}

// runSeedApp runs the seed app in mode through the lab's proxy URL, driving
// seedAppDrive in order, and returns its answers.
func runSeedApp(t *testing.T, node, app, u, mode string) []seedAppAnswer {
	t.Helper()
	cmd := exec.Command(node, filepath.Join(app, "app.js"), "--url", u, "--mode", mode, "--drive", seedAppDrive, "--order", "serial")
	cmd.Dir = app
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("%s: node: %v\n%s", mode, err, ee.Stderr)
		}
		t.Fatal(err)
	}
	var answers []seedAppAnswer
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var a seedAppAnswer
		if err := json.Unmarshal([]byte(line), &a); err != nil || a.Error != "" || a.PID == 0 {
			t.Fatalf("%s: the app answered %q (%v)", mode, line, err)
		}
		answers = append(answers, a)
	}
	if len(answers) != 4 || answers[2].Tenant != "0" {
		t.Fatalf("%s: answers %+v, want four, the third the forgetful one", mode, answers)
	}
	return answers
}

// TestYourAppSeedAppModes runs the seed's own app (TypeORM, a pool of two,
// lessons/apps/seed-app) through the proxy in one lab, driving lesson 18's
// four requests in order: with the seed's session-level set_config,
// state.json shows exactly the forgetful request's two statements as leaks,
// on the backend the app itself read, and its find() got Acme's 3
// invoices; with the fix (a transaction with set_config(..., true)) no
// leak, and the forgetful find() gets no row. Lesson 18 quotes these
// numbers, and the two sessions' recordings compare: the session-set one
// with its leaks, the tx-local one without.
func TestYourAppSeedAppModes(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed (scripts/setup-debian.sh installs it)")
	}
	app, _ := filepath.Abs("../lessons/apps/seed-app")
	if _, err := os.Stat(filepath.Join(app, "node_modules", "typeorm")); err != nil {
		t.Skip("the seed app's packages are not installed: run scripts/setup-debian.sh")
	}
	f := startAppFixture(t)
	lab := f.lab(t)
	// node-postgres takes sslmode=require as verify-full: the panel gives
	// node sslmode=no-verify.
	u := strings.Replace(f.connectURL(t, lab), "sslmode=require", "sslmode=no-verify", 1)
	type measured struct{ leaks, foreign, forgotRows int }
	got := map[string]measured{}
	var recordings []string
	for _, mode := range []string{"session-set", "tx-local"} {
		answers := runSeedApp(t, node, app, u, mode)
		forgot := answers[2]
		for _, a := range answers {
			if a.PID != forgot.PID {
				t.Errorf("%s: requests one after the other on backends %d and %d, want one backend for all four (the lesson says so)", mode, a.PID, forgot.PID)
			}
		}
		st, ok := f.waitState(t, lab, 10*time.Second, func(s appState) bool {
			return s.Scenario == sessions.AppScenario && s.Status == engine.StatusDone && len(s.Requests) > 0
		})
		if !ok {
			t.Fatalf("%s: the app session did not end: %+v", mode, st)
		}
		var m measured
		finds, errs := 0, 0
		for _, r := range st.Requests {
			find := strings.Contains(r.Why, `"invoices"`) || strings.Contains(r.Why, "FROM invoices")
			if find {
				finds++
			}
			if r.SQLState != "" {
				errs++
			}
			if find && str(r.Tenant) == "0" {
				m.forgotRows = r.Rows
				if r.PID != forgot.PID {
					t.Errorf("%s: the forgetful find() shown on backend %d, the app read %d", mode, r.PID, forgot.PID)
				}
			}
			if r.Leak {
				m.leaks++
				m.foreign += r.ForeignRows
				if r.PID != forgot.PID || str(r.Tenant) != "0" || str(r.SeenTenant) != "1" {
					t.Errorf("%s: a leak that is not the forgetful request's on backend %d holding Acme's 1: %+v", mode, forgot.PID, r)
				}
			}
		}
		if finds != 4 || errs != 0 {
			t.Errorf("%s: %d of the app's finds shown, want 4, and %d errors: %+v", mode, finds, errs, st.Requests)
		}
		if m.forgotRows != forgot.Rows {
			t.Errorf("%s: the forgetful find() got %d rows, state.json says %d", mode, forgot.Rows, m.forgotRows)
		}
		got[mode] = m
		t.Logf("%s: %d statements, %d leaks, %d foreign rows, the forgetful find() got %d rows (tenants %v)", mode, len(st.Requests), m.leaks, m.foreign, forgot.Rows, forgot.Tenants)
		if mode == "session-set" && (len(forgot.Tenants) == 0 || slices.ContainsFunc(forgot.Tenants, func(id int) bool { return id != 1 })) {
			t.Errorf("session-set: the forgetful request got tenants %v, want Acme's (1) only", forgot.Tenants)
		}
		waitRunConns(t, f.ts.Labs, 0)
		runs := waitRuns(t, f.ts, lab.ID, len(recordings)+1)
		if runs[0].Variant != mode {
			t.Errorf("%s: the session is recorded as variant %q, want the mode the app named in application_name", mode, runs[0].Variant)
		}
		recordings = append(recordings, runs[0].ID)
	}
	if want := (measured{leaks: 2, foreign: 3, forgotRows: 3}); got["session-set"] != want {
		t.Errorf("session-set: %+v, want %+v", got["session-set"], want)
	}
	if want := (measured{}); got["tx-local"] != want {
		t.Errorf("tx-local: %+v, want %+v", got["tx-local"], want)
	}

	// Lesson 18 quotes what this test measured.
	text := lessonBody(t, "your-app")
	for _, claim := range []string{
		fmt.Sprintf("With `--mode session-set`, %d statements are red", got["session-set"].leaks),
		fmt.Sprintf("its `find()` got Acme's %d invoices", got["session-set"].foreign),
		fmt.Sprintf("With `--mode tx-local`, %d statements are red", got["tx-local"].leaks),
		fmt.Sprintf("the forgetful `find()` got %d rows", got["tx-local"].forgotRows),
		"`--drive " + seedAppDrive + " --order serial`",
	} {
		if !strings.Contains(text, claim) {
			t.Errorf("lesson your-app does not say %q, which TestYourAppSeedAppModes measured", claim)
		}
	}

	// The two sessions compare: the leak beside the fix.
	leaky, fixed := recordings[0], recordings[1]
	code, _, body := get(t, http.DefaultClient, f.ts.URL+"/runs/"+leaky+"/vs/"+fixed)
	if code != http.StatusOK {
		t.Fatalf("compare session-set with tx-local: %d %.500s", code, body)
	}
	a, b := compareVerdicts(body)
	if a["LEAK"] != got["session-set"].leaks || b["LEAK"] != 0 || !strings.Contains(body, `data-differs="yes"`) {
		t.Errorf("the comparison shows %v on the left and %v on the right, want %d leaks left and none right", a, b, got["session-set"].leaks)
	}
	if want := fmt.Sprintf("LEAK: %d of %d rows belong to another tenant", got["session-set"].foreign, got["session-set"].forgotRows); !strings.Contains(body, want) {
		t.Errorf("the comparison does not say which statement leaked (%q)", want)
	}
	if !strings.Contains(body, "through rlslab&#39;s proxy") || strings.Count(body, `data-kind="leak"`) != 1 {
		t.Errorf("the comparison's headings: want your app's two sessions, one with a leak: %.1500s", body)
	}
	// Recorded as the your-app scenario's two variants, they are what the
	// lesson's compare link finds.
	resp, err := http.Get(f.ts.URL + "/labs/" + lab.ID + "/compare?lesson=your-app&a=session-set&b=tx-local")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := "/runs/" + leaky + "/vs/" + fixed; resp.StatusCode != http.StatusOK || resp.Request.URL.Path != want {
		t.Errorf("the lesson's compare link: %d at %s, want the two sessions at %s", resp.StatusCode, resp.Request.URL.Path, want)
	}

	// The app's session beside the lesson's own run of the same mistake.
	if err := lab.Start(sessions.RunRequest{Scenario: "set-leak", Variant: engine.PatternSessionSet, Speed: engine.Speed{Max: true}}); err != nil {
		t.Fatal(err)
	}
	run := waitRuns(t, f.ts, lab.ID, 3)[0]
	code, _, body = get(t, http.DefaultClient, f.ts.URL+"/runs/"+leaky+"/vs/"+run.ID)
	a, b = compareVerdicts(body)
	if code != http.StatusOK || a["LEAK"] != got["session-set"].leaks || b["LEAK"] != 1 || !strings.Contains(body, "beside") {
		t.Errorf("the app's session-set session beside set-leak's session-set run: %d, verdicts %v and %v; want %d leaks and 1, under a title naming both", code, a, b, got["session-set"].leaks)
	}

	// What the seed literally wrote, SET with a bind parameter: the server
	// refuses it (42601), and the lab shows that statement failed so.
	cmd := exec.Command(node, filepath.Join(app, "app.js"), "--url", u, "--mode", "set-param", "--drive", "1", "--order", "serial")
	cmd.Dir = app
	out, err := cmd.Output()
	var answer struct{ Code string }
	if err != nil || json.Unmarshal(out, &answer) != nil || answer.Code != "42601" {
		t.Fatalf("set-param: %v, the app answered %s; want code 42601", err, out)
	}
	st, ok := f.waitState(t, lab, 10*time.Second, func(s appState) bool {
		return s.Scenario == sessions.AppScenario && s.Status == engine.StatusDone && len(s.Requests) > 0
	})
	failed := 0
	for _, r := range st.Requests {
		if r.SQLState == "42601" && strings.Contains(r.Why, "SET app.current_tenant = $1") {
			failed++
		}
	}
	if !ok || failed != 1 {
		t.Errorf("set-param: %d statements shown failing with 42601, want 1: %+v", failed, st.Requests)
	}
}

// lessonBody returns the text of the lesson with that slug.
func lessonBody(t *testing.T, slug string) string {
	t.Helper()
	names, err := fs.Glob(lessons.Content(), "*-"+slug+".md")
	if err != nil || len(names) != 1 {
		t.Fatalf("lesson %s: %v %v", slug, names, err)
	}
	b, err := fs.ReadFile(lessons.Content(), names[0])
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// compareVerdicts counts the verdicts of a comparison page's cells, left
// and right.
func compareVerdicts(body string) (left, right map[string]int) {
	left, right = map[string]int{}, map[string]int{}
	for _, row := range strings.Split(body, "<tr")[1:] {
		cells := strings.Split(row, "<td")
		side := 0
		for _, c := range cells[1:] {
			if !strings.Contains(c, `class="cmp`) && !strings.Contains(c, `class="missing"`) {
				continue // the sequence number
			}
			side++
			_, v, ok := strings.Cut(c, `<b class="verdict">`)
			if !ok {
				continue
			}
			v, _, _ = strings.Cut(v, "</b>")
			if side == 1 {
				left[v]++
			} else {
				right[v]++
			}
		}
	}
	return left, right
}

// TestYourAppResetEndsIt: while an app is connected free play is refused;
// a reset ends the app's connections (its backends are terminated), records
// the session, clears the live view and gives the budget back; the app may
// then connect again.
func TestYourAppResetEndsIt(t *testing.T) {
	f := startAppFixture(t)
	lab := f.lab(t)
	u := f.connectURL(t, lab)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if n := lab.AppConnections(); n != 1 {
		t.Errorf("app connections: %d, want 1", n)
	}
	if _, err := lab.SQL(ctx, sessions.SQLRequest{}); rlslab.ErrorCode(err) != rlslab.ECONFLICT {
		t.Errorf("free play while the app is connected: %v, want ECONFLICT", err)
	}
	begin := time.Now()
	if err := lab.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("reset took %s", time.Since(begin).Round(time.Millisecond))
	if _, err := conn.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("the app's connection still works after a reset")
	}
	waitRunConns(t, f.ts.Labs, 0)
	if st := f.state(t, lab); st.Scenario == sessions.AppScenario || len(st.Connections) != 0 {
		t.Errorf("the live view after a reset: %+v", st)
	}
	again, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatalf("connect after the reset: %v", err)
	}
	if _, err := again.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if st, ok := f.waitState(t, lab, 5*time.Second, func(s appState) bool { return s.Scenario == sessions.AppScenario && len(s.Connections) == 1 }); !ok {
		t.Errorf("a new session after the reset: %+v", st)
	}
	again.Close(ctx)
	waitRunConns(t, f.ts.Labs, 0)
	if n := lab.AppConnections(); n != 0 {
		t.Errorf("app connections after the app closed: %d", n)
	}
}

// TestYourAppSetRoleShowsOnTheBox: an app that switches its backend to a
// tenant role with SET LOCAL ROLE inside a transaction has its box show
// that role in state.json while the transaction is open (inferred: no
// probe runs inside a transaction), and the app role again once it
// commits; a session-level SET ROLE shows until RESET ROLE.
func TestYourAppSetRoleShowsOnTheBox(t *testing.T) {
	f := startAppFixture(t)
	lab := f.lab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tenant := engine.TenantRole(lab.Sandbox, lab.Sandbox.Tenants[0])
	admin := f.ts.Labs.Admin()
	for _, q := range []string{"CREATE ROLE " + tenant + " NOLOGIN", "GRANT " + tenant + " TO " + lab.Sandbox.AppRole} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP ROLE "+tenant) })
	conn, err := pgx.Connect(ctx, f.connectURL(t, lab))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	pid := conn.PgConn().PID()
	boxRole := func(want string) {
		t.Helper()
		st, ok := f.waitState(t, lab, 5*time.Second, func(s appState) bool {
			for _, c := range s.Connections {
				if c.PID == pid && c.Role == want {
					return true
				}
			}
			return false
		})
		if !ok {
			t.Fatalf("backend %d's box does not show role %s: %+v", pid, want, st.Connections)
		}
	}
	exec := func(sql string) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	boxRole(lab.Sandbox.AppRole)
	exec("BEGIN")
	exec("SET LOCAL ROLE " + tenant)
	boxRole(tenant)
	exec("COMMIT")
	boxRole(lab.Sandbox.AppRole)
	exec("SET ROLE " + tenant)
	boxRole(tenant)
	exec("RESET ROLE")
	boxRole(lab.Sandbox.AppRole)
}

// TestYourAppOnTheDashboard: a participant whose own app is connected to
// their lab through the proxy shows on the facilitator's dashboard as
// running your app; once the app has closed, its session is their last
// run, with its leak, and the leak counts for the lesson.
func TestYourAppOnTheDashboard(t *testing.T) {
	f := startAppFixture(t)
	w := mustCreateWorkshop(t, f.ts, "Apps", "your-app")
	fac := facilitatorClient(t, f.ts, w)
	ann := newBrowserClient(t)
	j := mustJoin(t, w, ann, "Ann")
	lab, err := f.ts.Labs.Get(j.Lab)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, f.connectURL(t, lab))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"SET app.current_tenant = '1'", "SELECT * FROM invoices /* tenant='2' */"} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	st := mustWorkshopState(t, f.ts, fac, w.ID)
	if len(st.Participants) != 1 || st.Counts.Running != 1 {
		t.Errorf("with Ann's app connected: running %d, participants %+v; want Ann running", st.Counts.Running, st.Participants)
	}
	_, body := do(t, fac, "GET", f.ts.URL+"/workshops/"+w.ID, "", "")
	if !strings.Contains(body, sessions.AppScenario+" / "+sessions.AppVariant) {
		t.Errorf("the dashboard does not show Ann's app session live: %.2000s", body)
	}
	if err := conn.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitRuns(t, f.ts, lab.ID, 1)
	deadline := time.Now().Add(10 * time.Second)
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		st = mustWorkshopState(t, f.ts, fac, w.ID)
		p := st.Participants[0]
		if p.LastRun != nil && p.LastRun.Scenario == sessions.AppScenario && p.LastRun.Leaks == 1 && p.LeakSeen && st.Counts.Running == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Ann's app closed: %+v, last run %+v, counts %+v; want the app's session with its leak", p, p.LastRun, st.Counts)
		}
		time.Sleep(wait) // the recording reaches rlslab's tables on its own time
	}
}
