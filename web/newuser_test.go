package web_test

import (
	"encoding/json"
	"io/fs"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/web/views"
)

// resultHeading finds the headings of the lesson sections that tell what a
// run shows, as the lesson files write them.
var resultHeading = regexp.MustCompile(`(?m)^#{2,3} (What the [^\n]*shows?|Why)$`)

// TestLessonResultsFolded checks every lesson's sections that tell what a
// run shows ("What the database shows", "What the fix runs show") or why
// ("Why"): they
// are folded (a closed details element whose summary is the heading and
// says it shows the run's result) in the page of a learner who has not
// predicted or run the lesson, and open once they have predicted, or run
// a lesson without questions.
func TestLessonResultsFolded(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 2, Spares: -1})
	c := newBrowserClient(t)
	folded := 0
	for _, l := range defaultLessons(t).All() {
		code, page := do(t, c, "GET", s.URL+"/lessons/"+l.Slug, "", "")
		if code != http.StatusOK {
			t.Fatalf("%s: %d", l.Slug, code)
		}
		for _, id := range revealIDs(string(l.HTML)) {
			folded++
			open := regexp.MustCompile(`<details class="reveal" data-reveal="` + id + `"( open)?><summary><h[23] id="` + id + `">[^<]+</h[23]> <span class="reveal-note">(?:` + regexp.QuoteMeta(views.RevealNote) + `|` + regexp.QuoteMeta(views.WhyNote) + `)</span></summary>`).FindStringSubmatch(page)
			if open == nil {
				t.Errorf("%s: the section %s is not folded under its heading", l.Slug, id)
				continue
			}
			if open[1] != "" {
				t.Errorf("%s: the section %s is open before any prediction or run", l.Slug, id)
			}
			// The section's text is inside the details, not after it.
			inside := page[strings.Index(page, `data-reveal="`+id+`"`):]
			if end := strings.Index(inside, "</details>"); end < 0 || !strings.Contains(inside[:end], "<p>") && !strings.Contains(inside[:end], "<li>") {
				t.Errorf("%s: the section %s holds no text", l.Slug, id)
			}
		}
	}
	// 22 lessons have "What the database shows" and "Why", set-leak also
	// "What the fix runs show"; each must have been found in the files too.
	want := 0
	for _, l := range defaultLessons(t).All() {
		raw := readLessonSource(t, l.Source)
		want += len(resultHeading.FindAllString(raw, -1))
	}
	if folded != want || want < 45 {
		t.Errorf("folded %d sections; the lesson files have %d", folded, want)
	}

	// A learner with a lab: a prediction unfolds set-leak's sections.
	if code, body := do(t, c, "POST", s.URL+"/labs", "", "", "Accept", ctJSON); code != http.StatusCreated {
		t.Fatalf("POST /labs: %d %s", code, body)
	}
	_, page := do(t, c, "GET", s.URL+"/lessons/set-leak", "", "")
	if strings.Contains(page, `data-reveal="what-the-database-shows" open`) {
		t.Errorf("set-leak is unfolded in a lab before any prediction")
	}
	if code, body := do(t, c, "POST", s.URL+"/lessons/set-leak/predictions", ctForm, "variant=session-set&choice=0", "HX-Request", "true"); code != http.StatusOK {
		t.Fatalf("predict: %d %s", code, body)
	}
	_, page = do(t, c, "GET", s.URL+"/lessons/set-leak", "", "")
	for _, id := range []string{"what-the-database-shows", "why", "what-the-fix-runs-show"} {
		if !strings.Contains(page, `data-reveal="`+id+`" open>`) {
			t.Errorf("set-leak's %s is still folded after a prediction", id)
		}
	}
}

