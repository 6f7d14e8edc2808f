package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/web"
)

const (
	ctJSON = "application/json"
	ctForm = "application/x-www-form-urlencoded"
)

// createdWorkshop is POST /workshops's JSON answer.
type createdWorkshop struct {
	ID             string `json:"id"`
	Code           string `json:"code"`
	JoinURL        string `json:"join_url"`
	FacilitatorURL string `json:"facilitator_url"`
}

// mustCreateWorkshop creates a workshop as JSON.
func mustCreateWorkshop(t *testing.T, s *testServer, title string, lessons ...string) createdWorkshop {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"title": title, "lessons": lessons})
	code, body := do(t, newBrowserClient(t), "POST", s.URL+"/workshops", ctJSON, string(b), "Accept", ctJSON)
	if code != http.StatusCreated {
		t.Fatalf("POST /workshops: %d %s", code, body)
	}
	var w createdWorkshop
	if err := json.Unmarshal([]byte(body), &w); err != nil {
		t.Fatal(err)
	}
	if w.ID == "" || !strings.Contains(w.JoinURL, "/workshops/"+w.ID+"/join?code=") || !strings.Contains(w.FacilitatorURL, "key=") {
		t.Fatalf("POST /workshops: %s", body)
	}
	return w
}

// facilitatorClient opens the facilitator link in a new browser: it must
// redirect to the address without the key and leave the key in a cookie.
func facilitatorClient(t *testing.T, s *testServer, w createdWorkshop) *http.Client {
	t.Helper()
	c := newBrowserClient(t)
	resp, err := c.Get(w.FacilitatorURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/workshops/"+w.ID {
		t.Fatalf("facilitator link: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == web.FacilitatorCookie {
			cookie = ck
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.Path != "/workshops/"+w.ID {
		t.Fatalf("facilitator cookie: %+v", cookie)
	}
	return c
}

// joined is POST /workshops/{id}/join's JSON answer.
type joined struct {
	Lab    string `json:"lab"`
	Lesson string `json:"lesson"`
}

// mustJoin joins the workshop as name, in browser c, with JSON.
func mustJoin(t *testing.T, w createdWorkshop, c *http.Client, name string) joined {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"name": name})
	code, body := do(t, c, "POST", w.JoinURL, ctJSON, string(b), "Accept", ctJSON)
	if code != http.StatusCreated {
		t.Fatalf("join as %q: %d %s", name, code, body)
	}
	var j joined
	if err := json.Unmarshal([]byte(body), &j); err != nil || j.Lab == "" {
		t.Fatalf("join as %q: %s (%v)", name, body, err)
	}
	return j
}

// workshopState is GET /workshops/{id}/state.json.
type workshopState struct {
	ID     string `json:"id"`
	Title  string `json:"title"`
	Counts struct {
		Joined, Running, Leaked, Fixed int
	} `json:"counts"`
	Participants []struct {
		Name     string `json:"name"`
		Lab      string `json:"lab"`
		Lesson   string `json:"lesson"`
		LeakSeen bool   `json:"leak_seen"`
		FixRun   bool   `json:"fix_run"`
		LastRun  *struct {
			Scenario, Variant, Status string
			Leaks                     int
		} `json:"last_run"`
	} `json:"participants"`
}

