package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/store"
	"github.com/rlslab/rlslab/static"
	"github.com/rlslab/rlslab/web"
)

// get sends a GET without following redirects and returns the status, the
// Location header and the body.
func get(t *testing.T, c *http.Client, u string, header ...string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
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
	return resp.StatusCode, resp.Header.Get("Location"), string(b)
}

// labRuns reads the lab's recordings, newest first (ids and variants).
func labRuns(t *testing.T, s *testServer, lab string) []struct{ ID, Variant string } {
	t.Helper()
	code, body := do(t, http.DefaultClient, "GET", s.URL+"/labs/"+lab+"/runs.json", "", "")
	var runs []struct{ ID, Variant string }
	if err := json.Unmarshal([]byte(body), &runs); code != http.StatusOK || err != nil {
		t.Fatalf("runs.json: %d %v %s", code, err, body)
	}
	return runs
}

func TestLessonCompareLink(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 3})
	c := newBrowserClient(t)
	lab := openLesson(t, s, c, "set-leak")
	link := s.URL + "/lessons/set-leak/compare?a=session-set&b=tx-local"

	// The lesson's prose links to it.
	if _, body := do(t, c, "GET", s.URL+"/lessons/set-leak", "", ""); !strings.Contains(body, `href="/lessons/set-leak/compare?a=session-set&amp;b=tx-local"`) {
		t.Error("lesson set-leak does not link to its comparison")
	}
	// Nothing run yet: a page that says to run both first.
	code, loc, body := get(t, c, link)
	if code != http.StatusNotFound || loc != "" || !strings.Contains(body, `data-missing="session-set tx-local"`) || !strings.Contains(body, `href="/lessons/set-leak"`) {
		t.Fatalf("before any run: %d %q %.400s", code, loc, body)
	}
	runToEnd(t, s, c, lab, "set-leak", engine.PatternSessionSet)
	code, _, body = get(t, c, link)
	runs := labRuns(t, s, lab)
	if code != http.StatusNotFound || !strings.Contains(body, `data-missing="tx-local"`) || !strings.Contains(body, "/runs/"+runs[0].ID) {
		t.Fatalf("after session-set only: %d %.600s", code, body)
	}
	code, _, body = get(t, c, link, "Accept", ctJSON)
	if code != http.StatusNotFound || !strings.Contains(body, `"code": "not_found"`) || !strings.Contains(body, "run tx-local first") {
		t.Errorf("after session-set only, as JSON: %d %s", code, body)
	}

	// Bad input: a clear 4xx, and no recording or lab changed.
	for _, bad := range []struct {
		path string
		want int
		says string
	}{
		{"/lessons/set-leak/compare?a=session-set&b=nope", http.StatusBadRequest, "has no variant"},
		{"/lessons/set-leak/compare?a=session-set", http.StatusBadRequest, "has no variant"},
		{"/lessons/set-leak/compare?a=tx-local&b=tx-local", http.StatusBadRequest, "two different variants"},
		{"/lessons/set-leak/compare?a=%3Cscript%3E&b=tx-local", http.StatusBadRequest, "&lt;script&gt;"},
		{"/lessons/no-such-lesson/compare?a=session-set&b=tx-local", http.StatusNotFound, ""},
		{"/labs/" + lab + "/compare?a=session-set&b=tx-local", http.StatusBadRequest, "name the scenario"},
		{"/labs/" + lab + "/compare?lesson=split-calls&scenario=set-leak&a=session-set&b=tx-local", http.StatusBadRequest, "not set-leak"},
		{"/labs/" + lab + "/compare?lesson=no-such-lesson&a=session-set&b=tx-local", http.StatusNotFound, ""},
		{"/labs/nolab0000/compare?scenario=set-leak&a=session-set&b=tx-local", http.StatusNotFound, "no such lab"},
		{"/labs/bad%20lab/compare?scenario=set-leak&a=session-set&b=tx-local", http.StatusNotFound, "no such lab"},
		{"/labs/" + lab + "/compare?scenario=set-leak&a=session-set&b=tx-local", http.StatusNotFound, `data-missing="tx-local"`},
		{"/labs/" + lab + "/recent-runs?limit=0", http.StatusBadRequest, "limit"},
		{"/labs/" + lab + "/recent-runs?limit=x", http.StatusBadRequest, "limit"},
		{"/labs/" + lab + "/recent-runs?scenario=nope", http.StatusBadRequest, "no scenario"},
	} {
		code, loc, body := get(t, c, s.URL+bad.path)
		if code != bad.want || loc != "" || !strings.Contains(body, bad.says) {
			t.Errorf("GET %s: %d %q, want %d saying %q: %.300s", bad.path, code, loc, bad.want, bad.says, body)
		}
	}
	if after := labRuns(t, s, lab); len(after) != 1 || after[0].ID != runs[0].ID {
		t.Fatalf("bad input changed the lab's recordings: %+v", after)
	}
	if st := getState(t, s, lab); st.Status != engine.StatusDone || st.Variant != engine.PatternSessionSet {
		t.Fatalf("bad input changed the lab: %s %s", st.Status, st.Variant)
	}

	// Both run: the link leads to the two newest runs side by side, the
	// older variant named first on the left as the link asks.
	runToEnd(t, s, c, lab, "set-leak", engine.PatternTxLocal)
	runToEnd(t, s, c, lab, "set-leak", engine.PatternSessionSet)
	runs = labRuns(t, s, lab)
	leak, tx := runs[0].ID, runs[1].ID
	want := "/runs/" + leak + "/vs/" + tx
	if code, loc, _ := get(t, c, link); code != http.StatusSeeOther || loc != want {
		t.Fatalf("compare link: %d to %q, want %s", code, loc, want)
	}
	if code, loc, _ := get(t, c, s.URL+"/labs/"+lab+"/compare?lesson=set-leak&a=tx-local&b=session-set"); code != http.StatusSeeOther || loc != "/runs/"+tx+"/vs/"+leak {
		t.Errorf("the lab's compare link: %d to %q", code, loc)
	}
	if code, _, body := get(t, c, s.URL+want); code != http.StatusOK || !strings.Contains(body, `data-differs="yes"`) {
		t.Errorf("the comparison: %d", code)
	}
	// Another browser has run nothing: it is not shown this one's runs.
	if code, loc, body := get(t, newBrowserClient(t), link); code != http.StatusNotFound || loc != "" || !strings.Contains(body, `data-missing="session-set tx-local"`) {
		t.Errorf("a stranger's compare link: %d %q", code, loc)
	}

	// The lesson's panel: the newest runs of its scenario, each with a
	// link to its replay and one to compare it with the run before.
	runToEnd(t, s, c, lab, "split-calls", "split")
	code, body = do(t, c, "GET", s.URL+"/labs/"+lab+"/recent-runs?limit=2&scenario=set-leak", "", "")
	if code != http.StatusOK || strings.Count(body, "<li ") != 2 || strings.Contains(body, "split-calls") ||
		!strings.Contains(body, `data-newest="`+leak+`"`) || !strings.Contains(body, `href="/runs/`+tx+`/vs/`+leak+`"`) ||
		!strings.Contains(body, `href="/runs/`+runs[2].ID+`/vs/`+tx+`"`) || !strings.Contains(body, `href="/runs/`+leak+`"`) {
		t.Errorf("recent runs of set-leak: %d %s", code, body)
	}
}