// readLessonSource returns the text of the lesson file name.
func readLessonSource(t *testing.T, name string) string {
	t.Helper()
	b, err := fs.ReadFile(lessons.Content(), name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// revealIDs returns the heading ids of the sections of a lesson's HTML
// that tell what a run shows.
func revealIDs(html string) []string {
	var ids []string
	for _, m := range regexp.MustCompile(`<h[23] id="(what-the-[a-z0-9-]*show[a-z0-9-]*|why)">`).FindAllStringSubmatch(html, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

// TestLessonLinksToTheLabPage checks the link from a lesson to the lab's
// own page, where free play and the Connect your app panel are: it says
// what it holds (it said "Open the watch view"), and the your-app lesson
// points at the Connect your app panel beside its lab.
func TestLessonLinksToTheLabPage(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 2, Spares: -1})
	c := newBrowserClient(t)
	code, body := do(t, c, "POST", s.URL+"/labs", "", "", "Accept", ctJSON)
	if code != http.StatusCreated {
		t.Fatalf("POST /labs: %d %s", code, body)
	}
	var lab struct{ ID string }
	if err := json.Unmarshal([]byte(body), &lab); err != nil {
		t.Fatal(err)
	}
	_, page := do(t, c, "GET", s.URL+"/lessons/set-leak", "", "")
	link := `<a href="/labs/` + lab.ID + `" target="_blank" id="open-lab" class="open-lab">Open your lab: free play, connect your app`
	if !strings.Contains(page, link) || strings.Contains(page, "watch view") {
		t.Errorf("the lesson's link to the lab page: want %s", link)
	}
	if strings.Contains(page, `id="connect-callout"`) {
		t.Errorf("set-leak points at the Connect your app panel")
	}
	_, page = do(t, c, "GET", s.URL+"/lessons/your-app", "", "")
	if !strings.Contains(page, `id="connect-callout"`) || !strings.Contains(page, `href="/labs/`+lab.ID+`#connect-app"`) {
		t.Errorf("the your-app lesson does not point at the lab's Connect your app panel")
	}
	// The lab page itself links nowhere new: it is the page.
	_, page = do(t, c, "GET", s.URL+"/labs/"+lab.ID, "", "")
	if strings.Contains(page, `id="open-lab"`) || !strings.Contains(page, `id="connect-app"`) {
		t.Errorf("the lab page: a link to itself, or no Connect your app panel")
	}
}

// TestGoneLabOffersAWayOn checks the page of a bookmarked lab that is gone
// (rlslab restarted): a browser without a lab gets a button that makes one,
// a browser with another lab a link to it (it got "Not Found" and a link
// to the lessons only).
func TestGoneLabOffersAWayOn(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 3, Spares: -1})
	owner := newBrowserClient(t)
	gone := createLab(t, s, owner)
	if err := s.Labs.CloseLab(t.Context(), gone); err != nil {
		t.Fatal(err)
	}
	code, page := do(t, owner, "GET", s.URL+"/labs/"+gone, "", "", "Accept", "text/html")
	if code != http.StatusNotFound || !strings.Contains(page, `<form method="post" action="/labs" id="new-lab"><button type="submit" class="primary">Open a new lab</button>`) {
		t.Errorf("the gone lab's page for a browser without a lab: %d, no button for a new one:\n%s", code, page)
	}
	if !strings.Contains(page, "rlslab restarted") {
		t.Errorf("the gone lab's page does not say why")
	}
	// The button's form makes a lab and goes there.
	code, _ = do(t, owner, "POST", s.URL+"/labs", ctForm, "", "Accept", "text/html", "Origin", s.URL)
	if code != http.StatusSeeOther {
		t.Errorf("the new-lab form: %d", code)
	}

	// Another browser that has a lab, opening the gone lab's address.
	other := newBrowserClient(t)
	cur := createLab(t, s, other)
	code, page = do(t, other, "GET", s.URL+"/labs/"+gone, "", "", "Accept", "text/html")
	if code != http.StatusNotFound || !strings.Contains(page, `<a class="primary" id="current-lab" href="/labs/`+cur+`">`) {
		t.Errorf("the gone lab's page for a browser with lab %s: %d, no link to it:\n%s", cur, code, page)
	}
}

// createLab makes a lab for browser c and returns its id.
func createLab(t *testing.T, s *testServer, c *http.Client) string {
	t.Helper()
	code, body := do(t, c, "POST", s.URL+"/labs", "", "", "Accept", ctJSON)
	if code != http.StatusCreated {
		t.Fatalf("POST /labs: %d %s", code, body)
	}
	var lab struct{ ID string }
	if err := json.Unmarshal([]byte(body), &lab); err != nil || lab.ID == "" {
		t.Fatalf("POST /labs: %s (%v)", body, err)
	}
	return lab.ID
}