func mustWorkshopState(t *testing.T, s *testServer, c *http.Client, id string) workshopState {
	t.Helper()
	code, body := do(t, c, "GET", s.URL+"/workshops/"+id+"/state.json", "", "")
	if code != http.StatusOK {
		t.Fatalf("state.json: %d %s", code, body)
	}
	var st workshopState
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// runToEnd runs scenario/variant at full speed in the lab (as its owner c)
// and waits until the lab has taken the run's recording.
func runToEnd(t *testing.T, s *testServer, c *http.Client, lab, scenario, variant string) {
	t.Helper()
	body := `{"scenario":"` + scenario + `","variant":"` + variant + `","speed":"max"}`
	if code, b := do(t, c, "POST", s.URL+"/labs/"+lab+"/runs", ctJSON, body); code != http.StatusAccepted {
		t.Fatalf("run %s/%s: %d %s", scenario, variant, code, b)
	}
	waitRunEnd(t, s.Labs, lab)
}

func TestWorkshopCreateJoinRunDashboard(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 5})
	w := mustCreateWorkshop(t, s, "Onboarding", "set-leak", "split-calls")

	// The HTML form: the page with both links.
	code, body := do(t, newBrowserClient(t), "POST", s.URL+"/workshops", ctForm, "title=Room+2&lessons=set-leak&lessons=shared-pool")
	if code != http.StatusCreated || !strings.Contains(body, `id="join-url"`) || !strings.Contains(body, `id="facilitator-url"`) {
		t.Errorf("form POST /workshops: %d %s", code, body)
	}

	stranger := newBrowserClient(t)
	if code, body := do(t, stranger, "GET", s.URL+"/workshops/"+w.ID, "", ""); code != http.StatusForbidden {
		t.Errorf("dashboard without the key: %d %s", code, body)
	}
	if code, _ := do(t, stranger, "GET", s.URL+"/workshops/"+w.ID+"?key=wrong-key-wrong-key-wrong", "", ""); code != http.StatusForbidden {
		t.Errorf("dashboard with a wrong key: %d", code)
	}
	if code, _ := do(t, stranger, "GET", s.URL+"/workshops/"+w.ID+"/state.json", "", ""); code != http.StatusForbidden {
		t.Errorf("state.json without the key: %d", code)
	}
	fac := facilitatorClient(t, s, w)
	if code, body := do(t, fac, "GET", s.URL+"/workshops/"+w.ID, "", ""); code != http.StatusOK || !strings.Contains(body, w.Code) {
		t.Fatalf("dashboard with the cookie: %d %s", code, body)
	}

	// Join: the form, then three participants, one through the HTML form.
	if code, body := do(t, newBrowserClient(t), "GET", w.JoinURL, "", ""); code != http.StatusOK || !strings.Contains(body, `name="name"`) {
		t.Errorf("join form: %d %s", code, body)
	}
	ann, bob, eve := newBrowserClient(t), newBrowserClient(t), newBrowserClient(t)
	a := mustJoin(t, w, ann, "Ann")
	b := mustJoin(t, w, bob, "Bob")
	code, body = do(t, eve, "POST", w.JoinURL, ctForm, "name="+url.QueryEscape(`<script>alert(1)</script>`))
	if code != http.StatusSeeOther {
		t.Fatalf("form join: %d %s", code, body)
	}
	u, _ := url.Parse(s.URL)
	if cookies := eve.Jar.Cookies(u); len(cookies) != 1 || cookies[0].Name != web.OwnerCookie {
		t.Fatalf("form join left cookies %v", cookies)
	}
	eveLab := openLesson(t, s, eve, "set-leak") // the lab made at join

	// Each runs: Ann a leak-free run of another lesson (which fixes
	// nothing) and the leak, Bob the fix alone (no leak seen: nothing
	// fixed), Eve the leak then the fix.
	runToEnd(t, s, ann, a.Lab, "unset-setting", "fresh")
	runToEnd(t, s, ann, a.Lab, "set-leak", engine.PatternSessionSet)
	runToEnd(t, s, bob, b.Lab, "set-leak", engine.PatternTxLocal)
	runToEnd(t, s, eve, eveLab, "set-leak", engine.PatternSessionSet)
	runToEnd(t, s, eve, eveLab, "set-leak", engine.PatternTxLocal)

	st := mustWorkshopState(t, s, fac, w.ID)
	if st.Counts.Joined != 3 || st.Counts.Leaked != 2 || st.Counts.Fixed != 1 || st.Counts.Running != 0 {
		t.Errorf("counts: %+v", st.Counts)
	}
	if len(st.Participants) != 3 {
		t.Fatalf("participants: %+v", st.Participants)
	}
	ps := st.Participants
	if ps[0].Name != "Ann" || ps[0].Lab != a.Lab || ps[0].LastRun == nil || ps[0].LastRun.Variant != engine.PatternSessionSet || ps[0].LastRun.Leaks == 0 || !ps[0].LeakSeen || ps[0].FixRun {
		t.Errorf("Ann: %+v %+v", ps[0], ps[0].LastRun)
	}
	if ps[1].Name != "Bob" || ps[1].LastRun == nil || ps[1].LastRun.Leaks != 0 || ps[1].LastRun.Status != engine.StatusDone || ps[1].LeakSeen || ps[1].FixRun {
		t.Errorf("Bob: %+v %+v", ps[1], ps[1].LastRun)
	}
	if ps[2].Lab != eveLab || !ps[2].LeakSeen || !ps[2].FixRun || ps[2].Lesson != "set-leak" {
		t.Errorf("Eve: %+v", ps[2])
	}

	// The dashboard escapes the name with markup.
	_, body = do(t, fac, "GET", s.URL+"/workshops/"+w.ID, "", "")
	if strings.Contains(body, "<script>alert(1)") || !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("the name with markup is not escaped on the dashboard")
	}
	for _, want := range []string{`data-name="Ann"`, `data-leak-seen="yes"`, "/labs/" + a.Lab + "/present", `data-count="leaked">2<`} {
		if !strings.Contains(body, want) {
			t.Errorf("dashboard lacks %s", want)
		}
	}
}

