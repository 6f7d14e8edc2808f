package web_test

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
)

// dialWS opens a lab's websocket with the given Origin.
func dialWS(t *testing.T, s *testServer, id, origin string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	u := "ws" + strings.TrimPrefix(s.URL, "http") + "/labs/" + id + "/ws"
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	return websocket.DefaultDialer.Dial(u, h)
}

// mustDialWS opens a lab's websocket from the server's own origin.
func mustDialWS(t *testing.T, s *testServer, id string) *websocket.Conn {
	t.Helper()
	c, resp, err := dialWS(t, s, id, s.URL)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var (
	statusAttr  = regexp.MustCompile(`data-status="([a-z]+)"`)
	versionAttr = regexp.MustCompile(`data-version="([0-9]+)"`)
	leakRow     = regexp.MustCompile(`<div id="req-[0-9]+" class="req-row leak" role="row" data-seq="[0-9]+" data-pid="([0-9]+)"`)
)

// readFrame reads one frame (with a deadline) and returns it.
func readFrame(t *testing.T, c *websocket.Conn) (string, error) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, b, err := c.ReadMessage()
	return string(b), err
}

// readUntil reads frames until one has the status want; it returns every
// frame read.
func readUntil(t *testing.T, c *websocket.Conn, want string) []string {
	t.Helper()
	var frames []string
	for {
		f, err := readFrame(t, c)
		if err != nil {
			t.Fatalf("after %d frames: %v", len(frames), err)
		}
		frames = append(frames, f)
		if m := statusAttr.FindStringSubmatch(f); m != nil && m[1] == want {
			return frames
		}
	}
}

// reading reads c's frames in the background, as a browser does (it
// answers pings only while it reads), until the socket ends.
func reading(c *websocket.Conn) <-chan string {
	out := make(chan string, 4096)
	go func() {
		defer close(out)
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			out <- string(b)
		}
	}()
	return out
}

// collectUntil takes frames from frames until one has the status want; it
// returns every frame taken.
func collectUntil(t *testing.T, frames <-chan string, want string) []string {
	t.Helper()
	var got []string
	timeout := time.After(time.Minute)
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				t.Fatalf("the socket ended after %d frames", len(got))
			}
			got = append(got, f)
			if m := statusAttr.FindStringSubmatch(f); m != nil && m[1] == want {
				return got
			}
		case <-timeout:
			t.Fatalf("no %s frame within a minute, after %d frames", want, len(got))
		}
	}
}

func TestWebsocketFramesDuringARunAndTwoWatchers(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 2})
	c := newBrowserClient(t)
	id := openLesson(t, s, c, "set-leak")
	w1 := mustDialWS(t, s, id)
	w2 := mustDialWS(t, s, id)
	for _, w := range []*websocket.Conn{w1, w2} {
		f, err := readFrame(t, w)
		if err != nil || !strings.Contains(f, `id="outcome"`) || !strings.Contains(f, `id="status"`) || !strings.Contains(f, `data-status="idle"`) {
			t.Fatalf("first frame is not the full idle state: %v %.200s", err, f)
		}
	}
	// Both read all along, as browsers do.
	r1, r2 := reading(w1), reading(w2)
	if code, body := do(t, c, "POST", s.URL+"/labs/"+id+"/runs", "application/json", `{"scenario":"set-leak","variant":"session-set","speed":"4"}`); code != http.StatusAccepted {
		t.Fatalf("run: %d %s", code, body)
	}
	f1 := collectUntil(t, r1, engine.StatusDone)
	f2 := collectUntil(t, r2, engine.StatusDone)
	running := 0
	for _, f := range f1 {
		if strings.Contains(f, `data-status="running"`) {
			running++
		}
	}
	if running < 5 {
		t.Errorf("watcher 1 saw %d frames during the run, want a frame per step", running)
	}
	// Each socket sends only what changed since its own last message, so
	// the two may split the run differently; they end on the same version.
	last1, last2 := f1[len(f1)-1], f2[len(f2)-1]
	if versionAttr.FindString(last1) != versionAttr.FindString(last2) {
		t.Errorf("the two watchers ended on different versions: %s, %s", versionAttr.FindString(last1), versionAttr.FindString(last2))
	}
	// The request log is swapped whole only when it appears (and when the
	// run began, emptied); rows come one by one.
	whole, appended := 0, 0
	for _, f := range f1[1:] {
		if strings.Contains(f, `id="request-rows"`) {
			whole++
		}
		if strings.Contains(f, `hx-swap-oob="beforeend:#request-rows"`) {
			appended++
		}
	}
	if whole > 2 || appended < 3 {
		t.Errorf("the request log was swapped whole in %d frames and rows appended in %d, want at most 2 and at least 3", whole, appended)
	}
	st := getState(t, s, id)
	var leakPID string
	for _, f := range f1 {
		if m := leakRow.FindStringSubmatch(f); m != nil {
			leakPID = m[1]
		}
	}
	var want string
	for _, r := range st.Requests {
		if r.Leak {
			want = itoa(r.PID)
		}
	}
	if leakPID == "" || leakPID != want {
		t.Errorf("leak row in the frame on backend %q, state.json says %q", leakPID, want)
	}
}

