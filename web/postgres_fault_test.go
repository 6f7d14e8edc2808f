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
	"github.com/rlslab/rlslab/sessions/store"
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

// freeze stops (SIGSTOP) the postmaster and every process it forked, as a
// paused container: connections stay open and nothing answers. The test's
// end thaws them, should it end frozen.
func (p *postmaster) freeze(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { p.signalAll(syscall.SIGCONT) })
	if err := p.signalAll(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
}

// thaw lets the frozen server go on (SIGCONT).
func (p *postmaster) thaw(t *testing.T) {
	t.Helper()
	if err := p.signalAll(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
}

// signalAll sends sig to the postmaster and its children (read from
// /proc/*/stat).
func (p *postmaster) signalAll(sig syscall.Signal) error {
	pids := []int{p.pid}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so read after
		// its closing parenthesis.
		i := strings.LastIndexByte(string(stat), ')')
		if f := strings.Fields(string(stat[i+1:])); i >= 0 && len(f) > 1 && f[1] == strconv.Itoa(p.pid) {
			pids = append(pids, pid)
		}
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return err
		}
	}
	return nil
}

// close stops the server start started.
func (p *postmaster) close() {
	if p.cmd != nil {
		_ = p.cmd.Process.Signal(syscall.SIGINT)
		_ = p.cmd.Wait()
	}
}

// startServerOn serves rlslab on the PostgreSQL at url as rlslab serve
// wires it (the admin pool and rlslab's own tables first, then the labs and
// the services). When the test ends it closes rlslab and checks that
// nothing of it is left on the server.
func startServerOn(t *testing.T, url string) *testServer {
	t.Helper()
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ls, err := lessons.Load(lessons.Content(), scenarios.DefaultCatalog())
	if err != nil {
		t.Fatal(err)
	}
	admin, err := sessions.OpenAdmin(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, admin, log)
	if err != nil {
		admin.Close()
		t.Fatal(err)
	}
	keeper := sessions.NewKeeper(st, "test", log)
	db := sessions.NewDB(st, admin, log)
	progress := sessions.NewProgress(db, ls, log)
	labs, err := sessions.Open(ctx, sessions.Config{AdminURL: url, Admin: admin, MaxLabs: 4, Spares: -1, Catalog: scenarios.DefaultCatalog(), Logger: log,
		Subscribers: []sessions.RunSubscriber{sessions.RunEndFunc(func(r sessions.RunRecord) {
			// Saved on the run's goroutine: runs.json lists a run once
			// it has ended.
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, _ = keeper.Save(sctx, r)
		}), progress}})
	if err != nil {
		admin.Close()
		t.Fatal(err)
	}
	// Runs before the cluster's cleanups: close rlslab, then look at what
	// it left on the server.
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		labs.Close(cctx)
		keeper.Close(cctx)
		st.Close()
		admin.Close()
		conn, err := pgx.Connect(cctx, url)
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	handler := web.NewServer(labs, ls, static.FS(), log).WithCreateWait(time.Minute).WithServices(services(labs, st, ls, log))
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		handler.Close()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	})
	return &testServer{URL: "http://" + ln.Addr().String(), Labs: labs, Store: st}
}

// TestFaultPostgresStoppedAndStarted stops the lab's PostgreSQL (a cluster
// of this test's own) in the middle of a stepped run and starts it again,
// then freezes every process of it and thaws it: while it is down or
// frozen every request, the store-backed pages included (storePages), says
// so in words with a 503 within outageAnswer, and the live state shows the
// outage; once it is back, the lab and the pages work again by themselves,
// and at the end nothing is left.
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

	s := startServerOn(t, pg.URL)
	// What the store-backed pages show: a learner with a recorded run and
	// a prediction, a workshop with a participant.
	learner := newBrowserClient(t)
	lid := openLesson(t, s, learner, "set-leak")
	if code, body := do(t, learner, "POST", s.URL+"/lessons/set-leak/predictions", ctJSON, `{"variant":"session-set","choice":0}`, "Accept", ctJSON); code != http.StatusOK {
		t.Fatalf("predict: %d %s", code, body)
	}
	runToEnd(t, s, learner, lid, "set-leak", "tx-local")
	w := mustCreateWorkshop(t, s, "Outage", "set-leak")
	fac := facilitatorClient(t, s, w)
	ann := newBrowserClient(t)
	mustJoin(t, w, ann, "Ann")
	rec := labRuns(t, s, lid)[0].ID
	pages := storePages(s, lid, rec, w, learner, fac, ann)

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
	checkOutage(t, "stopped", pages)

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
	checkRecovered(t, "started again", pages)

	// Frozen: every process of the cluster stopped (as a paused container
	// or a host under swap), connections open but never answered.
	pm.freeze(t)
	start = time.Now()
	code, body = do(t, http.DefaultClient, "GET", s.URL+"/healthz", "", "")
	if took := time.Since(start); code != http.StatusServiceUnavailable || took > outageAnswer {
		t.Errorf("healthz with PostgreSQL frozen: %d after %s: %s", code, took.Round(time.Millisecond), body)
	}
	checkOutage(t, "frozen", append(pages, storePage{name: "reset", c: c, method: "POST", url: s.URL + "/labs/" + id + "/reset"}))
	pm.thaw(t)
	checkRecovered(t, "thawed", pages)
}

