package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// newOwnedLab makes a lab with a browser of its own and returns both.
func newOwnedLab(t *testing.T, s *testServer) (*http.Client, *sessions.Lab) {
	t.Helper()
	c := newBrowserClient(t)
	code, body := do(t, c, "POST", s.URL+"/labs", "", "", "Accept", "application/json")
	if code != http.StatusCreated {
		t.Fatalf("create lab: %d %s", code, body)
	}
	var created struct{ ID string }
	if err := json.Unmarshal([]byte(body), &created); err != nil {
		t.Fatal(err)
	}
	lab, err := s.Labs.Get(created.ID)
	if err != nil {
		t.Fatal(err)
	}
	return c, lab
}

// postSQL sends one free-play call as JSON and decodes the result; any
// status but 200 fails the test.
func postSQL(t *testing.T, s *testServer, c *http.Client, lab string, body string) sessions.SQLResult {
	t.Helper()
	code, out := do(t, c, "POST", s.URL+"/labs/"+lab+"/sql", "application/json", body)
	if code != http.StatusOK {
		t.Fatalf("POST /labs/%s/sql %s: %d %s", lab, body, code, out)
	}
	var res sessions.SQLResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return res
}

// sqlBody is the JSON of a call on connection conn (0: the pool chooses).
func sqlBody(conn int, tenant, pattern, sql string) string {
	m := map[string]any{"sql": sql}
	if conn > 0 {
		m["connection"] = conn
	}
	if tenant != "" {
		m["tenant"] = tenant
	}
	if pattern != "" {
		m["pattern"] = pattern
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func str(p *string) string {
	if p == nil {
		return "NULL"
	}
	return *p
}

func TestFreePlayReproducesTheSeedsLeakByHand(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 2})
	c, lab := newOwnedLab(t, s)
	acme := postSQL(t, s, c, lab.ID, sqlBody(1, "Acme", "session-set", ""))
	if acme.Error != "" || acme.RowCount != 3 || acme.Leak || str(acme.TenantAfter) != "1" || acme.PID == 0 {
		t.Fatalf("Acme, session-set on connection 1: %+v", acme)
	}
	globex := postSQL(t, s, c, lab.ID, sqlBody(1, "Globex", "forgot", ""))
	if !globex.Leak || globex.ForeignRows != 3 || globex.PID != acme.PID || str(globex.TenantBefore) != "1" {
		t.Fatalf("Globex, forgot on connection 1: want a leak of Acme's 3 rows on backend %d, got %+v", acme.PID, globex)
	}
	// The PID is the backend's own, as the server lists it.
	var app string
	if err := s.Labs.Admin().QueryRow(context.Background(), "SELECT usename FROM pg_stat_activity WHERE pid = $1", int32(globex.PID)).Scan(&app); err != nil || app != lab.Sandbox.AppRole {
		t.Fatalf("backend %d in pg_stat_activity: %q, %v; want the app role %s", globex.PID, app, err, lab.Sandbox.AppRole)
	}
	// The live view flags it like a scenario's leak, with the real PID.
	st := getState(t, s, lab.ID)
	if st.Scenario != sessions.FreePlayScenario || st.Leaks() != 1 {
		t.Fatalf("state: scenario %q with %d leaks, want free-play with 1", st.Scenario, st.Leaks())
	}
	row := st.Requests[len(st.Requests)-1]
	if !row.Leak || row.PID != acme.PID || row.Pattern != "forgot" || str(row.SeenTenant) != "1" || row.ForeignRows != 3 {
		t.Errorf("request log row: %+v", row)
	}
	shown := false
	for _, cn := range st.Connections {
		shown = shown || (cn.Pool == sessions.FreePlayPool && cn.PID == acme.PID && str(cn.Tenant) == "1")
	}
	if !shown {
		t.Errorf("connection boxes do not show backend %d holding Acme: %+v", acme.PID, st.Connections)
	}
	// The fix: tx-local leaves nothing behind, and Globex sees its own.
	fixed := postSQL(t, s, c, lab.ID, sqlBody(2, "Globex", "tx-local", ""))
	if fixed.Leak || fixed.RowCount != 3 || fixed.TenantAfter == nil || *fixed.TenantAfter != "" {
		t.Errorf("Globex, tx-local on connection 2: %+v", fixed)
	}
	// Another browser may watch but not play; a foreign origin is refused.
	other := newBrowserClient(t)
	if code, body := do(t, other, "POST", s.URL+"/labs/"+lab.ID+"/sql", "application/json", sqlBody(1, "", "", "")); code != http.StatusForbidden {
		t.Errorf("another browser: %d %s, want 403", code, body)
	}
	if code, body := do(t, c, "POST", s.URL+"/labs/"+lab.ID+"/sql", "application/json", sqlBody(1, "", "", ""), "Origin", "http://evil.example"); code != http.StatusForbidden {
		t.Errorf("foreign origin: %d %s, want 403", code, body)
	}
}