func TestWebsocketRefusesForeignOrigin(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 1})
	id := openLesson(t, s, newBrowserClient(t), "set-leak")
	_, resp, err := dialWS(t, s, id, "http://evil.example")
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Fatalf("foreign origin: err %v, status %d; want 403", err, code)
	}
}

// TestWebsocketBadMessagesCloseOnlyThatSocket sends an oversized message on
// one socket and a malformed one on another; each is closed, a third socket
// keeps getting frames, and a reconnect gets the full state first.
func TestWebsocketBadMessagesCloseOnlyThatSocket(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 1})
	c := newBrowserClient(t)
	id := openLesson(t, s, c, "set-leak")
	big, bad, good := mustDialWS(t, s, id), mustDialWS(t, s, id), mustDialWS(t, s, id)
	for _, w := range []*websocket.Conn{big, bad, good} {
		if _, err := readFrame(t, w); err != nil {
			t.Fatal(err)
		}
	}
	// The server may close the socket before the whole message is written.
	bigWriteErr := big.WriteMessage(websocket.TextMessage, []byte(`{"x":"`+strings.Repeat("a", 64<<10)+`"}`))
	if err := bad.WriteMessage(websocket.TextMessage, []byte(`not json at all`)); err != nil {
		t.Fatal(err)
	}
	for name, w := range map[string]*websocket.Conn{"oversized": big, "malformed": bad} {
		if name == "oversized" && bigWriteErr != nil {
			continue // closed by the server while we wrote
		}
		_, err := readFrame(t, w)
		if err == nil {
			// A frame may have been in flight; the close must follow.
			_, err = readFrame(t, w)
		}
		if err == nil {
			t.Errorf("%s message: socket still open", name)
		}
		var ce *websocket.CloseError
		if name == "malformed" && !(asCloseError(err, &ce) && ce.Code == websocket.CloseUnsupportedData) {
			t.Errorf("malformed message: closed with %v, want close code %d", err, websocket.CloseUnsupportedData)
		}
	}
	// A well-formed message is fine.
	if err := good.WriteMessage(websocket.TextMessage, []byte(`{"HEADERS":{"HX-Request":"true"}}`)); err != nil {
		t.Fatal(err)
	}
	if code, body := do(t, c, "POST", s.URL+"/labs/"+id+"/runs", "application/json", `{"scenario":"set-leak","variant":"tx-local","speed":"max"}`); code != http.StatusAccepted {
		t.Fatalf("run: %d %s", code, body)
	}
	readUntil(t, good, engine.StatusDone)
	// Reconnect: the first frame is the full current state.
	again := mustDialWS(t, s, id)
	f, err := readFrame(t, again)
	if err != nil || !strings.Contains(f, `data-status="done"`) || !strings.Contains(f, `data-seq="3"`) {
		t.Errorf("reconnect: first frame is not the full done state: %v %.300s", err, f)
	}
}

func asCloseError(err error, target **websocket.CloseError) bool {
	ce, ok := err.(*websocket.CloseError)
	if ok {
		*target = ce
	}
	return ok
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }
