package web_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// The fault suite: what a learner sees when the database, PgBouncer or the
// network misbehave in the middle of a run, and that nothing is left behind
// afterwards (backends, processes, directories, goroutines). Each test
// waits for the state it means by polling state.json, never by sleeping.

// faultTimeout bounds every wait of the fault suite.
const faultTimeout = 20 * time.Second

// checkNoLeaks registers, first, a check that runs after every other
// cleanup of the test: no goroutine of the test is left.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	pgenvtest.MustServer(t) // the package's shared server outlives the test
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		// Goroutines that are ending (a run closing its pools, a socket
		// handler) get up to ten seconds on a loaded machine.
		for deadline := time.Now().Add(10 * time.Second); goleak.Find(ignore) != nil && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
		goleak.VerifyNone(t, ignore)
	})
}

// waitState polls state.json until ok holds and returns that state.
func waitState(t *testing.T, s *testServer, id, what string, ok func(engine.State) bool) engine.State {
	t.Helper()
	deadline := time.Now().Add(faultTimeout)
	for {
		st := getState(t, s, id)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("lab %s: never %s; last state: status %q error %q, %d requests, %d connections", id, what, st.Status, st.Error, len(st.Requests), len(st.Connections))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ended reports whether the run is over.
func ended(st engine.State) bool {
	return st.Status == engine.StatusDone || st.Status == engine.StatusFailed
}

// holding returns the connections the live view shows as held by the app
// (not closed).
func holding(st engine.State) []engine.Connection {
	var out []engine.Connection
	for _, c := range st.Connections {
		if c.State != engine.ConnClosed {
			out = append(out, c)
		}
	}
	return out
}

// appBackends returns the pids of the lab app role's backends.
func appBackends(t *testing.T, s *testServer, id string) []int32 {
	t.Helper()
	lab, err := s.Labs.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := s.Labs.Admin().Query(context.Background(), "SELECT pid FROM pg_stat_activity WHERE usename = $1", lab.Sandbox.AppRole)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int32
	for rows.Next() {
		var p int32
		if err := rows.Scan(&p); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, p)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return pids
}

// waitNoAppBackends waits until the app role has no backend.
func waitNoAppBackends(t *testing.T, s *testServer, id string) {
	t.Helper()
	deadline := time.Now().Add(faultTimeout)
	for len(appBackends(t, s, id)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("lab %s: app role backends left: %v", id, appBackends(t, s, id))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFaultBackendsTerminatedMidRun terminates the app role's backends
// while a run holds a connection, in single-step mode and at 0.25×: the run
// ends (it does not hang), says what happened, the killed backends leave
// the live view, and the next run works.
func TestFaultBackendsTerminatedMidRun(t *testing.T) {
	for _, speed := range []string{"step", "0.25"} {
		t.Run(speed, func(t *testing.T) {
			checkNoLeaks(t)
			s := mustStartServer(t, sessions.Config{MaxLabs: 2, Spares: -1})
			c := newBrowserClient(t)
			id := openLesson(t, s, c, "set-leak")
			if code, body := do(t, c, "POST", s.URL+"/labs/"+id+"/runs", "application/json", `{"scenario":"set-leak","variant":"session-set","speed":"`+speed+`","pacing":"live"}`); code != http.StatusAccepted {
				t.Fatalf("run: %d %s", code, body)
			}
			// The run is paced live: a replayed run has finished on the
			// database before its first frame is shown, so killing the
			// backends it shows would prove nothing.
			// Step (or let 0.25× play) until the pool holds a connection.
			st := waitState(t, s, id, "holding a connection", func(st engine.State) bool {
				if len(holding(st)) > 0 {
					return true
				}
				if speed == "step" {
					do(t, c, "POST", s.URL+"/labs/"+id+"/step", "", "")
				}
				return false
			})
			killed := appBackends(t, s, id)
			if len(killed) == 0 {
				t.Fatalf("the view shows %d connections but the app role has no backend", len(holding(st)))
			}
			// pg_terminate_backend with a timeout returns once the backend
			// has exited; without one it only sends the signal, and at
			// 0.25x the next request may still be served by the backend in
			// the moment before it handles it.
			if _, err := s.Labs.Admin().Exec(t.Context(), "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE pid = ANY($1)", killed); err != nil {
				t.Fatal(err)
			}
			before := len(getState(t, s, id).Requests)
			// At 0.25x a request may meet the dead backend while
			// pg_terminate_backend waits for it to exit, and the run ends
			// before the speed is changed: 409, and the checks below hold
			// for that ending too.
			if code, body := do(t, c, "POST", s.URL+"/labs/"+id+"/speed", "application/json", `{"speed":"max"}`); code != http.StatusOK && (code != http.StatusConflict || !ended(getState(t, s, id))) {
				t.Fatalf("speed max: %d %s", code, body)
			}
			st = waitState(t, s, id, "ended", ended)
			t.Logf("after pg_terminate_backend of %v: status %s, error %q, %d requests", killed, st.Status, st.Error, len(st.Requests))
			// Either pgx replaced the dead connection before a request
			// used it (the run goes on), or the run failed saying why; no
			// request is shown as finished on a dead backend. (A request
			// whose scoping failed stays in the log as "acquired", without
			// its error: the run's error carries it.)
			for _, r := range st.Requests {
				for _, k := range killed {
					if r.Seq > before && r.PID == uint32(k) && r.Error == "" && r.FinishedAt != 0 {
						t.Errorf("request %d ran on terminated backend %d without an error: %+v", r.Seq, k, r)
					}
				}
			}
			// The words depend on when pgx notices: 57P01 "terminating
			// connection" or a broken pipe on the dead socket.
			if st.Status == engine.StatusFailed && (st.Error == "" || st.Error == "internal error") {
				t.Errorf("failed run says %q, not what happened", st.Error)
			}
			for _, conn := range holding(st) {
				t.Errorf("connection %d still shown as %s after the run", conn.PID, conn.State)
			}
			waitNoAppBackends(t, s, id)
			// The lab is usable again: reset, run, the lesson's leak.
			if code, body := do(t, c, "POST", s.URL+"/labs/"+id+"/reset", "", ""); code != http.StatusOK {
				t.Fatalf("reset: %d %s", code, body)
			}
			if code, body := do(t, c, "POST", s.URL+"/labs/"+id+"/runs", "application/json", `{"scenario":"set-leak","variant":"session-set","speed":"max"}`); code != http.StatusAccepted {
				t.Fatalf("run after the fault: %d %s", code, body)
			}
			if st := waitState(t, s, id, "ended", ended); st.Status != engine.StatusDone || st.Leaks() != 1 {
				t.Errorf("run after the fault: %s %q, %d leaks", st.Status, st.Error, st.Leaks())
			}
			waitNoAppBackends(t, s, id)
		})
	}
}

// bouncerRecorder wraps the test's PgBouncer starter and remembers every
// PgBouncer it started.
type bouncerRecorder struct {
	mu  sync.Mutex
	all []engine.Bouncer
}

func (r *bouncerRecorder) start(ctx context.Context, sb engine.Sandbox, o engine.BouncerOptions) (engine.Bouncer, error) {
	b, err := sessionstest.Bouncers(ctx, sb, o)
	if err == nil {
		r.mu.Lock()
		r.all = append(r.all, b)
		r.mu.Unlock()
	}
	return b, err
}

func (r *bouncerRecorder) bouncers() []engine.Bouncer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]engine.Bouncer(nil), r.all...)
}

// dirOf returns a local PgBouncer's temporary directory.
func dirOf(b engine.Bouncer) string {
	if d, ok := b.(interface{ Dir() string }); ok {
		return d.Dir()
	}
	return ""
}

// TestFaultPgBouncerKilledMidRun kills the lab's PgBouncer (SIGKILL) while
// clients hold connections through it in single-step mode: the run fails
// saying PgBouncer stopped answering, and its process, directory and
// backends are gone.
func TestFaultPgBouncerKilledMidRun(t *testing.T) {
	checkNoLeaks(t)
	rec := &bouncerRecorder{}
	s := mustStartServer(t, sessions.Config{MaxLabs: 2, Spares: -1, Bouncers: rec.start})
	c := newBrowserClient(t)
	id := openLesson(t, s, c, "pgbouncer-tx")
	if code, body := do(t, c, "POST", s.URL+"/labs/"+id+"/runs", "application/json", `{"scenario":"pgbouncer-tx","variant":"session-set","speed":"step"}`); code != http.StatusAccepted {
		t.Fatalf("run: %d %s", code, body)
	}
	waitState(t, s, id, "holding a connection through PgBouncer", func(st engine.State) bool {
		if len(holding(st)) > 0 && len(rec.bouncers()) == 1 {
			return true
		}
		do(t, c, "POST", s.URL+"/labs/"+id+"/step", "", "")
		return false
	})
	b := rec.bouncers()[0]
	pid, dir := b.PID(), dirOf(b)
	if pid <= 0 || dir == "" {
		t.Fatalf("PgBouncer pid %d dir %q: want a local one", pid, dir)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code, body := do(t, c, "POST", s.URL+"/labs/"+id+"/speed", "application/json", `{"speed":"max"}`); code != http.StatusOK {
		t.Fatalf("speed max: %d %s", code, body)
	}
	st := waitState(t, s, id, "ended", ended)
	t.Logf("after kill -9 of PgBouncer %d: status %s, error %q", pid, st.Status, st.Error)
	if st.Status != engine.StatusFailed || !strings.Contains(st.Error, "PgBouncer") {
		t.Errorf("after kill -9 of PgBouncer: status %s error %q; want failed, naming PgBouncer", st.Status, st.Error)
	}
	if len(holding(st)) != 0 {
		t.Errorf("connections through the killed PgBouncer still shown: %+v", holding(st))
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("PgBouncer %d: %v, want gone", pid, err)
	}
	waitState(t, s, id, "idle again", func(engine.State) bool { lab, _ := s.Labs.Get(id); return !lab.Running() })
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("PgBouncer directory %s after the run: %v", dir, err)
	}
	waitNoAppBackends(t, s, id)
}

// TestFaultWebsocketThatNeverReads watches a lab with a browser that never
// reads (a tiny receive buffer, full at once) beside one that does: the run
// goes at its own pace, the reading watcher sees every step to the end, and
// when the stuck browser goes away nothing of it is left.
func TestFaultWebsocketThatNeverReads(t *testing.T) {
	checkNoLeaks(t)
	s := mustStartServer(t, sessions.Config{MaxLabs: 2, Spares: -1})
	c := newBrowserClient(t)
	id := openLesson(t, s, c, "shared-pool")
	u := "ws" + strings.TrimPrefix(s.URL, "http") + "/labs/" + id + "/ws"
	stuckDialer := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		conn, err := net.Dial(network, addr)
		if err == nil {
			_ = conn.(*net.TCPConn).SetReadBuffer(1024)
		}
		return conn, err
	}}
	stuck, _, err := stuckDialer.Dial(u, http.Header{"Origin": {s.URL}})
	if err != nil {
		t.Fatal(err)
	}
	reader := mustDialWS(t, s, id)
	if _, err := readFrame(t, reader); err != nil {
		t.Fatal(err)
	}
	// A crowd run makes many large frames quickly.
	start := time.Now()
	if code, body := do(t, c, "POST", s.URL+"/labs/"+id+"/runs", "application/json", `{"scenario":"shared-pool","variant":"shared-pool","speed":"max"}`); code != http.StatusAccepted {
		t.Fatalf("run: %d %s", code, body)
	}
	frames := readUntil(t, reader, engine.StatusDone)
	took := time.Since(start)
	st := getState(t, s, id)
	t.Logf("run of %d requests took %s with a stuck watcher; the reading watcher got %d frames", len(st.Requests), took.Round(time.Millisecond), len(frames))
	if st.Status != engine.StatusDone {
		t.Fatalf("run: %s %q", st.Status, st.Error)
	}
	// The stuck browser leaves; its handler must end with it.
	stuck.Close()
}
