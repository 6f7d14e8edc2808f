package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// serveEnv, when set in the environment, makes the test binary run rlslab
// itself (main, with the binary's arguments) instead of the tests: the
// fault suite starts it as a child process to send it real signals.
const serveEnv = "RLSLAB_FAULT_TEST_SERVE"

func init() {
	if os.Getenv(serveEnv) == "1" {
		main()
		os.Exit(0)
	}
}

// client is one browser: a cookie jar, no redirects followed.
func client(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// call sends a request and returns the status and body.
func call(t *testing.T, c *http.Client, method, u, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// newLab makes a lab for c and returns its id.
func newLab(t *testing.T, c *http.Client, base string) string {
	t.Helper()
	// 202: the lab waits in line for a sandbox; ask again, as the page does.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		code, body := call(t, c, "POST", base+"/labs", "", "")
		if code == http.StatusAccepted && time.Now().Before(deadline) {
			continue
		}
		var got struct{ ID string }
		if code != http.StatusCreated || json.Unmarshal([]byte(body), &got) != nil || got.ID == "" {
			t.Fatalf("POST /labs: %d %s", code, body)
		}
		return got.ID
	}
}

// state reads a lab's state.json.
func state(t *testing.T, c *http.Client, base, id string) engine.State {
	t.Helper()
	code, body := call(t, c, "GET", base+"/labs/"+id+"/state.json", "", "")
	var st engine.State
	if code != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil {
		t.Fatalf("state.json: %d %s", code, body)
	}
	return st
}

// childrenNamed returns the pids of the processes whose parent is ppid and
// whose command is name.
func childrenNamed(ppid int, name string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(data)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open {
			continue
		}
		fields := strings.Fields(s[close+1:])
		if len(fields) < 2 || s[open+1:close] != name {
			continue
		}
		if p, _ := strconv.Atoi(fields[1]); p == ppid {
			out = append(out, pid)
		}
	}
	return out
}

