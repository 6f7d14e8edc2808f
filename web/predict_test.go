package web_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/sessions"
)

// countRows counts the rows of one of rlslab's own tables.
func countRows(t *testing.T, ts *testServer, table string) int {
	t.Helper()
	var n int
	if err := ts.Labs.Admin().QueryRow(context.Background(), "SELECT count(*) FROM rlslab."+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// runVariant runs a variant of set-leak at full speed in lab id and waits
// until the run, and the check of any pending prediction, has ended.
func runVariant(t *testing.T, ts *testServer, c *http.Client, id, variant string) {
	t.Helper()
	code, body := do(t, c, "POST", ts.URL+"/labs/"+id+"/runs", "application/json", `{"scenario":"set-leak","variant":"`+variant+`","speed":"max"}`)
	if code != http.StatusAccepted {
		t.Fatalf("run %s: %d %s", variant, code, body)
	}
	waitRunEnd(t, ts.Labs, id)
}

type progressJSON struct {
	Lessons []struct {
		Slug        string   `json:"slug"`
		VariantsRun []string `json:"variants_run"`
		LeakSeen    bool     `json:"leak_seen"`
		FixRun      bool     `json:"fix_run"`
		Predictions []struct {
			Variant string `json:"variant"`
			Choice  string `json:"choice"`
			Correct bool   `json:"correct"`
		} `json:"predictions"`
	} `json:"lessons"`
}

// TestPredictionsAreCheckedByTheRun answers set-leak's two questions, one
// wrong and one right, runs both variants on the real server and reads the
// verdicts the runs gave.
func TestPredictionsAreCheckedByTheRun(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 2})
	c := newBrowserClient(t)

	// GETs by a new browser create no learner.
	learners := countRows(t, ts, "learners")
	for _, path := range []string{"/", "/lessons/set-leak", "/progress.json", "/lessons/set-leak/predictions/session-set"} {
		code, body := do(t, c, "GET", ts.URL+path, "", "")
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		if path == "/progress.json" && strings.Join(strings.Fields(body), "") != `{"lessons":[]}` {
			t.Fatalf("a new browser's progress: %s", body)
		}
	}
	if n := countRows(t, ts, "learners"); n != learners {
		t.Fatalf("GETs created %d learners", n-learners)
	}

	code, body := do(t, c, "POST", ts.URL+"/labs", "", "", "Accept", "application/json")
	if code != http.StatusCreated {
		t.Fatalf("create lab: %d %s", code, body)
	}
	var lab struct{ ID string }
	if err := json.Unmarshal([]byte(body), &lab); err != nil {
		t.Fatal(err)
	}
	// The lesson page asks before the first run of each variant.
	_, page := do(t, c, "GET", ts.URL+"/lessons/set-leak", "", "")
	if strings.Count(page, `class="predict-item predict-ask"`) != 2 {
		t.Fatalf("the lesson page does not ask both questions")
	}

	// "no invoices" for session-set (a form, as htmx posts it), and the
	// same for tx-local (JSON).
	code, body = do(t, c, "POST", ts.URL+"/lessons/set-leak/predictions", "application/x-www-form-urlencoded", "variant=session-set&choice=1", "HX-Request", "true")
	if code != http.StatusOK || !strings.Contains(body, "predict-pending") || !strings.Contains(body, "no invoices") {
		t.Fatalf("predict session-set: %d %s", code, body)
	}
	code, body = do(t, c, "POST", ts.URL+"/lessons/set-leak/predictions", "application/json", `{"variant":"tx-local","choice":1}`)
	if code != http.StatusOK || !strings.Contains(body, `"pending"`) {
		t.Fatalf("predict tx-local: %d %s", code, body)
	}

	runVariant(t, ts, c, lab.ID, "session-set")
	code, body = do(t, c, "GET", ts.URL+"/lessons/set-leak/predictions/session-set", "", "", "HX-Request", "true")
	if code != http.StatusOK || !strings.Contains(body, "verdict-wrong") || !strings.Contains(body, "Acme&#39;s invoices") ||
		!strings.Contains(body, "Globex got 3 of Acme&#39;s rows: leak.") {
		t.Fatalf("session-set verdict: %d %s", code, body)
	}
	// The verdict says what the outcome bar said, not the lesson's rule.
	for _, rule := range []string{"leaks", "errors", "foreign_rows", "seen_tenant", "==", "&amp;&amp;"} {
		if strings.Contains(body, rule) {
			t.Errorf("the session-set verdict prints the rule %q: %s", rule, body)
		}
	}
	runVariant(t, ts, c, lab.ID, "tx-local")
	_, body = do(t, c, "GET", ts.URL+"/lessons/set-leak/predictions/tx-local", "", "", "Accept", "application/json")
	var item struct {
		State, Picked, Actual, Evidence string
		Correct                         bool
	}
	if err := json.Unmarshal([]byte(body), &item); err != nil || item.State != "checked" || !item.Correct || item.Actual != "no invoices" {
		t.Fatalf("tx-local verdict: %s (%v)", body, err)
	}
	// It agrees with the outcome bar: the forgetful request failed closed.
	st := fetchState(t, ts.URL, lab.ID)
	if v, ok := st.Outcome(); !ok || item.Evidence != v.Headline || !strings.HasPrefix(item.Evidence, "Failed closed: 1 request got 0 rows") {
		t.Errorf("tx-local evidence %q, state.json's outcome %+v", item.Evidence, v)
	}

	_, body = do(t, c, "GET", ts.URL+"/progress.json", "", "")
	var p progressJSON
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Lessons) != 1 {
		t.Fatalf("progress: %s", body)
	}
	l := p.Lessons[0]
	if l.Slug != "set-leak" || strings.Join(l.VariantsRun, ",") != "session-set,tx-local" || !l.LeakSeen || !l.FixRun || len(l.Predictions) != 2 ||
		l.Predictions[0].Variant != "session-set" || l.Predictions[0].Choice != "no invoices" || l.Predictions[0].Correct ||
		l.Predictions[1].Variant != "tx-local" || !l.Predictions[1].Correct {
		t.Fatalf("progress: %s", body)
	}

	// A checked prediction is not asked again; the page shows the verdict.
	code, _ = do(t, c, "POST", ts.URL+"/lessons/set-leak/predictions", "application/json", `{"variant":"session-set","choice":0}`)
	if code != http.StatusConflict {
		t.Fatalf("re-predicting a checked variant: %d, want 409", code)
	}
	_, page = do(t, c, "GET", ts.URL+"/lessons/set-leak", "", "")
	if strings.Contains(page, "predict-ask") || !strings.Contains(page, "verdict-wrong") || !strings.Contains(page, "verdict-right") {
		t.Fatalf("the lesson page after both checks does not show both verdicts")
	}
	// The home page marks the lesson and offers to continue it.
	_, home := do(t, c, "GET", ts.URL+"/", "", "")
	if !strings.Contains(home, `class="lesson-done" data-slug="set-leak"`) || !strings.Contains(home, "1/2 predicted right") ||
		!strings.Contains(home, `class="continue-link" href="/lessons/set-leak"`) {
		t.Fatalf("home page without the marks:\n%s", home)
	}
}