func TestWorkshopBadInput(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 3})
	w := mustCreateWorkshop(t, s, "Bad input", "set-leak")
	fac := facilitatorClient(t, s, w)
	someone := newBrowserClient(t)
	mustJoin(t, w, someone, "Sam")
	big := strings.Repeat("x", 10<<10)
	cases := []struct {
		name                   string
		c                      *http.Client
		method, path, ct, body string
		want                   int
	}{
		{"no title", fac, "POST", "/workshops", ctJSON, `{"title":"","lessons":["set-leak"]}`, 400},
		{"no lessons", fac, "POST", "/workshops", ctJSON, `{"title":"x","lessons":[]}`, 400},
		{"unknown lesson", fac, "POST", "/workshops", ctForm, "title=x&lessons=set-leak,nope", 400},
		{"lessons not a list", fac, "POST", "/workshops", ctJSON, `{"title":"x","lessons":"set-leak"}`, 400},
		{"malformed JSON", fac, "POST", "/workshops", ctJSON, `{"title":`, 400},
		{"unknown workshop dashboard", fac, "GET", "/workshops/nope", "", "", 404},
		{"unknown workshop state", fac, "GET", "/workshops/nope/state.json", "", "", 404},
		{"unknown workshop join", someone, "GET", "/workshops/nope/join?code=" + w.Code, "", "", 404},
		{"wrong code", someone, "GET", "/workshops/" + w.ID + "/join?code=ZZZZZZ", "", "", 404},
		{"name of 10 KB", newBrowserClient(t), "POST", "/workshops/" + w.ID + "/join?code=" + w.Code, ctJSON, `{"name":"` + big + `"}`, 400},
		{"name of 10 KB as a form", newBrowserClient(t), "POST", "/workshops/" + w.ID + "/join?code=" + w.Code, ctForm, "name=" + big, 400},
		{"empty name", newBrowserClient(t), "POST", "/workshops/" + w.ID + "/join?code=" + w.Code, ctJSON, `{"name":"  "}`, 400},
		{"name taken", newBrowserClient(t), "POST", "/workshops/" + w.ID + "/join?code=" + w.Code, ctJSON, `{"name":"sam"}`, 409},
		{"move without the key", someone, "POST", "/workshops/" + w.ID + "/lesson", ctForm, "lesson=1", 403},
		{"end without the key", someone, "POST", "/workshops/" + w.ID + "/end", "", "", 403},
		{"move to no lesson", fac, "POST", "/workshops/" + w.ID + "/lesson", ctForm, "lesson=7", 400},
		{"move to a lesson not in the workshop", fac, "POST", "/workshops/" + w.ID + "/lesson", ctForm, "lesson=split-calls", 400},
		{"unknown run", someone, "GET", "/runs/AAAAAAAAAAAAAAAAAAAAAA", "", "", 404},
		{"unknown run JSON", someone, "GET", "/runs/AAAAAAAAAAAAAAAAAAAAAA.json", "", "", 404},
		{"junk run id", someone, "GET", "/runs/%3Cb%3E", "", "", 404},
		{"unknown run frame", someone, "GET", "/runs/AAAAAAAAAAAAAAAAAAAAAA/frames/0", "", "", 404},
		{"compare unknown runs", someone, "GET", "/runs/AAAAAAAAAAAAAAAAAAAAAA/vs/BBBBBBBBBBBBBBBBBBBBBB", "", "", 404},
		{"runs of a junk lab", someone, "GET", "/labs/%3Cb%3E/runs.json", "", "", 404},
		{"present an unknown lab", someone, "GET", "/labs/ffffffff/present", "", "", 404},
	}
	before := mustWorkshopState(t, s, fac, w.ID)
	labsBefore := len(s.Labs.Labs())
	for _, tc := range cases {
		code, body := do(t, tc.c, tc.method, s.URL+tc.path, tc.ct, tc.body)
		if code != tc.want {
			t.Errorf("%s: %s %s: got %d, want %d (%.200s)", tc.name, tc.method, tc.path, code, tc.want, body)
		}
		if strings.Contains(body, "<script>") && strings.Contains(tc.body, "script") {
			t.Errorf("%s: markup echoed", tc.name)
		}
	}
	after := mustWorkshopState(t, s, fac, w.ID)
	if len(after.Participants) != len(before.Participants) || after.Counts != before.Counts {
		t.Errorf("bad input changed the workshop: %+v, then %+v", before, after)
	}
	if n := len(s.Labs.Labs()); n != labsBefore {
		t.Errorf("bad input changed the number of labs from %d to %d", labsBefore, n)
	}
}

