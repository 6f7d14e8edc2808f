package web_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/web"
)

var labIDPattern = regexp.MustCompile(`data-lab-id="([0-9a-f]+)"`)

// openLesson does what a browser does on a lesson page: GET it, then (the
// page asks for its lab on load) POST /labs?lesson=SLUG as htmx, and
// returns the id of the lab the swapped-in panel shows.
func openLesson(t *testing.T, s *testServer, c *http.Client, slug string) string {
	t.Helper()
	code, body := do(t, c, "GET", s.URL+"/lessons/"+slug, "", "")
	if code != http.StatusOK {
		t.Fatalf("GET /lessons/%s: %d %s", slug, code, body)
	}
	if m := labIDPattern.FindStringSubmatch(body); m != nil {
		return m[1]
	}
	code, body = do(t, c, "POST", s.URL+"/labs?lesson="+slug, "", "", "HX-Request", "true")
	if code != http.StatusOK {
		t.Fatalf("POST /labs?lesson=%s: %d %s", slug, code, body)
	}
	m := labIDPattern.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("lab panel has no data-lab-id: %s", body)
	}
	return m[1]
}

// do sends a request and returns the status and body.
func do(t *testing.T, c *http.Client, method, u, contentType, body string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// getState reads a lab's state.json.
func getState(t *testing.T, s *testServer, id string) engine.State {
	t.Helper()
	code, body := do(t, http.DefaultClient, "GET", s.URL+"/labs/"+id+"/state.json", "", "")
	if code != http.StatusOK {
		t.Fatalf("state.json: %d %s", code, body)
	}
	var st engine.State
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// waitStatus polls state.json until the lab's status is want.
func waitStatus(t *testing.T, s *testServer, id, want string) engine.State {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := getState(t, s, id)
		if st.Status == want {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("lab %s: status %q, want %q", id, st.Status, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLessonGivesEachBrowserItsOwnLab(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 3})
	a := newBrowserClient(t)
	id1 := openLesson(t, s, a, "set-leak")
	if id2 := openLesson(t, s, a, "set-leak"); id2 != id1 {
		t.Errorf("same browser got lab %s then %s", id1, id2)
	}
	u, _ := url.Parse(s.URL)
	var owner *http.Cookie
	for _, c := range a.Jar.Cookies(u) {
		if c.Name == web.OwnerCookie {
			owner = c
		}
	}
	if owner == nil {
		t.Fatal("no owner cookie")
	}
	b := newBrowserClient(t)
	if id3 := openLesson(t, s, b, "set-leak"); id3 == id1 {
		t.Errorf("another browser got the same lab %s", id3)
	}
	// The cookie's attributes as sent: it survives a browser restart and a
	// link from a chat (Lax), and scripts cannot read it.
	req, _ := http.NewRequest("POST", s.URL+"/labs", nil)
	resp, err := newBrowserClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	sc := resp.Header.Get("Set-Cookie")
	if !strings.Contains(sc, "HttpOnly") || !strings.Contains(sc, "SameSite=Lax") || !strings.Contains(sc, "Max-Age=") {
		t.Errorf("owner cookie %q: want HttpOnly, SameSite=Lax and a Max-Age", sc)
	}
}

// TestGetNeverCreatesALab opens every lesson and the home page as a
// cookie-less client (a crawler, a link preview): no lab is made.
func TestGetNeverCreatesALab(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 3})
	for _, path := range []string{"/", "/lessons/set-leak", "/lessons/pgbouncer-tx", "/lessons/shared-pool"} {
		code, body := do(t, &http.Client{}, "GET", s.URL+path, "", "")
		if code != http.StatusOK {
			t.Errorf("GET %s: %d", path, code)
		}
		if path != "/" && !strings.Contains(body, `hx-post="/labs?lesson=`) {
			t.Errorf("GET %s: the page does not ask for a lab by POST", path)
		}
	}
	if n := len(s.Labs.Labs()); n != 0 {
		t.Errorf("GET requests made %d labs", n)
	}
}

func TestFullLabsGiveAClearPage(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 1})
	openLesson(t, s, newBrowserClient(t), "set-leak")
	code, body := do(t, newBrowserClient(t), "POST", s.URL+"/labs?lesson=set-leak", "", "", "HX-Request", "true")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "the only lab is in use") {
		t.Errorf("second browser with the cap at 1: %d %s", code, body)
	}
	if n := len(s.Labs.Labs()); n != 1 {
		t.Errorf("%d labs open, want 1", n)
	}
}