// hostileCase is one statement of the hostile suite: what it should come
// back as (a refusal, or an SQLSTATE), and whether rlslab cancelled it.
type hostileCase struct {
	name      string
	sql       string
	refused   bool
	sqlstate  string
	cancelled bool
	truncated bool
	first     string // the first value of the result, when given
}

func TestFreePlaySurvivesHostileSQL(t *testing.T) {
	t.Parallel()
	const limit = 300 * time.Millisecond
	s := mustStartServer(t, sessions.Config{MaxLabs: 3, SQLTimeout: limit})
	c, lab := newOwnedLab(t, s)
	other := sessionstest.MustCreateLab(t, s.Labs, "other")
	ctx := context.Background()

	// The other lab's usual outcome, before the suite.
	base := sessionstest.MustRun(t, other, "set-leak", "session-set", nil)
	if base.Status != engine.StatusDone {
		t.Fatalf("set-leak in the other lab: %s %s", base.Status, base.Error)
	}
	usual, _ := base.Outcome()
	if usual.Kind != engine.KindLeak {
		t.Fatalf("set-leak/session-set in the other lab: outcome %q, want its usual leak", usual.Kind)
	}
	// A backend of the other lab's app role to aim at.
	victim, err := pgx.Connect(ctx, other.Sandbox.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close(ctx)
	victimPID := victim.PgConn().PID()

	// The other lab keeps running its lesson during the suite.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var runs int
	var runErr error
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			st, err := sessionstest.Run(other, "set-leak", "session-set", nil)
			runs++
			got, _ := st.Outcome()
			if err != nil || st.Status != base.Status || st.Leaks() != base.Leaks() || st.Errors() != base.Errors() || got.Kind != usual.Kind {
				runErr = fmt.Errorf("run %d: %v, status %s, outcome %s, %d leaks, %d errors; before the suite %s, %s, %d, %d", runs, err, st.Status, got.Kind, st.Leaks(), st.Errors(), base.Status, usual.Kind, base.Leaks(), base.Errors())
				return
			}
		}
	})

	first := postSQL(t, s, c, lab.ID, sqlBody(1, "Acme", "session-set", "SELECT 1"))
	if first.Error != "" || str(first.TenantAfter) != "1" {
		t.Fatalf("scope connection 1 to Acme: %+v", first)
	}
	pid := first.PID
	owner := pgx.Identifier{lab.Sandbox.OwnerRole}.Sanitize()
	cases := []hostileCase{
		{name: "pg_sleep(60)", sql: "SELECT pg_sleep(60)", sqlstate: "57014", cancelled: true},
		{name: "statement_timeout = 0", sql: "SET statement_timeout = 0"},
		{name: "pg_sleep(60) after statement_timeout = 0", sql: "SELECT pg_sleep(60)", sqlstate: "57014", cancelled: true},
		{name: "generate_series(1, 1e9)", sql: "SELECT * FROM generate_series(1, 1e9)", sqlstate: "57014", cancelled: true},
		// Planned at 10^10 rows, the bomb may spend the time limit in JIT
		// compilation before its first row; a smaller flood streams rows
		// until the row limit stops it.
		{name: "cross-join bomb", sql: "SELECT a.i, b.i FROM generate_series(1, 100000) a(i) CROSS JOIN generate_series(1, 100000) b(i)", sqlstate: "57014", cancelled: true},
		{name: "a million rows", sql: "SELECT a.i, b.i FROM generate_series(1, 1000) a(i), generate_series(1, 1000) b(i)", sqlstate: "57014", truncated: true},
		{name: "DO loop", sql: "DO $$ BEGIN LOOP END LOOP; END $$", sqlstate: "57014", cancelled: true},
		{name: "SET then sleep in one call", sql: "SET statement_timeout = 0; SELECT pg_sleep(60)", sqlstate: "57014", cancelled: true},
		{name: "pg_read_file", sql: "SELECT pg_read_file('/etc/passwd')", refused: true},
		{name: "pg_read_file in a DO body", sql: "DO $$ BEGIN PERFORM pg_read_file('/etc/passwd'); END $$", refused: true},
		{name: "pg_read_file assembled at run time", sql: "DO $$ BEGIN EXECUTE 'SELECT pg_read' || '_file(''/etc/passwd'')'; END $$", sqlstate: "42501"},
		{name: "COPY TO PROGRAM", sql: "COPY invoices TO PROGRAM 'id'", refused: true},
		{name: "COPY TO PROGRAM behind a comment", sql: "/* hi */ -- there\n copy (SELECT 1) TO PROGRAM 'id'", refused: true},
		{name: "LISTEN", sql: "LISTEN x", refused: true},
		{name: "LISTEN assembled at run time", sql: "DO $$ BEGIN EXECUTE 'LIST' || 'EN x'; END $$"},
		{name: "no channel listened to after the call", sql: "SELECT count(*) FROM pg_listening_channels()", first: "0"},
		{name: "NOTIFY by function", sql: `SELECT "pg_notify"('x', 'y')`, refused: true},
		{name: "pg_notify assembled at run time", sql: "DO $$ BEGIN EXECUTE 'SELECT pg_' || 'notify(''x'', ''y'')'; END $$", sqlstate: "42501"},
		{name: "pg_advisory_lock", sql: "SELECT pg_advisory_lock(1)", refused: true},
		{name: "advisory lock assembled at run time", sql: "DO $$ BEGIN EXECUTE 'SELECT pg_advisory' || '_lock(1)'; END $$"},
		{name: "another lab's database through dblink", sql: "CREATE EXTENSION dblink", refused: true},
		{name: "rlslab's tables", sql: "SELECT * FROM rlslab.learners", sqlstate: "42P01"},
		{name: "pg_terminate_backend of another lab", sql: fmt.Sprintf("SELECT pg_terminate_backend(%d)", victimPID), refused: true},
		{name: "pg_terminate_backend assembled at run time", sql: fmt.Sprintf("DO $$ BEGIN EXECUTE 'SELECT pg_term' || 'inate_backend(%d)'; END $$", victimPID), sqlstate: "42501"},
		{name: "pg_cancel_backend of another lab", sql: fmt.Sprintf(`SELECT pg_catalog."pg_cancel_backend"(%d)`, victimPID), refused: true},
		{name: "DROP TABLE", sql: "DROP TABLE invoices", refused: true},
		{name: "DROP TABLE assembled at run time", sql: "DO $$ BEGIN EXECUTE 'DROP ' || 'TABLE invoices'; END $$", sqlstate: "42501"},
		{name: "SET ROLE to the owner", sql: "SET ROLE " + owner, refused: true},
		{name: "set_config('role') to the owner", sql: fmt.Sprintf("SELECT set_config('role', '%s', false)", lab.Sandbox.OwnerRole), refused: true},
		{name: "SET ROLE to the owner at run time", sql: fmt.Sprintf("DO $$ BEGIN EXECUTE 'SET ' || 'ROLE %s'; END $$", lab.Sandbox.OwnerRole), sqlstate: "42501"},
		{name: "SET SESSION AUTHORIZATION", sql: "SET SESSION AUTHORIZATION " + owner, refused: true},
		{name: "ALTER ROLE BYPASSRLS", sql: "ALTER ROLE " + pgx.Identifier{lab.Sandbox.AppRole}.Sanitize() + " BYPASSRLS", refused: true},
		{name: "ALTER ROLE at run time", sql: fmt.Sprintf("DO $$ BEGIN EXECUTE 'ALTER ' || 'ROLE %s BYPASSRLS'; END $$", lab.Sandbox.AppRole), sqlstate: "42501"},
		{name: "read-only by default", sql: "SET default_transaction_read_only = on"},
		{name: "a write in a read-only session", sql: "UPDATE invoices SET amount = amount", sqlstate: "25006"},
		{name: "read-write again", sql: "RESET default_transaction_read_only"},
		{name: "the tenant setting stays settable", sql: "SET app.current_tenant = 'anything'; SET app.current_tenant = '1'"},
	}
	for _, tc := range cases {
		res := postSQL(t, s, c, lab.ID, sqlBody(1, "", "forgot", tc.sql))
		switch {
		case tc.refused:
			if !res.Refused || !strings.HasPrefix(res.Error, "refused by rlslab") || res.PID != 0 {
				t.Errorf("%s: want a refusal before anything is sent, got %+v", tc.name, res)
			}
			continue
		case res.Refused || res.SQLState != tc.sqlstate:
			t.Errorf("%s: sqlstate %q refused %v (%s), want %q", tc.name, res.SQLState, res.Refused, res.Error, tc.sqlstate)
		}
		if res.PID != pid || str(res.TenantAfter) != "1" {
			t.Errorf("%s: backend %d with setting %s afterwards, want backend %d still holding '1'", tc.name, res.PID, str(res.TenantAfter), pid)
		}
		if tc.cancelled {
			t.Logf("%s: cancelled after %.0f ms (limit %s)", tc.name, res.MS, limit)
			if !strings.Contains(res.Error, "rlslab") || res.MS > float64((limit+10*time.Second).Milliseconds()) {
				t.Errorf("%s: want rlslab's cancel near %s, got %.0f ms: %s", tc.name, limit, res.MS, res.Error)
			}
		}
		if tc.first != "" && (len(res.Rows) == 0 || len(res.Rows[0]) == 0 || str(res.Rows[0][0]) != tc.first) {
			t.Errorf("%s: rows %v, want the first value %s", tc.name, res.Rows, tc.first)
		}
		if tc.truncated && (!res.Truncated || len(res.Rows) != sessions.MaxResultRows) {
			t.Errorf("%s: want %d rows and truncated, got %d rows of %d, truncated %v: %+v", tc.name, sessions.MaxResultRows, len(res.Rows), res.RowCount, res.Truncated, res)
		}
	}
	// No advisory lock outlives its call, however it was taken.
	var locks int
	if err := s.Labs.Admin().QueryRow(ctx, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1", int32(pid)).Scan(&locks); err != nil || locks != 0 {
		t.Errorf("backend %d holds %d advisory locks (%v), want 0", pid, locks, err)
	}
	// The app role cannot reach another lab's database, nor rlslab's tables
	// in rlslab's own database.
	for db, want := range map[string]string{other.Sandbox.Database: "42501", s.Labs.Admin().Config().ConnConfig.Database: "42501"} {
		cfg, err := pgx.ParseConfig(lab.Sandbox.AppURL)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Database = db
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			_, err = conn.Exec(ctx, "SELECT count(*) FROM rlslab.learners")
			conn.Close(ctx)
		}
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != want {
			t.Errorf("the app role in database %s: %v, want SQLSTATE %s", db, err, want)
		}
	}
	// The other lab's backend is untouched.
	if err := victim.Ping(ctx); err != nil {
		t.Errorf("the other lab's backend %d: %v", victimPID, err)
	}
	close(stop)
	wg.Wait()
	if runErr != nil {
		t.Errorf("the other lab during the suite: %v", runErr)
	}
	if runs == 0 {
		t.Errorf("the other lab finished no run during the suite")
	}
	t.Logf("the other lab ran set-leak %d times during the suite", runs)
	last := postSQL(t, s, c, lab.ID, sqlBody(1, "", "forgot", "SELECT current_setting('app.current_tenant', true), current_setting('statement_timeout')"))
	if last.PID != pid || len(last.Rows) != 1 || str(last.Rows[0][0]) != "1" {
		t.Errorf("after the suite: %+v, want backend %d holding '1'", last, pid)
	}
}