func TestJoinCodesAreRateLimited(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 2, Spares: -1})
	w := mustCreateWorkshop(t, s, "Limits", "set-leak")
	c := newBrowserClient(t)
	for i := range 30 {
		if code, body := do(t, c, "GET", s.URL+"/join?code=WRONG"+string(rune('A'+i/26))+string(rune('A'+i%26)), "", ""); code != http.StatusNotFound {
			t.Fatalf("wrong code %d: %d %s", i, code, body)
		}
	}
	code, body := do(t, c, "GET", s.URL+"/join?code="+w.Code, "", "")
	if code != http.StatusTooManyRequests || !strings.Contains(body, "wait a minute") {
		t.Errorf("after 30 wrong codes the right one: %d %s", code, body)
	}
	code, _ = do(t, c, "POST", w.JoinURL, ctJSON, `{"name":"Late"}`, "Accept", ctJSON)
	if code != http.StatusTooManyRequests {
		t.Errorf("join after 30 wrong codes: %d", code)
	}
}

// fromAddress returns a client whose connections come from the loopback
// address ip (Linux answers on all of 127.0.0.0/8), with keep-alives off.
func fromAddress(ip net.IP) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// getFrom sends GET path to the server at base over a TCP connection of
// its own from the loopback address ip and returns the answer's status (0
// on error). It writes the request by hand: ten thousand http.Clients,
// each with a transport of its own, cost more than the server's answers.
func getFrom(ip net.IP, base, path string) int {
	host := strings.TrimPrefix(base, "http://")
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", host)
	if err != nil {
		return 0
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host); err != nil {
		return 0
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestFaultJoinCodesFromManyAddresses tries one wrong join code from each
// of 10,000 addresses, then guesses from a new one: it is refused (429), as
// the limiter cannot be switched off by volume (it once stopped counting
// new addresses after 10,000).
func TestFaultJoinCodesFromManyAddresses(t *testing.T) {
	t.Parallel() // waits on the network more than it works
	s := mustStartServer(t, sessions.Config{MaxLabs: 1, Spares: -1})
	mustCreateWorkshop(t, s, "Crowd", "set-leak")
	const addresses = 10000
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[int]int{}
	next := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				code := getFrom(net.IPv4(127, 10, byte(i>>8), byte(i)), s.URL, "/join?code=WRONG"+strconv.Itoa(i))
				mu.Lock()
				counts[code]++
				mu.Unlock()
			}
		}()
	}
	for i := range addresses {
		next <- i
	}
	close(next)
	wg.Wait()
	t.Logf("one wrong code from each of %d addresses: %v (status: count)", addresses, counts)
	if counts[http.StatusNotFound]+counts[http.StatusTooManyRequests] != addresses {
		t.Fatalf("wrong codes from %d addresses: %v", addresses, counts)
	}
	// A new address is counted: its guesses are refused once all
	// addresses together used up theirs (at once, unless the attack was
	// slow enough for the bucket to refill), and at the latest after its
	// own joinFailures.
	newcomer := fromAddress(net.IPv4(127, 20, 0, 1))
	for i := range 31 {
		code, body := do(t, newcomer, "GET", s.URL+"/join?code=GUESS"+strconv.Itoa(i), "", "", "Accept", ctJSON)
		if code == http.StatusTooManyRequests {
			t.Logf("a new address after %d addresses: refused at guess %d", addresses, i+1)
			return
		}
		if code != http.StatusNotFound {
			t.Fatalf("guess %d from a new address: %d %s", i+1, code, body)
		}
	}
	t.Errorf("a new address after %d addresses made 31 wrong guesses without a 429", addresses)
}