func TestDashboardPredictionsAndLessonAfterRestart(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 3})
	w := mustCreateWorkshop(t, s, "Predictions", "set-leak", "split-calls")
	fac := facilitatorClient(t, s, w)
	ann := newBrowserClient(t)
	a := mustJoin(t, w, ann, "Ann")
	mustJoin(t, w, newBrowserClient(t), "Bob")

	// Ann predicts both variants of set-leak (right about session-set,
	// wrong about tx-local) and runs both.
	for _, v := range []string{`{"variant":"session-set","choice":0}`, `{"variant":"tx-local","choice":0}`} {
		if code, body := do(t, ann, "POST", s.URL+"/lessons/set-leak/predictions", ctJSON, v); code != http.StatusOK {
			t.Fatalf("predict %s: %d %s", v, code, body)
		}
	}
	runToEnd(t, s, ann, a.Lab, "set-leak", engine.PatternSessionSet)
	runToEnd(t, s, ann, a.Lab, "set-leak", engine.PatternTxLocal)

	type score struct{ Right, Total int }
	var st struct {
		Participants []struct {
			Name        string
			Lesson      string
			Predictions *score
		}
	}
	code, body := do(t, fac, "GET", s.URL+"/workshops/"+w.ID+"/state.json", "", "")
	if err := json.Unmarshal([]byte(body), &st); code != http.StatusOK || err != nil || len(st.Participants) != 2 {
		t.Fatalf("state.json: %d %v %s", code, err, body)
	}
	if p := st.Participants[0]; p.Name != "Ann" || p.Predictions == nil || *p.Predictions != (score{1, 2}) {
		t.Errorf("Ann's predictions: %+v in %s", p.Predictions, body)
	}
	if p := st.Participants[1]; p.Predictions == nil || *p.Predictions != (score{0, 0}) {
		t.Errorf("Bob's predictions: %+v", p.Predictions)
	}
	code, body = do(t, fac, "GET", s.URL+"/workshops/"+w.ID, "", "")
	if code != http.StatusOK || !strings.Contains(body, `data-right="1" data-total="2">1/2 right<`) || !strings.Contains(body, `data-right="0" data-total="0">–<`) {
		t.Errorf("dashboard's prediction column: %d", code)
	}

	// Ann goes ahead to lesson 2 while the workshop stays on lesson 1.
	if code, _ := do(t, ann, "GET", s.URL+"/me/workshop?lesson=split-calls", "", ""); code != http.StatusOK {
		t.Fatalf("notice: %d", code)
	}
	// rlslab restarts: a new server, its store opened again on the same
	// tables, with nothing in memory.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.Store.Close()
	st2, err := store.Open(ctx, s.Labs.Admin(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st2.Close)
	ls, err := lessons.Load(lessons.Content(), s.Labs.Catalog())
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	h := web.NewServer(s.Labs, ls, static.FS(), log).WithCreateWait(time.Minute).WithServices(services(s.Labs, st2, ls, log))
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		h.Close()
		srv.Close()
	})
	fu, err := url.Parse(w.FacilitatorURL)
	if err != nil {
		t.Fatal(err)
	}
	code, body = do(t, newBrowserClient(t), "GET", srv.URL+"/workshops/"+w.ID+"/state.json?key="+url.QueryEscape(fu.Query().Get("key")), "", "")
	if err := json.Unmarshal([]byte(body), &st); code != http.StatusOK || err != nil || len(st.Participants) != 2 {
		t.Fatalf("state.json after the restart: %d %v %s", code, err, body)
	}
	if ann, bob := st.Participants[0], st.Participants[1]; ann.Lesson != "split-calls" || bob.Lesson != "set-leak" || *ann.Predictions != (score{1, 2}) {
		t.Errorf("after the restart: Ann on %q (%+v), Bob on %q; want split-calls, 1/2, set-leak", ann.Lesson, ann.Predictions, bob.Lesson)
	}
}