func TestFreePlayLooksAtAPausedRunsConnection(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 2})
	c, lab := newOwnedLab(t, s)
	base := sessionstest.MustRun(t, lab, "set-leak", "tx-local", nil)
	if code, body := do(t, c, "POST", s.URL+"/labs/"+lab.ID+"/runs", "application/json", `{"scenario":"set-leak","variant":"tx-local","speed":"step"}`); code != http.StatusAccepted {
		t.Fatalf("run: %d %s", code, body)
	}
	changes, unsubscribe := lab.Tracker().Subscribe()
	defer unsubscribe()
	// Step until the first request has scoped its connection inside its
	// transaction, and the run is held on that frame.
	var held engine.Connection
	deadline := time.Now().Add(30 * time.Second)
	stepUntil(t, lab, changes, deadline, func(st engine.State) bool {
		if len(st.Requests) == 0 || st.Requests[0].Phase != "scoped" {
			return false
		}
		for _, cn := range st.Connections {
			if cn.State == engine.ConnAcquired && cn.Request == st.Requests[0].Seq {
				held = cn
			}
		}
		return held.PID != 0
	})
	frame := lab.Tracker().Frame()
	// A free-play call that is not a look waits for the run.
	if code, body := do(t, c, "POST", s.URL+"/labs/"+lab.ID+"/sql", "application/json", sqlBody(0, "Acme", "", "")); code != http.StatusConflict {
		t.Errorf("free play during a run: %d %s, want 409", code, body)
	}
	look := func(sql string) sessions.SQLResult {
		return postSQL(t, s, c, lab.ID, fmt.Sprintf(`{"pid": %d, "sql": %q}`, held.PID, sql))
	}
	res := look("SELECT current_setting('app.current_tenant', true) AS tenant, pg_backend_pid() AS pid, count(*) AS visible FROM invoices")
	if res.Error != "" || res.PID != held.PID || len(res.Rows) != 1 || str(res.Rows[0][0]) != "1" || str(res.Rows[0][2]) != "3" {
		t.Fatalf("look inside the request's transaction: %+v", res)
	}
	// A look writes nothing and changes nothing the run holds.
	if w := look("SELECT set_config('app.current_tenant', '2', false)"); !w.Refused {
		t.Errorf("set_config in a look: %+v, want a refusal", w)
	}
	if w := look("WITH d AS (DELETE FROM invoices RETURNING id) SELECT count(*) FROM d"); w.SQLState != "25006" {
		t.Errorf("a DELETE in a look: %+v, want SQLSTATE 25006 (read-only transaction)", w)
	}
	if w := look("SELECT 1; SELECT 2"); !w.Refused {
		t.Errorf("two statements in a look: %+v, want a refusal", w)
	}
	if lab.Tracker().Frame() != frame {
		t.Errorf("the run moved from frame %d to %d during the looks", frame, lab.Tracker().Frame())
	}
	if code, body := do(t, c, "POST", s.URL+"/labs/"+lab.ID+"/sql", "application/json", `{"pid": 1, "sql": "SELECT 1"}`); code != http.StatusConflict {
		t.Errorf("a look at a backend the run does not hold: %d %s, want 409", code, body)
	}
	// Once released, the connection is an idle one of the run's pool: a
	// look takes it out and gives it back, and finds the tenant setting ''
	// that a committed set_config(..., true) leaves.
	stepUntil(t, lab, changes, deadline, func(st engine.State) bool { return st.Requests[0].Phase == "released" })
	idle := look("SELECT current_setting('app.current_tenant', true), pg_backend_pid()")
	if idle.Error != "" || idle.PID != held.PID || len(idle.Rows) != 1 || idle.Rows[0][0] == nil || *idle.Rows[0][0] != "" {
		t.Errorf("look at the released, idle connection: %+v", idle)
	}
	if code, body := do(t, c, "POST", s.URL+"/labs/"+lab.ID+"/speed", "application/json", `{"speed":"max"}`); code != http.StatusOK {
		t.Fatalf("speed: %d %s", code, body)
	}
	st := waitStatus(t, s, lab.ID, engine.StatusDone)
	if st.Leaks() != base.Leaks() || st.Errors() != base.Errors() || len(st.Requests) != len(base.Requests) {
		t.Errorf("the looked-at run: %d leaks, %d errors, %d requests; unlooked: %d, %d, %d", st.Leaks(), st.Errors(), len(st.Requests), base.Leaks(), base.Errors(), len(base.Requests))
	}
}