// TestLateJoinSaysTheWorkshopEnded checks a join with the right code after
// End: it says the workshop has ended (it said to check the code), while a
// wrong code still says no open workshop has it.
func TestLateJoinSaysTheWorkshopEnded(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 2, Spares: -1})
	w := mustCreateWorkshop(t, s, "Late", "set-leak")
	fac := facilitatorClient(t, s, w)
	if code, body := do(t, fac, "POST", s.URL+"/workshops/"+w.ID+"/end", "", "", "Accept", ctJSON); code != http.StatusOK {
		t.Fatalf("end: %d %s", code, body)
	}
	code, body := do(t, newBrowserClient(t), "POST", w.JoinURL, ctJSON, `{"name":"Late"}`, "Accept", ctJSON)
	if code != http.StatusNotFound || !strings.Contains(body, "this workshop has ended") {
		t.Errorf("a late join: %d %s", code, body)
	}
	code, body = do(t, newBrowserClient(t), "POST", w.JoinURL, ctForm, "name=Late", "Accept", "text/html", "Origin", s.URL)
	if code != http.StatusNotFound || !strings.Contains(body, "this workshop has ended") {
		t.Errorf("a late join from the form: %d %s", code, body)
	}
	wrong := s.URL + "/workshops/" + w.ID + "/join?code=ZZZZZZ"
	if code, body := do(t, newBrowserClient(t), "POST", wrong, ctJSON, `{"name":"Late"}`, "Accept", ctJSON); code != http.StatusNotFound || strings.Contains(body, "ended") {
		t.Errorf("a join with a wrong code: %d %s", code, body)
	}
}

// TestEndedDashboardShowsEveryLabClosed checks an ended workshop's counts
// and rows: no labs ready (it said 2 of 3, from the spares), every
// participant's lab closed.
func TestEndedDashboardShowsEveryLabClosed(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 4, Spares: 2})
	b, _ := json.Marshal(map[string]any{"title": "Ends", "lessons": []string{"set-leak"}, "expected": 3})
	code, body := do(t, newBrowserClient(t), "POST", s.URL+"/workshops", ctJSON, string(b), "Accept", ctJSON)
	if code != http.StatusCreated {
		t.Fatalf("POST /workshops: %d %s", code, body)
	}
	var w createdWorkshop
	if err := json.Unmarshal([]byte(body), &w); err != nil {
		t.Fatal(err)
	}
	fac := facilitatorClient(t, s, w)
	mustJoin(t, w, newBrowserClient(t), "Ann")
	type counts struct {
		LabsReady int `json:"labs_ready"`
		Expected  int `json:"expected"`
	}
	var st struct {
		Counts       counts `json:"counts"`
		Participants []struct {
			Name, Status string
		} `json:"participants"`
	}
	read := func() {
		t.Helper()
		code, body := do(t, fac, "GET", s.URL+"/workshops/"+w.ID+"/state.json", "", "")
		if code != http.StatusOK {
			t.Fatalf("state.json: %d %s", code, body)
		}
		st.Counts = counts{}
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the spares are ready for the two who have not joined.
	for pause := 10 * time.Millisecond; ; pause = min(2*pause, 500*time.Millisecond) {
		if read(); st.Counts.LabsReady == 3 {
			break
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("labs ready: %+v", st.Counts)
		case <-time.After(pause):
		}
	}
	if code, body := do(t, fac, "POST", s.URL+"/workshops/"+w.ID+"/end", "", "", "Accept", ctJSON); code != http.StatusOK {
		t.Fatalf("end: %d %s", code, body)
	}
	read()
	if st.Counts.LabsReady != 0 || st.Counts.Expected != 0 {
		t.Errorf("an ended workshop counts %d/%d labs ready", st.Counts.LabsReady, st.Counts.Expected)
	}
	for _, p := range st.Participants {
		if p.Status != "lab closed" {
			t.Errorf("after End, %s's lab is %q", p.Name, p.Status)
		}
	}
	_, page := do(t, fac, "GET", s.URL+"/workshops/"+w.ID, "", "")
	if strings.Contains(page, "labs ready") {
		t.Errorf("the ended dashboard shows labs ready")
	}
}