func TestCreateLab(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 3})
	c := newBrowserClient(t)
	code, body := do(t, c, "POST", s.URL+"/labs", "", "", "Accept", "application/json")
	var got struct{ ID string }
	if code != http.StatusCreated || json.Unmarshal([]byte(body), &got) != nil || got.ID == "" {
		t.Fatalf("POST /labs as JSON: %d %s", code, body)
	}
	req, _ := http.NewRequest("POST", s.URL+"/labs", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	// One lab per browser: the same browser gets the lab it has.
	if resp.StatusCode != http.StatusSeeOther || loc != "/labs/"+got.ID {
		t.Fatalf("POST /labs: %d Location %q, want the lab %s", resp.StatusCode, loc, got.ID)
	}
	code, _ = do(t, c, "GET", s.URL+loc, "", "")
	if code != http.StatusOK {
		t.Errorf("GET %s: %d", loc, code)
	}
}

// TestBadInputChangesNothing sends bad input to every endpoint and checks
// the documented status and that the lab's state did not change.
func TestBadInputChangesNothing(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 3})
	owner := newBrowserClient(t)
	id := openLesson(t, s, owner, "set-leak")
	stranger := newBrowserClient(t)
	openLesson(t, s, stranger, "set-leak") // the stranger has a cookie of its own
	anon := &http.Client{Timeout: 10 * time.Second}
	lab := s.URL + "/labs/" + id
	const js = "application/json"
	const form = "application/x-www-form-urlencoded"
	cases := []struct {
		name                   string
		c                      *http.Client
		method, path, ct, body string
		want                   int
		header                 []string
	}{
		{"unknown lesson", owner, "GET", "/lessons/nope", "", "", 404, nil},
		{"unknown lab page", owner, "GET", "/labs/ffffffff", "", "", 404, nil},
		{"unknown lab state", owner, "GET", "/labs/ffffffff/state.json", "", "", 404, nil},
		{"unknown lab run", owner, "POST", "/labs/ffffffff/runs", js, `{"scenario":"set-leak","variant":"tx-local"}`, 404, nil},
		{"unknown lab reset", owner, "POST", "/labs/ffffffff/reset", "", "", 404, nil},
		{"unknown lab ws", owner, "GET", "/labs/ffffffff/ws", "", "", 404, nil},
		{"unknown scenario", owner, "POST", "/labs/" + id + "/runs", js, `{"scenario":"nope","variant":"tx-local"}`, 400, nil},
		{"unknown variant", owner, "POST", "/labs/" + id + "/runs", js, `{"scenario":"set-leak","variant":"nope"}`, 400, nil},
		{"missing variant", owner, "POST", "/labs/" + id + "/runs", form, `scenario=set-leak`, 400, nil},
		{"speed too high", owner, "POST", "/labs/" + id + "/runs", form, `scenario=set-leak&variant=tx-local&speed=9`, 400, nil},
		{"speed too low", owner, "POST", "/labs/" + id + "/runs", js, `{"scenario":"set-leak","variant":"tx-local","speed":"0.1"}`, 400, nil},
		{"speed not a number", owner, "POST", "/labs/" + id + "/runs", js, `{"scenario":"set-leak","variant":"tx-local","speed":"fast"}`, 400, nil},
		{"pool size out of range", owner, "POST", "/labs/" + id + "/runs", js, `{"scenario":"set-leak","variant":"tx-local","params":{"pool":7}}`, 400, nil},
		{"pool size form out of range", owner, "POST", "/labs/" + id + "/runs", form, `scenario=set-leak&variant=tx-local&param.pool=1`, 400, nil},
		{"unknown parameter", owner, "POST", "/labs/" + id + "/runs", js, `{"scenario":"set-leak","variant":"tx-local","params":{"size":2}}`, 400, nil},
		{"malformed JSON", owner, "POST", "/labs/" + id + "/runs", js, `{"scenario":`, 400, nil},
		{"unknown JSON field", owner, "POST", "/labs/" + id + "/runs", js, `{"scenario":"set-leak","variant":"tx-local","drop":"table"}`, 400, nil},
		{"speed change with no run", owner, "POST", "/labs/" + id + "/speed", form, `speed=2`, 409, nil},
		{"bad speed change", owner, "POST", "/labs/" + id + "/speed", form, `speed=100`, 400, nil},
		{"step with no run", owner, "POST", "/labs/" + id + "/step", "", "", 409, nil},
		{"run without cookie", anon, "POST", "/labs/" + id + "/runs", js, `{"scenario":"set-leak","variant":"tx-local"}`, 403, nil},
		{"run with another browser's cookie", stranger, "POST", "/labs/" + id + "/runs", js, `{"scenario":"set-leak","variant":"tx-local"}`, 403, nil},
		{"reset without cookie", anon, "POST", "/labs/" + id + "/reset", "", "", 403, nil},
		{"run from a foreign origin", owner, "POST", "/labs/" + id + "/runs", js, `{"scenario":"set-leak","variant":"tx-local"}`, 403, []string{"Origin", "http://evil.example"}},
		{"create lab from a foreign origin", owner, "POST", "/labs", "", "", 403, []string{"Origin", "http://evil.example"}},
		{"wrong method on runs", owner, "GET", "/labs/" + id + "/runs", "", "", 405, nil},
		{"wrong method on state", owner, "POST", "/labs/" + id + "/state.json", "", "", 405, nil},
		{"wrong method on lab", owner, "DELETE", "/labs/" + id, "", "", 405, nil},
		{"wrong method on labs", owner, "GET", "/labs", "", "", 405, nil},
	}
	before := getState(t, s, id)
	labsBefore := len(s.Labs.Labs())
	for _, tc := range cases {
		code, body := do(t, tc.c, tc.method, s.URL+tc.path, tc.ct, tc.body, tc.header...)
		if code != tc.want {
			t.Errorf("%s: %s %s: got %d, want %d (%s)", tc.name, tc.method, tc.path, code, tc.want, body)
		}
		if code >= 400 && code != 405 && tc.method != "GET" && !strings.Contains(body, `"error"`) {
			t.Errorf("%s: error body has no message: %s", tc.name, body)
		}
	}
	after := getState(t, s, id)
	if after.Status != before.Status || after.Scenario != before.Scenario || len(after.Requests) != len(before.Requests) {
		t.Errorf("bad input changed the lab: before %s/%s %d requests, after %s/%s %d requests",
			before.Status, before.Scenario, len(before.Requests), after.Status, after.Scenario, len(after.Requests))
	}
	if n := len(s.Labs.Labs()); n != labsBefore {
		t.Errorf("bad input changed the number of labs from %d to %d", labsBefore, n)
	}
	_ = lab
}