// stepUntil steps lab's single-step run until done holds for the frame
// the run is held on, and leaves the run held there. Each frame is read
// while the run is held on it (Pace.Hold): before the run's first frame
// the tracker still shows the previous run's frame, or frame 0, and a Step
// given then is kept for the first frame, which goes through unseen (a
// look then found the request's transaction committed). After a Step it
// waits for the frame number to move, so that Hold does not find the run
// still on the frame it was just stepped from.
func stepUntil(t *testing.T, lab *sessions.Lab, changes <-chan struct{}, deadline time.Time, done func(engine.State) bool) {
	t.Helper()
	for {
		if time.Now().After(deadline) {
			t.Fatalf("not there after 30 s of steps: %+v", lab.Tracker().Snapshot().Requests)
		}
		pace := lab.Pace()
		if pace == nil || !lab.Running() {
			t.Fatalf("the run ended first: %+v", lab.Tracker().Snapshot().Requests)
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		release, ok := pace.Hold(ctx)
		cancel()
		if !ok {
			continue
		}
		frame := lab.Tracker().Frame()
		st := lab.Tracker().Snapshot()
		release()
		if done(st) {
			return
		}
		if err := lab.Step(); err != nil {
			t.Fatal(err)
		}
		for lab.Tracker().Frame() == frame {
			<-changes
		}
	}
}