func TestWorkshopMoveLessonAndEnd(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 3})
	w := mustCreateWorkshop(t, s, "Moves", "set-leak", "split-calls", "shared-pool")
	fac := facilitatorClient(t, s, w)
	ann := newBrowserClient(t)
	j := mustJoin(t, w, ann, "Ann")
	notice := func(c *http.Client, lesson string) (int, string) {
		return do(t, c, "GET", s.URL+"/me/workshop?lesson="+lesson, "", "", "HX-Request", "true")
	}
	if code, body := notice(ann, "set-leak"); code != http.StatusOK || strings.Contains(body, "moved") {
		t.Errorf("notice before a move: %d %s", code, body)
	}
	if code, _ := notice(newBrowserClient(t), "set-leak"); code != 286 {
		t.Errorf("notice for a stranger: %d, want 286 (stop polling)", code)
	}
	if code, body := do(t, fac, "POST", s.URL+"/workshops/"+w.ID+"/lesson", ctForm, "lesson=3", "HX-Request", "true"); code != http.StatusOK {
		t.Fatalf("move: %d %s", code, body)
	}
	code, body := notice(ann, "set-leak")
	if code != http.StatusOK || !strings.Contains(body, "Your facilitator moved to lesson 3") || !strings.Contains(body, `href="/lessons/shared-pool"`) {
		t.Errorf("notice after the move: %d %s", code, body)
	}
	if _, body := notice(ann, "shared-pool"); strings.Contains(body, "moved") {
		t.Errorf("notice on the lesson moved to: %s", body)
	}
	// A new participant lands on the lesson everyone is on.
	code, body = do(t, newBrowserClient(t), "POST", w.JoinURL, ctForm, "name=Bo")
	if code != http.StatusSeeOther {
		t.Fatalf("join: %d %s", code, body)
	}

	if code, body := do(t, fac, "POST", s.URL+"/workshops/"+w.ID+"/end", "", "", "Accept", ctJSON); code != http.StatusOK {
		t.Fatalf("end: %d %s", code, body)
	}
	if _, err := s.Labs.Get(j.Lab); err == nil {
		t.Errorf("lab %s survived the end of its workshop", j.Lab)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, err := s.Store.Workshop(ctx, w.ID)
	if err != nil || !ws.Ended() {
		t.Errorf("workshop after end: %+v %v", ws, err)
	}
	if code, _ := do(t, newBrowserClient(t), "POST", w.JoinURL, ctJSON, `{"name":"Late"}`, "Accept", ctJSON); code != http.StatusNotFound {
		t.Errorf("join an ended workshop: %d", code)
	}
	if _, body := notice(ann, "shared-pool"); !strings.Contains(body, "has ended") {
		t.Errorf("notice after the end: %s", body)
	}
	if code, body := do(t, fac, "GET", s.URL+"/workshops/"+w.ID, "", ""); code != http.StatusOK || !strings.Contains(body, "has ended") {
		t.Errorf("dashboard after the end: %d", code)
	}
}

