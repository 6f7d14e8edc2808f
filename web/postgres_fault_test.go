package web_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rlslab/rlslab/internal/pgenv"
	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/static"
	"github.com/rlslab/rlslab/web"
)

// postmaster is a PostgreSQL server process that a test stops and starts
// again exactly as it was (same data, port and socket), so rlslab's URL
// stays valid across the outage.
type postmaster struct {
	pid  int
	args []string
	dir  string
	cred *syscall.Credential
	cmd  *exec.Cmd // the server as started again, if it was
}

// findPostmaster reads the postmaster of the server at url.
func findPostmaster(t *testing.T, url string) *postmaster {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var pidFile string
	if err := conn.QueryRow(ctx, "SELECT pg_read_file('postmaster.pid')").Scan(&pidFile); err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(pidFile, "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		t.Fatal(err)
	}
	p := &postmaster{pid: pid}
	cmdline, err := os.ReadFile("/proc/" + first + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	p.args = strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if p.dir, err = os.Readlink("/proc/" + first + "/cwd"); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat("/proc/" + first)
	if err != nil {
		t.Fatal(err)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 && sys.Uid != 0 {
		p.cred = &syscall.Credential{Uid: sys.Uid, Gid: sys.Gid, Groups: []uint32{}}
	}
	return p
}

// stop shuts the server down (SIGINT, a fast shutdown) and waits until its
// postmaster is gone.
func (p *postmaster) stop(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(p.pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(faultTimeout)
	for !errors.Is(syscall.Kill(p.pid, 0), syscall.ESRCH) {
		if time.Now().After(deadline) {
			t.Fatalf("postmaster %d did not stop", p.pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// start runs the server again with the command line it had; close stops
// it.
func (p *postmaster) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Dir = p.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Setpgid: true, Pdeathsig: syscall.SIGINT}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.pid, p.cmd = cmd.Process.Pid, cmd
}

// close stops the server start started.
func (p *postmaster) close() {
	if p.cmd != nil {
		_ = p.cmd.Process.Signal(syscall.SIGINT)
		_ = p.cmd.Wait()
	}
}

// TestFaultPostgresStoppedAndStarted stops the lab's PostgreSQL (a cluster
// of this test's own) in the middle of a stepped run and starts it again:
// while it is down every request says so in words with a 503, and the live
// state shows the outage; once it is back, the lab works again, and at the
// end nothing is left.
func TestFaultPostgresStoppedAndStarted(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL cluster of its own (several seconds)")
	}
	checkNoLeaks(t)
	ctx := t.Context()
	pg, err := pgenv.Start(ctx, pgenv.Options{DB: "auto", MaxConnections: 100})
	if err != nil {
		t.Skipf("no PostgreSQL of the test's own: %v", err)
	}
	t.Cleanup(func() { _ = pg.Close() })
	if pg.Kind != "local" {
		t.Skipf("PostgreSQL %s: the test stops and starts a local cluster", pg.Kind)
	}
	pm := findPostmaster(t, pg.URL)
	t.Cleanup(pm.close)

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	labs, err := sessions.Open(ctx, sessions.Config{AdminURL: pg.URL, MaxLabs: 3, Spares: -1, Catalog: scenarios.DefaultCatalog(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	// Runs before the cluster's cleanups: close rlslab, then look at what
	// it left on the server.
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		labs.Close(cctx)
		conn, err := pgx.Connect(cctx, pg.URL)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(cctx)
		// A closed connection's backend exits a moment after the client
		// hangs up: wait for that, up to faultTimeout.
		var dbs, roles, backends int
		for deadline := time.Now().Add(faultTimeout); ; time.Sleep(20 * time.Millisecond) {
			if err := conn.QueryRow(cctx, `SELECT
				(SELECT count(*) FROM pg_database WHERE datname LIKE 'lab\_%'),
				(SELECT count(*) FROM pg_roles WHERE rolname LIKE 'lab\_%'),
				(SELECT count(*) FROM pg_stat_activity WHERE usename LIKE 'lab\_%' OR application_name LIKE 'rlslab%')`).Scan(&dbs, &roles, &backends); err != nil {
				t.Error(err)
				return
			}
			if dbs+roles+backends == 0 || time.Now().After(deadline) {
				break
			}
		}
		if dbs+roles+backends != 0 {
			t.Errorf("left on the server: %d lab databases, %d lab roles, %d rlslab backends", dbs, roles, backends)
		}
	})
	ls, err := lessons.Load(lessons.Content(), scenarios.DefaultCatalog())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	handler := web.NewServer(labs, ls, static.FS(), log)
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		handler.Close()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	})
	s := &testServer{URL: "http://" + ln.Addr().String(), Labs: labs}

	c := newBrowserClient(t)
	id := openLesson(t, s, c, "set-leak")
	if code, body := do(t, c, "POST", s.URL+"/labs/"+id+"/runs", "application/json", `{"scenario":"set-leak","variant":"session-set","speed":"step"}`); code != http.StatusAccepted {
		t.Fatalf("run: %d %s", code, body)
	}
	waitState(t, s, id, "holding a connection", func(st engine.State) bool {
		if len(holding(st)) > 0 {
			return true
		}
		do(t, c, "POST", s.URL+"/labs/"+id+"/step", "", "")
		return false
	})

	pm.stop(t)
	down := sessions.ErrDatabaseDown
	noInternals := func(what, body string) {
		for _, bad := range []string{".s.PGSQL", "rlslab-pg-", "127.0.0.1", "internal error"} {
			if strings.Contains(body, bad) {
				t.Errorf("%s shows %q: %s", what, bad, body)
			}
		}
	}
	start := time.Now()
	code, body := do(t, http.DefaultClient, "GET", s.URL+"/healthz", "", "")
	if took := time.Since(start); code != http.StatusServiceUnavailable || !strings.Contains(body, down) || took > 1500*time.Millisecond {
		t.Errorf("healthz with PostgreSQL down: %d after %s: %s", code, took.Round(time.Millisecond), body)
	}
	noInternals("healthz", body)
	st := getState(t, s, id)
	if st.Outage != down {
		t.Errorf("state.json with PostgreSQL down: outage %q, want %q", st.Outage, down)
	}
	code, body = do(t, newBrowserClient(t), "POST", s.URL+"/labs", "", "", "Accept", "application/json")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, down) {
		t.Errorf("POST /labs with PostgreSQL down: %d %s", code, body)
	}
	noInternals("POST /labs", body)
	// The stepped run cannot go on: played at full speed, it fails.
	do(t, c, "POST", s.URL+"/labs/"+id+"/speed", "application/json", `{"speed":"max"}`)
	st = waitState(t, s, id, "ended", ended)
	t.Logf("the run with PostgreSQL down: %s, %q", st.Status, st.Error)
	if st.Status != engine.StatusFailed || st.Error == "" {
		t.Errorf("the run with PostgreSQL down: status %s error %q", st.Status, st.Error)
	}
	code, body = do(t, c, "POST", s.URL+"/labs/"+id+"/reset", "", "")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, down) {
		t.Errorf("reset with PostgreSQL down: %d %s", code, body)
	}
	noInternals("reset", body)

	pm.start(t)
	deadline := time.Now().Add(faultTimeout)
	for {
		code, _ := do(t, http.DefaultClient, "GET", s.URL+"/healthz", "", "")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthz after PostgreSQL came back: %d", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitState(t, s, id, "without the outage", func(st engine.State) bool { return st.Outage == "" })
	if code, body := do(t, c, "POST", s.URL+"/labs/"+id+"/reset", "", ""); code != http.StatusOK {
		t.Fatalf("reset after PostgreSQL came back: %d %s", code, body)
	}
	if code, body := do(t, c, "POST", s.URL+"/labs/"+id+"/runs", "application/json", `{"scenario":"set-leak","variant":"session-set","speed":"max"}`); code != http.StatusAccepted {
		t.Fatalf("run after PostgreSQL came back: %d %s", code, body)
	}
	if st := waitState(t, s, id, "ended", ended); st.Status != engine.StatusDone || st.Leaks() != 1 {
		t.Errorf("run after PostgreSQL came back: %s %q, %d leaks", st.Status, st.Error, st.Leaks())
	}
	if id2 := openLesson(t, s, newBrowserClient(t), "set-leak"); id2 == "" {
		t.Error("no new lab after PostgreSQL came back")
	}
}