// leftovers counts the lab databases and lab roles that the rlslab whose
// log is given made (by the instance number its log names, so that other
// test packages sharing the server are not counted), and the backends on
// those databases.
func leftovers(t *testing.T, log string) (dbs, roles, backends int) {
	t.Helper()
	m := regexp.MustCompile(`msg="labs ready" instance=(-?\d+)`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no instance number in the log:\n%s", log)
	}
	marker := "rlslab lab; instance " + m[1]
	err := pgenvtest.MustConnect(t).QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM pg_database WHERE shobj_description(oid, 'pg_database') = $1),
		(SELECT count(*) FROM pg_roles WHERE shobj_description(oid, 'pg_authid') = $1),
		(SELECT count(*) FROM pg_stat_activity a JOIN pg_database d ON d.datname = a.datname
		 WHERE shobj_description(d.oid, 'pg_database') = $1)`, marker).Scan(&dbs, &roles, &backends)
	if err != nil {
		t.Fatal(err)
	}
	return dbs, roles, backends
}

// TestFaultSIGTERMMidRun starts rlslab as a process, steps the PgBouncer
// lesson (single-step mode) until clients hold connections through
// PgBouncer, and
// sends SIGTERM: rlslab exits 0 and leaves no lab database, role or
// backend, no PgBouncer process and no PgBouncer directory.
func TestFaultSIGTERMMidRun(t *testing.T) {
	srv := pgenvtest.MustServer(t)
	// A temporary directory of its own, to see what it leaves there;
	// PgBouncer may run as another user, who must be able to enter it.
	tmp, err := os.MkdirTemp("", "rlslab-fault-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "serve", "-addr", "127.0.0.1:0", "-db", srv.URL, "-max-labs", "2", "-spares", "-1", "-pgbouncer", "local")
	cmd.Env = append(os.Environ(), serveEnv+"=1", "TMPDIR="+tmp)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	var logsMu sync.Mutex
	cmd.Stderr = writerFunc(func(p []byte) (int, error) { logsMu.Lock(); defer logsMu.Unlock(); return logs.Write(p) })
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	base, ok := strings.CutPrefix(strings.TrimSpace(line), "rlslab listening on ")
	if err != nil || !ok {
		logsMu.Lock()
		defer logsMu.Unlock()
		t.Fatalf("serve printed %q (%v): %s", line, err, logs.String())
	}
	c := client(t)
	id := newLab(t, c, base)
	if code, body := call(t, c, "POST", base+"/labs/"+id+"/runs", "application/json", `{"scenario":"pgbouncer-tx","variant":"session-set","speed":"step"}`); code != http.StatusAccepted {
		t.Fatalf("run: %d %s", code, body)
	}
	var bouncers []int
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := state(t, c, base, id)
		bouncers = childrenNamed(cmd.Process.Pid, "pgbouncer")
		held := 0
		for _, conn := range st.Connections {
			if conn.State != engine.ConnClosed {
				held++
			}
		}
		if held > 0 && len(bouncers) == 1 && st.Server.Backends > 0 {
			break
		}
		call(t, c, "POST", base+"/labs/"+id+"/step", "", "")
		if time.Now().After(deadline) || st.Status != engine.StatusRunning {
			t.Fatalf("never mid-run through PgBouncer: status %s (%s), %d connections held, PgBouncers %v", st.Status, st.Error, held, bouncers)
		}
		time.Sleep(10 * time.Millisecond)
	}
	dirs, _ := filepath.Glob(filepath.Join(tmp, "rlslab-pgbouncer-*"))
	if len(dirs) != 1 {
		t.Fatalf("PgBouncer directories in TMPDIR: %v", dirs)
	}
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			logsMu.Lock()
			defer logsMu.Unlock()
			t.Fatalf("rlslab after SIGTERM: %v; log:\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("rlslab did not exit within 20s of SIGTERM")
	}
	t.Logf("rlslab exited 0 %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	for _, pid := range bouncers {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("PgBouncer %d still there after rlslab exited: %v", pid, err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "*")); len(left) != 0 {
		t.Errorf("left in TMPDIR: %v", left)
	}
	logsMu.Lock()
	log := logs.String()
	logsMu.Unlock()
	if dbs, roles, backends := leftovers(t, log); dbs+roles+backends != 0 {
		t.Errorf("left on the server: %d lab databases, %d lab roles, %d lab backends", dbs, roles, backends)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestFaultSlowClients runs serve with clients that send their headers or
// bodies one byte at a time: the server cuts them off at its header and
// read timeouts, keeps answering everyone else meanwhile, and nothing of
// them is left once it has shut down. It serves with -read-timeout 3s.
func TestFaultSlowClients(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the server's read timeout (3 s)")
	}
	srv := pgenvtest.MustServer(t)
	ignore := goleak.IgnoreCurrent()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-db", srv.URL, "-max-labs", "2", "-spares", "-1", "-read-timeout", "3s"}, func(string) string { return "" }, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		cancel()
		t.Fatalf("serve printed nothing: %v", <-done)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	base := strings.TrimPrefix(strings.TrimSpace(line), "rlslab listening on ")
	addr := strings.TrimPrefix(base, "http://")
	c := client(t)
	id := newLab(t, c, base)
	u, _ := http.NewRequest("GET", base, nil)
	var cookies []string
	for _, ck := range c.Jar.Cookies(u.URL) {
		cookies = append(cookies, ck.Name+"="+ck.Value)
	}
	cookie := strings.Join(cookies, "; ")

	type result struct {
		kind   string
		took   time.Duration
		answer string
	}
	slow := func(kind, head, body string) result {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			return result{kind: kind, answer: err.Error()}
		}
		defer conn.Close()
		start := time.Now()
		got := make(chan string, 1)
		go func() {
			b, _ := io.ReadAll(conn)
			first, _, _ := strings.Cut(string(b), "\r\n")
			got <- first
		}()
		send := head + body
		if kind == "body" {
			if _, err := conn.Write([]byte(head)); err != nil {
				return result{kind: kind, answer: err.Error()}
			}
			send = body
		}
		for i := 0; i < len(send); i++ {
			select {
			case a := <-got:
				return result{kind: kind, took: time.Since(start), answer: a}
			case <-time.After(250 * time.Millisecond):
			}
			if _, err := conn.Write([]byte{send[i]}); err != nil {
				break
			}
		}
		select {
		case a := <-got:
			return result{kind: kind, took: time.Since(start), answer: a}
		case <-time.After(30 * time.Second):
			return result{kind: kind, took: time.Since(start), answer: "still open"}
		}
	}
	body := "scenario=set-leak&variant=tx-local&speed=max&" + strings.Repeat("x", 200)
	head := fmt.Sprintf("POST /labs/%s/runs HTTP/1.1\r\nHost: %s\r\nCookie: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n", id, addr, cookie, len(body))
	results := make(chan result, 20)
	for i := 0; i < 10; i++ {
		go func() { results <- slow("header", head, body) }()
		go func() { results <- slow("body", head, body) }()
	}
	// Meanwhile everyone else is served at once.
	for i := 0; i < 5; i++ {
		start := time.Now()
		code, _ := call(t, &http.Client{Timeout: 5 * time.Second}, "GET", base+"/healthz", "", "")
		if code != http.StatusOK || time.Since(start) > 2*time.Second {
			t.Errorf("healthz during the slow clients: %d after %s", code, time.Since(start))
		}
	}
	for i := 0; i < 20; i++ {
		r := <-results
		limit := time.Second // ReadHeaderTimeout: a third of -read-timeout
		if r.kind == "body" {
			limit = 3 * time.Second // ReadTimeout
		}
		if r.took > limit+3*time.Second || r.answer == "still open" {
			t.Errorf("slow %s: cut off after %s (%q), want within %s", r.kind, r.took.Round(time.Millisecond), r.answer, limit)
		}
		if r.kind == "body" && r.answer != "" && !strings.Contains(r.answer, " 400 ") && !strings.Contains(r.answer, " 408 ") {
			t.Errorf("slow body answered %q, want a 4xx or a closed connection", r.answer)
		}
		if i == 0 || i == 19 {
			t.Logf("slow %s: cut off after %s with %q", r.kind, r.took.Round(time.Millisecond), r.answer)
		}
	}
	if st := state(t, c, base, id); st.Status != engine.StatusIdle {
		t.Errorf("a cut-off body started a run: %s", st.Status)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not shut down")
	}
	c.CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	goleak.VerifyNone(t, ignore)
}