func TestRunConflictResetAndRunAgain(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 2})
	c := newBrowserClient(t)
	id := openLesson(t, s, c, "set-leak")
	run := func(body string) (int, string) {
		return do(t, c, "POST", s.URL+"/labs/"+id+"/runs", "application/json", body)
	}
	if code, body := run(`{"scenario":"set-leak","variant":"session-set","speed":"0.25"}`); code != http.StatusAccepted {
		t.Fatalf("first run: %d %s", code, body)
	}
	if code, body := run(`{"scenario":"set-leak","variant":"tx-local","speed":"max"}`); code != http.StatusConflict {
		t.Errorf("second run while the first goes: %d %s", code, body)
	}
	if st := getState(t, s, id); st.Variant != "session-set" || st.Status != engine.StatusRunning {
		t.Errorf("the refused run changed the lab: %s %s", st.Variant, st.Status)
	}
	if code, body := do(t, c, "POST", s.URL+"/labs/"+id+"/reset", "", ""); code != http.StatusOK {
		t.Fatalf("reset: %d %s", code, body)
	}
	st := getState(t, s, id)
	if st.Status != engine.StatusIdle || len(st.Requests) != 0 || len(st.Connections) != 0 {
		t.Errorf("after reset: status %s, %d requests, %d connections", st.Status, len(st.Requests), len(st.Connections))
	}
	if code, body := run(`{"scenario":"set-leak","variant":"session-set","speed":"max"}`); code != http.StatusAccepted {
		t.Fatalf("run after reset: %d %s", code, body)
	}
	st = waitStatus(t, s, id, engine.StatusDone)
	if st.Leaks() != 1 {
		t.Errorf("run after reset: %d leaks, want 1", st.Leaks())
	}
	// The run's pool is closed when it ends (an idle lab holds no
	// connection); its last picture stays, marked closed. A closed
	// connection's backend leaves the server a moment later.
	for deadline := time.Now().Add(5 * time.Second); st.Server.Backends != 0 && time.Now().Before(deadline); {
		st = getState(t, s, id)
	}
	if st.Server.Backends != 0 || len(st.Connections) != 2 {
		t.Errorf("after the run: server says %d backends, %d connections shown", st.Server.Backends, len(st.Connections))
	}
	for _, c := range st.Connections {
		if c.State != engine.ConnClosed {
			t.Errorf("connection %d shown as %s after the run", c.PID, c.State)
		}
	}
}