// dialPath opens a websocket to path with the client's cookies.
func dialPath(t *testing.T, s *testServer, c *http.Client, path string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{Jar: c.Jar, HandshakeTimeout: 10 * time.Second}
	h := http.Header{"Origin": {s.URL}}
	return d.Dial("ws"+strings.TrimPrefix(s.URL, "http")+path, h)
}

func TestDashboardWebsocket(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 3})
	w := mustCreateWorkshop(t, s, "Live", "set-leak")
	if _, resp, err := dialPath(t, s, newBrowserClient(t), "/workshops/"+w.ID+"/ws"); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("dashboard websocket without the key: %v %v", err, resp)
	}
	fac := facilitatorClient(t, s, w)
	conn, _, err := dialPath(t, s, fac, "/workshops/"+w.ID+"/ws")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The socket is read all the time, as a browser does: one that does
	// not answer pings is dropped within seconds.
	frames := keepReading(conn)
	first := frames.until(t, "first dashboard frame", `id="dash-live"`)
	if !strings.Contains(first, `hx-swap-oob="true"`) || !strings.Contains(first, `data-joined="0"`) {
		t.Fatalf("first dashboard frame: %s", first)
	}
	c := newBrowserClient(t)
	j := mustJoin(t, w, c, "Zoe")
	frames.until(t, "a frame with Zoe", `data-name="Zoe"`)
	runToEnd(t, s, c, j.Lab, "set-leak", engine.PatternSessionSet)
	frames.until(t, "a frame with Zoe's leak", `data-leak-seen="yes"`)
}

func TestRecordingsReplayAndCompare(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 2})
	c := newBrowserClient(t)
	lab := openLesson(t, s, c, "set-leak")
	runToEnd(t, s, c, lab, "set-leak", engine.PatternSessionSet)
	runToEnd(t, s, c, lab, "set-leak", engine.PatternTxLocal)
	runToEnd(t, s, c, lab, "split-calls", "split")
	if code, body := do(t, c, "POST", s.URL+"/labs/"+lab+"/reset", "", ""); code != http.StatusOK {
		t.Fatalf("reset: %d %s", code, body)
	}

	code, body := do(t, http.DefaultClient, "GET", s.URL+"/labs/"+lab+"/runs.json", "", "")
	if code != http.StatusOK {
		t.Fatalf("runs.json: %d %s", code, body)
	}
	var runs []struct {
		ID, Scenario, Variant, Status string
		Leaks                         int
		FinishedAt                    time.Time `json:"finished_at"`
	}
	if err := json.Unmarshal([]byte(body), &runs); err != nil || len(runs) != 3 {
		t.Fatalf("runs.json: %v %s", err, body)
	}
	split, tx, leak := runs[0], runs[1], runs[2]
	if split.Scenario != "split-calls" || tx.Variant != engine.PatternTxLocal || leak.Variant != engine.PatternSessionSet || leak.Leaks == 0 || tx.Leaks != 0 || leak.FinishedAt.IsZero() {
		t.Errorf("runs.json, newest first: %+v", runs)
	}

	code, body = do(t, http.DefaultClient, "GET", s.URL+"/runs/"+leak.ID+".json", "", "")
	var rec struct {
		ID      string
		Leaks   int
		Outcome struct{ Leaks int }
		Frames  []struct {
			AtMs  int64        `json:"at_ms"`
			State engine.State `json:"state"`
		}
	}
	if err := json.Unmarshal([]byte(body), &rec); code != http.StatusOK || err != nil || rec.ID != leak.ID || rec.Outcome.Leaks != leak.Leaks || len(rec.Frames) < 2 {
		t.Fatalf("/runs/%s.json: %d %v %.300s", leak.ID, code, err, body)
	}
	if code, body := do(t, http.DefaultClient, "GET", s.URL+"/runs/"+leak.ID, "", ""); code != http.StatusOK || !strings.Contains(body, `id="replay-scrub"`) || !strings.Contains(body, `id="live"`) {
		t.Errorf("replay page: %d", code)
	}
	last := len(rec.Frames) - 1
	code, body = do(t, http.DefaultClient, "GET", s.URL+"/runs/"+leak.ID+"/frames/"+itoa(uint32(last)), "", "")
	if code != http.StatusOK || !strings.Contains(body, `data-frame="`+itoa(uint32(last))+`"`) || !strings.Contains(body, `data-leak="true"`) {
		t.Errorf("last frame: %d %.300s", code, body)
	}
	if code, _ := do(t, http.DefaultClient, "GET", s.URL+"/runs/"+leak.ID+"/frames/"+itoa(uint32(last+1)), "", ""); code != http.StatusNotFound {
		t.Errorf("frame past the end: %d", code)
	}

	code, body = do(t, http.DefaultClient, "GET", s.URL+"/runs/"+leak.ID+"/vs/"+tx.ID, "", "")
	if code != http.StatusOK || !strings.Contains(body, `data-differs="yes"`) || !strings.Contains(body, "/runs/"+leak.ID+"?frame=") {
		t.Errorf("compare: %d %.300s", code, body)
	}
	code, body = do(t, http.DefaultClient, "GET", s.URL+"/runs/"+leak.ID+"/vs/"+split.ID, "", "")
	if code != http.StatusBadRequest || !strings.Contains(body, "only runs of the same scenario compare") {
		t.Errorf("compare of two scenarios: %d %.300s", code, body)
	}
	if code, body := do(t, c, "GET", s.URL+"/labs/"+lab+"/recent-runs", "", ""); code != http.StatusOK || !strings.Contains(body, "/runs/"+leak.ID+"/vs/"+tx.ID) {
		t.Errorf("recent runs: %d %s", code, body)
	}
}