// waitRuns waits until the lab has n recordings and returns them, newest
// first (a free-play pool is recorded once it has closed).
func waitRuns(t *testing.T, s *testServer, lab string, n int) []struct{ ID, Variant string } {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		runs := labRuns(t, s, lab)
		if len(runs) >= n {
			return runs
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lab has %d recordings, want %d", len(runs), n)
		}
		time.Sleep(50 * time.Millisecond) // polling runs.json for the recording's arrival
	}
}

// TestCompareFreePlayRecordings checks that free play's recordings are
// comparable: two free-play sessions side by side, the requests that differ
// marked, and a free-play session beside a scenario's run; two scenarios
// of different kinds still do not compare.
func TestCompareFreePlayRecordings(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 2})
	c, lab := newOwnedLab(t, s)
	// The seed's leak by hand, then a run closes the pool: recorded.
	postSQL(t, s, c, lab.ID, sqlBody(1, "Acme", "session-set", ""))
	postSQL(t, s, c, lab.ID, sqlBody(1, "Globex", "forgot", ""))
	runToEnd(t, s, c, lab.ID, "set-leak", engine.PatternSessionSet)
	// The fix by hand, then a reset closes the pool: recorded.
	postSQL(t, s, c, lab.ID, sqlBody(1, "Acme", "tx-local", ""))
	postSQL(t, s, c, lab.ID, sqlBody(1, "Globex", "tx-local", ""))
	if code, body := do(t, c, "POST", s.URL+"/labs/"+lab.ID+"/reset", "", "", "Accept", ctJSON); code >= 300 {
		t.Fatalf("reset: %d %s", code, body)
	}
	runs := waitRuns(t, s, lab.ID, 3)
	fixed, leakRun, leaked := runs[0].ID, runs[1].ID, runs[2].ID
	if runs[0].Variant != "pool" || runs[1].Variant != engine.PatternSessionSet || runs[2].Variant != "pool" {
		t.Fatalf("recordings, newest first: %+v; want free play, the set-leak run, free play", runs)
	}
	code, _, body := get(t, c, s.URL+"/runs/"+leaked+"/vs/"+fixed)
	if code != http.StatusOK || !strings.Contains(body, `data-differs="yes"`) || strings.Count(body, "LEAK") == 0 {
		t.Fatalf("free play vs free play: %d %.600s", code, body)
	}
	// The leak by hand on the left, once; the fix by hand on the right,
	// without one; headed as free play.
	if left, right := compareVerdicts(body); left["LEAK"] != 1 || right["LEAK"] != 0 || !strings.Contains(body, "Free play") {
		t.Errorf("free play vs free play: verdicts %v on the left, %v on the right; want one LEAK left, none right, under a free-play title", left, right)
	}
	// The lab's recent runs link the newer free-play session to the one
	// before it.
	if code, _, list := get(t, c, s.URL+"/labs/"+lab.ID+"/recent-runs"); code != http.StatusOK || !strings.Contains(list, `href="/runs/`+leaked+`/vs/`+fixed+`"`) {
		t.Errorf("recent runs: %d, no link comparing free play %s with %s: %.600s", code, fixed, leaked, list)
	}
	if code, _, body := get(t, c, s.URL+"/runs/"+leaked+"/vs/"+leakRun); code != http.StatusOK {
		t.Errorf("free play beside the lesson's session-set run: %d %.400s", code, body)
	}
	runToEnd(t, s, c, lab.ID, "split-calls", "split")
	other := labRuns(t, s, lab.ID)[0].ID
	if code, _, body := get(t, c, s.URL+"/runs/"+leakRun+"/vs/"+other); code != http.StatusBadRequest || !strings.Contains(body, "only runs of the same scenario") {
		t.Errorf("set-leak vs split-calls: %d %.300s, want 400", code, body)
	}
}