// outageAnswer is how long a store-backed page may take to say that the
// database does not answer.
const outageAnswer = 2 * time.Second

// storePage is a request to a store-backed page or endpoint.
type storePage struct {
	name, method, url, contentType, body string
	c                                    *http.Client
	ok                                   int // its status when the database answers; 0: not checked then
}

// storePages are the requests that read or write rlslab's own tables: lab
// is the learner's lab, rec one of its recordings (never read before, so
// not cached), w a workshop whose facilitator is fac and participant ann.
func storePages(s *testServer, lab, rec string, w createdWorkshop, learner, fac, ann *http.Client) []storePage {
	ws := s.URL + "/workshops/" + w.ID
	return []storePage{
		{name: "dashboard", c: fac, method: "GET", url: ws, ok: http.StatusOK},
		{name: "workshop state.json", c: fac, method: "GET", url: ws + "/state.json", ok: http.StatusOK},
		{name: "join by code", c: newAnonClient(), method: "GET", url: s.URL + "/join?code=" + w.Code, ok: http.StatusSeeOther},
		{name: "join form", c: newAnonClient(), method: "GET", url: ws + "/join?code=" + w.Code, ok: http.StatusOK},
		{name: "join", c: newAnonClient(), method: "POST", url: ws + "/join?code=" + w.Code, contentType: ctJSON, body: `{"name":"Bob"}`},
		{name: "runs.json", c: learner, method: "GET", url: s.URL + "/labs/" + lab + "/runs.json", ok: http.StatusOK},
		{name: "recent runs", c: learner, method: "GET", url: s.URL + "/labs/" + lab + "/recent-runs", ok: http.StatusOK},
		{name: "recording", c: learner, method: "GET", url: s.URL + "/runs/" + rec + ".json"}, // never read: a read one is cached
		{name: "compare", c: learner, method: "GET", url: s.URL + "/lessons/set-leak/compare?a=session-set&b=tx-local"},
		{name: "prediction", c: learner, method: "GET", url: s.URL + "/lessons/set-leak/predictions/session-set", ok: http.StatusOK},
		{name: "predict", c: learner, method: "POST", url: s.URL + "/lessons/set-leak/predictions", contentType: ctJSON, body: `{"variant":"session-set","choice":1}`},
		{name: "progress.json", c: learner, method: "GET", url: s.URL + "/progress.json", ok: http.StatusOK},
		{name: "workshop notice", c: ann, method: "GET", url: s.URL + "/me/workshop?lesson=set-leak", ok: http.StatusOK},
		{name: "create workshop", c: newAnonClient(), method: "POST", url: s.URL + "/workshops", contentType: ctJSON, body: `{"title":"Later","lessons":["set-leak"]}`},
		{name: "move lesson", c: fac, method: "POST", url: ws + "/lesson", contentType: ctJSON, body: `{"lesson":1}`},
		{name: "end workshop", c: fac, method: "POST", url: ws + "/end"},
	}
}

// newAnonClient is a browser without cookies that does not follow
// redirects.
func newAnonClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// checkOutage requires every page to answer 503 with the outage in words
// within outageAnswer, showing no internals.
func checkOutage(t *testing.T, phase string, pages []storePage) {
	t.Helper()
	var slowest time.Duration
	defer func() {
		t.Logf("PostgreSQL %s: %d pages answered 503, the slowest after %s", phase, len(pages), slowest.Round(time.Millisecond))
	}()
	for _, p := range pages {
		start := time.Now()
		code, body := do(t, p.c, p.method, p.url, p.contentType, p.body, "Accept", ctJSON)
		took := time.Since(start)
		slowest = max(slowest, took)
		if code != http.StatusServiceUnavailable || !strings.Contains(body, sessions.ErrDatabaseDown) || took > outageAnswer {
			t.Errorf("%s with PostgreSQL %s: %d after %s: %s", p.name, phase, code, took.Round(time.Millisecond), body)
		}
		for _, bad := range []string{".s.PGSQL", "rlslab-pg-", "127.0.0.1", "internal error"} {
			if strings.Contains(body, bad) {
				t.Errorf("%s with PostgreSQL %s shows %q: %s", p.name, phase, bad, body)
			}
		}
	}
}

// checkRecovered waits until every page with an ok status answers it
// again, without anyone's help.
func checkRecovered(t *testing.T, phase string, pages []storePage) {
	t.Helper()
	for _, p := range pages {
		if p.ok == 0 {
			continue
		}
		for deadline := time.Now().Add(faultTimeout); ; time.Sleep(20 * time.Millisecond) {
			code, body := do(t, p.c, p.method, p.url, p.contentType, p.body)
			if code == p.ok {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s after PostgreSQL %s: %d %s", p.name, phase, code, body)
				break
			}
		}
	}
}
