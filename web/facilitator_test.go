package web_test

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
)

// rowNames returns the data-name of each participant the dashboard HTML
// shows, in order.
func rowNames(body string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`class="[^"]*p-item[^"]*" data-name="([^"]*)"`).FindAllStringSubmatch(body, -1) {
		out = append(out, m[1])
	}
	return out
}

// readCSV reads the workshop's participants.csv as the facilitator c.
func readCSV(t *testing.T, s *testServer, c *http.Client, id string) [][]string {
	t.Helper()
	resp, err := c.Get(s.URL + "/workshops/" + id + "/participants.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/csv") ||
		!strings.Contains(resp.Header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("participants.csv: %d %v", resp.StatusCode, resp.Header)
	}
	rows, err := csv.NewReader(resp.Body).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestFacilitatorTools covers what a facilitator of a big room uses: the
// compact table with its sort and filter (kept by the websocket), the room
// view, the CSV export and a participant's new lab; none of them opens to
// anyone else.
func TestFacilitatorTools(t *testing.T) {
	t.Parallel()
	const n = 13
	s := mustStartServer(t, sessions.Config{MaxLabs: n + 2})
	w := mustCreateWorkshop(t, s, "Big room", "set-leak", "split-calls")
	fac := facilitatorClient(t, s, w)

	// Nobody but the facilitator: 403 for the room, the CSV and a reset;
	// 404 for a workshop that is not there.
	stranger := newBrowserClient(t)
	for _, c := range []struct{ method, path string }{
		{"GET", "/room"}, {"GET", "/room/live"}, {"GET", "/participants.csv"}, {"POST", "/participants/reset"},
	} {
		if code, body := do(t, stranger, c.method, s.URL+"/workshops/"+w.ID+c.path, ctForm, "name=Ann"); code != http.StatusForbidden {
			t.Errorf("%s %s as a stranger: %d %s", c.method, c.path, code, body)
		}
		if code, _ := do(t, fac, c.method, s.URL+"/workshops/wsnothere00000000"+c.path, ctForm, "name=Ann"); code != http.StatusNotFound && code != http.StatusForbidden {
			t.Errorf("%s %s of an unknown workshop: %d", c.method, c.path, code)
		}
	}

	// n participants; names that a spreadsheet would read as formulas.
	names := []string{"Ann", "Bob", "Cy", "=HYPERLINK(\"x\")", "+1 dial", "-2", "@SUM(A1)"}
	for i := len(names); i < n; i++ {
		names = append(names, fmt.Sprintf("P%02d", i))
	}
	clients := map[string]*http.Client{}
	labs := map[string]string{}
	for _, name := range names {
		clients[name] = newBrowserClient(t)
		labs[name] = mustJoin(t, w, clients[name], name).Lab
	}
	// Ann predicts, then sees the leak; Bob runs the fix (no leak seen).
	if code, body := do(t, clients["Ann"], "POST", s.URL+"/lessons/set-leak/predictions", ctJSON, `{"variant":"session-set","choice":1}`); code != http.StatusOK {
		t.Fatalf("Ann predicts: %d %s", code, body)
	}
	if code, body := do(t, clients["Cy"], "POST", s.URL+"/lessons/set-leak/predictions", ctJSON, `{"variant":"session-set","choice":0}`); code != http.StatusOK {
		t.Fatalf("Cy predicts: %d %s", code, body)
	}
	runToEnd(t, s, clients["Ann"], labs["Ann"], "set-leak", engine.PatternSessionSet)
	runToEnd(t, s, clients["Bob"], labs["Bob"], "set-leak", engine.PatternTxLocal)

	// The dashboard of n > 12 is the table; cards on request.
	_, body := do(t, fac, "GET", s.URL+"/workshops/"+w.ID, "", "")
	if !strings.Contains(body, `data-layout="table"`) || len(rowNames(body)) != n || !strings.Contains(body, `class="dash-table"`) {
		t.Fatalf("dashboard of %d: not a table of %d rows (%d)", n, n, len(rowNames(body)))
	}
	if !strings.Contains(body, `<svg class="qr"`) || !strings.Contains(body, `id="copy-join"`) {
		t.Errorf("the dashboard lacks the join link's QR code or copy button")
	}
	if _, body := do(t, fac, "GET", s.URL+"/workshops/"+w.ID+"?view=cards", "", ""); !strings.Contains(body, `data-layout="cards"`) || len(rowNames(body)) != n {
		t.Errorf("?view=cards: not %d cards", n)
	}
	// Filters.
	for filter, want := range map[string][]string{
		"leak":    {"Ann"},
		"no-fix":  {"Ann"},
		"fixed":   {},
		"running": {},
		"waiting": {},
	} {
		_, body := do(t, fac, "GET", s.URL+"/workshops/"+w.ID+"?filter="+filter, "", "")
		if got := rowNames(body); !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("?filter=%s shows %v, want %v", filter, got, want)
		}
	}
	if _, body := do(t, fac, "GET", s.URL+"/workshops/"+w.ID+"?filter=no-leak", "", ""); len(rowNames(body)) != n-1 || slices.Contains(rowNames(body), "Ann") {
		t.Errorf("?filter=no-leak shows %v", rowNames(body))
	}
	// Sorts: by name; by progress, least first (Ann, who saw the leak,
	// and Bob, who ran a variant, last).
	_, body = do(t, fac, "GET", s.URL+"/workshops/"+w.ID+"?sort=name", "", "")
	byName := rowNames(body)
	if !slices.IsSortedFunc(byName, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) }) || len(byName) != n {
		t.Errorf("?sort=name: %v", byName)
	}
	_, body = do(t, fac, "GET", s.URL+"/workshops/"+w.ID+"?sort=progress", "", "")
	if got := rowNames(body); len(got) != n || got[n-1] != "Ann" || got[n-2] != "Bob" {
		t.Errorf("?sort=progress: %v", got)
	}
	_, body = do(t, fac, "GET", s.URL+"/workshops/"+w.ID+"?sort=idle", "", "")
	if got := rowNames(body); len(got) != n || got[n-1] != "Bob" {
		t.Errorf("?sort=idle (longest idle first): %v", got)
	}
	// A sort link keeps the filter.
	_, body = do(t, fac, "GET", s.URL+"/workshops/"+w.ID+"?filter=no-leak", "", "")
	if !strings.Contains(body, `href="/workshops/`+w.ID+`?filter=no-leak&amp;sort=name"`) {
		t.Errorf("the sort link does not keep the filter")
	}

	// The room view: how the room predicted session-set, who saw the
	// leak.
	code, body := do(t, fac, "GET", s.URL+"/workshops/"+w.ID+"/room", "", "")
	if code != http.StatusOK || !strings.Contains(body, `data-variant="session-set" data-answered="2"`) ||
		!strings.Contains(body, `data-group="leak" data-count="1"`) || !strings.Contains(body, `data-group="fixed" data-count="0"`) ||
		!strings.Contains(body, "what the run showed") || !strings.Contains(body, `<svg class="qr"`) {
		t.Errorf("room view: %d %s", code, body)
	}
	if code, body := do(t, fac, "GET", s.URL+"/workshops/"+w.ID+"/room/live?lesson=2", "", ""); code != http.StatusOK ||
		!strings.Contains(body, `id="room-live"`) || strings.Contains(body, "<html") || !strings.Contains(body, "2. ") {
		t.Errorf("room live part of lesson 2: %d %.300s", code, body)
	}

	// The CSV: a header and n rows; formulas defused.
	rows := readCSV(t, s, fac, w.ID)
	if len(rows) != n+1 || strings.Join(rows[0], ",") != "name,lab,lesson,runs,predictions_right,predictions_checked,seen_leak,ran_fix,last_active" {
		t.Fatalf("CSV: %d rows, header %v", len(rows), rows[0])
	}
	byRow := map[string][]string{}
	for _, r := range rows[1:] {
		byRow[r[0]] = r
		if c := r[0][0]; c == '=' || c == '+' || c == '-' || c == '@' {
			t.Errorf("CSV cell %q starts a formula", r[0])
		}
	}
	if ann := byRow["Ann"]; ann == nil || ann[1] != labs["Ann"] || ann[2] != "set-leak" || ann[3] != "1" || ann[5] != "1" || ann[6] != "yes" || ann[7] != "no" {
		t.Errorf("Ann's CSV row: %v", ann)
	}
	if byRow[`'=HYPERLINK("x")`] == nil || byRow["'+1 dial"] == nil || byRow["'-2"] == nil || byRow["'@SUM(A1)"] == nil {
		t.Errorf("formula names not defused: %v", rows)
	}
	if _, err := time.Parse(time.RFC3339, byRow["Ann"][8]); err != nil {
		t.Errorf("last_active: %v", err)
	}

	// A new lab for Ann: another id, the old one dropped, her progress and
	// runs kept, and her browser can run in it.
	code, body = do(t, fac, "POST", s.URL+"/workshops/"+w.ID+"/participants/reset", ctForm, "name=Ann", "Accept", ctJSON)
	var reset struct{ Lab string }
	if err := json.Unmarshal([]byte(body), &reset); code != http.StatusOK || err != nil || reset.Lab == "" || reset.Lab == labs["Ann"] {
		t.Fatalf("reset Ann's lab: %d %s", code, body)
	}
	if _, err := s.Labs.Get(labs["Ann"]); err == nil {
		t.Errorf("Ann's old lab %s is still open", labs["Ann"])
	}
	st := mustWorkshopState(t, s, fac, w.ID)
	for _, p := range st.Participants {
		if p.Name == "Ann" && (p.Lab != reset.Lab || !p.LeakSeen) {
			t.Errorf("Ann after the reset: %+v", p)
		}
	}
	if rows := readCSV(t, s, fac, w.ID); !slices.ContainsFunc(rows, func(r []string) bool {
		return r[0] == "Ann" && r[1] == reset.Lab && r[3] == "1" && r[5] == "1" && r[6] == "yes"
	}) {
		t.Errorf("Ann's CSV row after the reset: %v", rows)
	}
	runToEnd(t, s, clients["Ann"], reset.Lab, "set-leak", engine.PatternTxLocal)
	// The form: a redirect to the dashboard; a name not in the workshop:
	// 404.
	if code, _ := do(t, fac, "POST", s.URL+"/workshops/"+w.ID+"/participants/reset", ctForm, "name=Bob"); code != http.StatusSeeOther {
		t.Errorf("reset by form: %d", code)
	}
	if code, _ := do(t, fac, "POST", s.URL+"/workshops/"+w.ID+"/participants/reset", ctForm, "name=Nobody", "Accept", ctJSON); code != http.StatusNotFound {
		t.Errorf("reset of nobody: %d", code)
	}

	// The websocket keeps this tab's filter: only those who saw the leak.
	conn, _, err := dialPath(t, s, fac, "/workshops/"+w.ID+"/ws?filter=leak&view=table")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	frames := keepReading(conn)
	first := frames.until(t, "a frame with Ann", `data-name="Ann"`)
	if got := rowNames(first); !slices.Equal(got, []string{"Ann"}) || !strings.Contains(first, `data-layout="table"`) {
		t.Errorf("filtered frame shows %v", got)
	}
	runToEnd(t, s, clients["Cy"], labs["Cy"], "set-leak", engine.PatternSessionSet)
	f := frames.until(t, "a frame with Cy", `data-name="Cy"`)
	if got := rowNames(f); !slices.Equal(got, []string{"Ann", "Cy"}) {
		t.Errorf("filtered frame after Cy's leak shows %v", got)
	}

	// Ending: the frame says so and takes the Move controls away.
	if code, body := do(t, fac, "POST", s.URL+"/workshops/"+w.ID+"/end", "", "", "Accept", ctJSON); code != http.StatusOK {
		t.Fatalf("end: %d %s", code, body)
	}
	f = frames.until(t, "the ended frame", `data-ended="yes"`)
	if !strings.Contains(f, `<div id="dash-controls" hx-swap-oob="true" hidden>`) {
		t.Errorf("the ended frame keeps the controls: %.400s", f)
	}
	if code, _ := do(t, fac, "POST", s.URL+"/workshops/"+w.ID+"/participants/reset", ctForm, "name=Cy", "Accept", ctJSON); code != http.StatusConflict {
		t.Errorf("reset after the end: %d", code)
	}
}

// TestWorkshopFormOnItsOwnPage checks that the home page leads a
// facilitator to the workshop form at its top.
func TestWorkshopFormOnItsOwnPage(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 2})
	_, home := do(t, newBrowserClient(t), "GET", s.URL+"/", "", "")
	bar, list := strings.Index(home, `href="/workshops/new"`), strings.Index(home, `class="lesson-list"`)
	if bar < 0 || list < 0 || bar > list {
		t.Errorf("the home page's link to the workshop form is at %d, the lesson list at %d", bar, list)
	}
	code, page := do(t, newBrowserClient(t), "GET", s.URL+"/workshops/new", "", "")
	if code != http.StatusOK || !strings.Contains(page, `action="/workshops"`) || !strings.Contains(page, `name="lessons"`) {
		t.Errorf("/workshops/new: %d", code)
	}
	code, page = do(t, newBrowserClient(t), "POST", s.URL+"/workshops", ctForm, "title=Room&lessons=set-leak")
	if code != http.StatusCreated || !strings.Contains(page, `<svg class="qr"`) || !strings.Contains(page, `data-copy="join-link"`) {
		t.Errorf("the new workshop's page lacks the QR code or the copy button: %d", code)
	}
}