// TestFreePlayRecordingReplays checks that a free-play session, once its
// pool has closed, replays like a run: its JSON, a replay page headed as
// free play, frames that go from no request to the leak by hand with the
// backend's PID, never a leak undone, and the one-file export.
func TestFreePlayRecordingReplays(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 2})
	c, lab := newOwnedLab(t, s)
	acme := postSQL(t, s, c, lab.ID, sqlBody(1, "Acme", "session-set", ""))
	globex := postSQL(t, s, c, lab.ID, sqlBody(1, "Globex", "forgot", ""))
	if !globex.Leak || globex.PID != acme.PID {
		t.Fatalf("the leak by hand: %+v", globex)
	}
	if code, body := do(t, c, "POST", s.URL+"/labs/"+lab.ID+"/reset", "", "", "Accept", ctJSON); code >= 300 {
		t.Fatalf("reset: %d %s", code, body)
	}
	id := waitRuns(t, s, lab.ID, 1)[0].ID
	code, _, body := get(t, c, s.URL+"/runs/"+id+".json")
	if code != http.StatusOK {
		t.Fatalf("GET /runs/%s.json: %d %.300s", id, code, body)
	}
	var rec struct {
		Scenario, Variant, Status string
		Leaks                     int
		Frames                    []json.RawMessage
	}
	if err := json.Unmarshal([]byte(body), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Scenario != sessions.FreePlayScenario || rec.Leaks != 1 || len(rec.Frames) < 3 {
		t.Fatalf("free play's recording: scenario %q, %d leaks, %d frames; want free-play, 1, several", rec.Scenario, rec.Leaks, len(rec.Frames))
	}
	code, _, page := get(t, c, s.URL+"/runs/"+id)
	if code != http.StatusOK || !strings.Contains(page, `id="player"`) {
		t.Fatalf("replay page: %d %.300s", code, page)
	}
	if h1 := between(page, "<h1>", "</h1>"); !strings.Contains(h1, "Free play") {
		t.Errorf("the replay is headed %q, want it named as free play", h1)
	}
	// Frame by frame: the leak appears once, with the backend's PID, and
	// stays.
	leakRow := fmt.Sprintf(`data-pid="%d" data-leak="true"`, globex.PID)
	seen, first := false, -1
	for n := range rec.Frames {
		code, _, frame := get(t, c, fmt.Sprintf("%s/runs/%s/frames/%d", s.URL, id, n))
		if code != http.StatusOK {
			t.Fatalf("frame %d: %d %.300s", n, code, frame)
		}
		leak := strings.Contains(frame, leakRow)
		if seen && !leak {
			t.Errorf("frame %d no longer shows the leak of frame %d", n, first)
		}
		if leak && !seen {
			seen, first = true, n
		}
	}
	if !seen || first == 0 {
		t.Errorf("the leak first shows in frame %d of %d (seen %v); want it after the first frame", first, len(rec.Frames), seen)
	}
	if code, _, body := get(t, c, s.URL+"/runs/"+id+"/export"); code != http.StatusOK || !strings.Contains(body, "Free play") {
		t.Errorf("export: %d %.300s", code, body)
	}
}

// between returns the text of s between the first from and the next to.
func between(s, from, to string) string {
	_, after, _ := strings.Cut(s, from)
	before, _, _ := strings.Cut(after, to)
	return before
}