// TestPredictionBadInput sends bad predictions: each is refused and
// nothing is stored.
func TestPredictionBadInput(t *testing.T) {
	// Not parallel: it counts every learner's predictions.
	ts := mustStartServer(t, sessions.Config{MaxLabs: 1})
	c := newBrowserClient(t)
	code, body := do(t, c, "POST", ts.URL+"/labs", "", "", "Accept", "application/json")
	if code != http.StatusCreated {
		t.Fatalf("create lab: %d %s", code, body)
	}
	pending, predictions := countRows(t, ts, "pending_predictions"), countRows(t, ts, "predictions")
	js := "application/json"
	for _, tc := range []struct {
		name, path, ct, body string
		want                 int
	}{
		{"unknown lesson", "/lessons/nope/predictions", js, `{"variant":"session-set","choice":0}`, 404},
		{"unknown variant", "/lessons/set-leak/predictions", js, `{"variant":"nope","choice":0}`, 400},
		{"variant without a question", "/lessons/set-leak/predictions", js, `{"variant":"batch-local","choice":0}`, 400},
		{"choice out of range", "/lessons/set-leak/predictions", js, `{"variant":"session-set","choice":3}`, 400},
		{"negative choice", "/lessons/set-leak/predictions", js, `{"variant":"session-set","choice":-1}`, 400},
		{"choice not a number", "/lessons/set-leak/predictions", "application/x-www-form-urlencoded", `variant=session-set&choice=a`, 400},
		{"no choice", "/lessons/set-leak/predictions", "application/x-www-form-urlencoded", `variant=session-set`, 400},
		{"unknown field", "/lessons/set-leak/predictions", js, `{"variant":"session-set","choice":0,"correct":true}`, 400},
		{"10 KB body", "/lessons/set-leak/predictions", js, `{"variant":"session-set","choice":0,"x":"` + strings.Repeat("x", 10<<10) + `"}`, 400},
		{"10 KB form", "/lessons/set-leak/predictions", "application/x-www-form-urlencoded", `variant=session-set&choice=0&x=` + strings.Repeat("x", 10<<10), 400},
	} {
		if code, body := do(t, c, "POST", ts.URL+tc.path, tc.ct, tc.body); code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		}
	}
	for _, path := range []string{"/lessons/nope/predictions/session-set", "/lessons/set-leak/predictions/nope", "/lessons/set-leak/predictions/batch-local"} {
		if code, _ := do(t, c, "GET", ts.URL+path, "", ""); code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, code)
		}
	}
	if countRows(t, ts, "pending_predictions") != pending || countRows(t, ts, "predictions") != predictions {
		t.Fatal("bad input stored something")
	}
}