func TestSingleStepAndSpeedChange(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 2})
	c := newBrowserClient(t)
	id := openLesson(t, s, c, "set-leak")
	if code, body := do(t, c, "POST", s.URL+"/labs/"+id+"/runs", "application/x-www-form-urlencoded", "scenario=set-leak&variant=tx-local&speed=step"); code != http.StatusAccepted {
		t.Fatalf("run: %d %s", code, body)
	}
	// The run's pace is single-step, and it holds on its first frame (the
	// pool's) until Step.
	lab, err := s.Labs.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if p := lab.Pace(); p == nil || !p.Speed().Single {
		t.Fatalf("pace after speed=step: %+v", p)
	}
	changes, unsubscribe := lab.Tracker().Subscribe()
	defer unsubscribe()
	for lab.Tracker().Frame() < 1 {
		<-changes
	}
	st := getState(t, s, id)
	if st.Status != engine.StatusRunning || len(st.Requests) != 0 || lab.Tracker().Frame() != 1 {
		t.Fatalf("single step: status %s with %d requests on frame %d before any step", st.Status, len(st.Requests), lab.Tracker().Frame())
	}
	if code, _ := do(t, c, "POST", s.URL+"/labs/"+id+"/step", "", ""); code != http.StatusOK {
		t.Fatalf("step: %d", code)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(getState(t, s, id).Requests) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(getState(t, s, id).Requests); n != 1 {
		t.Errorf("after one step: %d requests, want 1", n)
	}
	if code, body := do(t, c, "POST", s.URL+"/labs/"+id+"/speed", "application/json", `{"speed":"max"}`); code != http.StatusOK {
		t.Fatalf("speed: %d %s", code, body)
	}
	if p := lab.Pace(); p != nil && !p.Speed().Max {
		t.Errorf("pace after speed=max: %+v", p.Speed())
	}
	st = waitStatus(t, s, id, engine.StatusDone)
	if st.Speed != "max" || st.Leaks() != 0 {
		t.Errorf("after the speed change: speed %s, %d leaks", st.Speed, st.Leaks())
	}
}

func TestHealthz(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 1})
	code, body := do(t, http.DefaultClient, "GET", s.URL+"/healthz", "", "")
	if code != http.StatusOK || !strings.Contains(body, `"ok"`) {
		t.Errorf("healthz: %d %s", code, body)
	}
	code, body = do(t, http.DefaultClient, "GET", s.URL+"/", "", "")
	if code != http.StatusOK || !strings.Contains(body, "/lessons/set-leak") {
		t.Errorf("index: %d", code)
	}
	code, _ = do(t, http.DefaultClient, "GET", s.URL+"/static/vendor/htmx.min.js", "", "")
	if code != http.StatusOK {
		t.Errorf("htmx: %d", code)
	}
}

// TestErrorsAnswerInTheRightFormat checks plain 404s get the site's page,
// and .json endpoints answer JSON whatever the Accept header says.
func TestErrorsAnswerInTheRightFormat(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 2})
	code, body := do(t, &http.Client{}, "GET", s.URL+"/no/such/page", "", "")
	if code != http.StatusNotFound || !strings.Contains(body, `class="error-page"`) {
		t.Errorf("GET /no/such/page: %d %s", code, body)
	}
	code, body = do(t, &http.Client{}, "GET", s.URL+"/labs/ffffffff/state.json", "", "", "Accept", "text/html")
	var e struct{ Error, Code string }
	if code != http.StatusNotFound || json.Unmarshal([]byte(body), &e) != nil || e.Code != "not_found" {
		t.Errorf("state.json of an unknown lab: %d %s", code, body)
	}
	code, body = do(t, &http.Client{}, "GET", s.URL+"/healthz", "", "")
	var h struct {
		Status string
		Budget int
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &h) != nil || h.Status != "ok" || h.Budget <= 0 {
		t.Errorf("healthz: %d %s", code, body)
	}
}