func TestPresentAndWatchViews(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 3})
	owner := newBrowserClient(t)
	lab := openLesson(t, s, owner, "set-leak")
	runToEnd(t, s, owner, lab, "set-leak", engine.PatternSessionSet)

	code, body := do(t, owner, "GET", s.URL+"/labs/"+lab+"/present", "", "")
	if code != http.StatusOK || !strings.Contains(body, `data-owner="yes"`) || !strings.Contains(body, `id="variant-keys"`) || !strings.Contains(body, "leak") {
		t.Errorf("presenter view for the owner: %d", code)
	}
	watcher := newBrowserClient(t)
	code, body = do(t, watcher, "GET", s.URL+"/labs/"+lab+"/present", "", "")
	if code != http.StatusOK || !strings.Contains(body, `data-owner="no"`) || strings.Contains(body, `id="variant-keys"`) {
		t.Errorf("presenter view for a watcher: %d", code)
	}
	code, body = do(t, watcher, "GET", s.URL+"/labs/"+lab, "", "")
	for _, want := range []string{`class="watch-lesson"`, `id="narration-history"`, `id="present-head"`, `data-variant="session-set"`} {
		if !strings.Contains(body, want) {
			t.Errorf("watch view lacks %s", want)
		}
	}
	if code != http.StatusOK || strings.Contains(body, "run-form") || strings.Contains(body, `id="reset"`) {
		t.Errorf("watch view: %d, with controls", code)
	}
	if code, body := do(t, owner, "GET", s.URL+"/labs/"+lab, "", ""); code != http.StatusOK || !strings.Contains(body, "run-form") {
		t.Errorf("the owner's lab page lost its controls: %d", code)
	}
	conn, _, err := dialPath(t, s, watcher, "/labs/"+lab+"/present/ws")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	f, err := readFrame(t, conn)
	if err != nil || !strings.Contains(f, `id="status"`) || !strings.Contains(f, `id="present-head"`) || !strings.Contains(f, `data-testid="outcome"`) {
		t.Errorf("presenter frame: %v %.300s", err, f)
	}
}