// TestAnswerDuringARunWaitsForTheNext answers while a run of the variant
// is going (in single-step mode, so it cannot end before): that run does
// not check the answer; the next one does.
func TestAnswerDuringARunWaitsForTheNext(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 1})
	c := newBrowserClient(t)
	code, body := do(t, c, "POST", ts.URL+"/labs", "", "", "Accept", "application/json")
	if code != http.StatusCreated {
		t.Fatalf("create lab: %d %s", code, body)
	}
	var lab struct{ ID string }
	_ = json.Unmarshal([]byte(body), &lab)
	code, body = do(t, c, "POST", ts.URL+"/labs/"+lab.ID+"/runs", "application/json", `{"scenario":"set-leak","variant":"session-set","speed":"step"}`)
	if code != http.StatusAccepted {
		t.Fatalf("run: %d %s", code, body)
	}
	if code, body := do(t, c, "POST", ts.URL+"/lessons/set-leak/predictions", "application/json", `{"variant":"session-set","choice":0}`); code != http.StatusOK {
		t.Fatalf("predict: %d %s", code, body)
	}
	// Finish the stepped run at full speed.
	if code, body := do(t, c, "POST", ts.URL+"/labs/"+lab.ID+"/speed", "application/json", `{"speed":"max"}`); code != http.StatusOK {
		t.Fatalf("speed: %d %s", code, body)
	}
	waitRunEnd(t, ts.Labs, lab.ID)
	_, body = do(t, c, "GET", ts.URL+"/lessons/set-leak/predictions/session-set", "", "", "Accept", "application/json")
	if !strings.Contains(body, `"state": "pending"`) {
		t.Fatalf("a run that started before the answer checked it: %s", body)
	}
	if code, body := do(t, c, "POST", ts.URL+"/labs/"+lab.ID+"/runs", "application/json", `{"scenario":"set-leak","variant":"session-set","speed":"max"}`); code != http.StatusAccepted {
		t.Fatalf("second run: %d %s", code, body)
	}
	waitRunEnd(t, ts.Labs, lab.ID)
	_, body = do(t, c, "GET", ts.URL+"/lessons/set-leak/predictions/session-set", "", "", "Accept", "application/json")
	if !strings.Contains(body, `"state": "checked"`) || !strings.Contains(body, `"correct": true`) {
		t.Fatalf("the next run did not check the answer: %s", body)
	}
}
