package web_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/sessions"
)

// TestLessonPageShowsOnlyItsOwnRuns runs set-leak's leak in a browser's
// lab, then serves that browser the wrong-scope lesson: its live view is
// idle and names no set-leak run (its websocket asks for wrong-scope's
// frames only); set-leak's own page still shows the run.
func TestLessonPageShowsOnlyItsOwnRuns(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 2})
	c := newBrowserClient(t)
	code, body := do(t, c, "POST", ts.URL+"/labs", "", "", "Accept", "application/json")
	if code != http.StatusCreated {
		t.Fatalf("create lab: %d %s", code, body)
	}
	var lab struct{ ID string }
	if err := json.Unmarshal([]byte(body), &lab); err != nil {
		t.Fatal(err)
	}
	runVariant(t, ts, c, lab.ID, "session-set")

	_, page := do(t, c, "GET", ts.URL+"/lessons/wrong-scope", "", "")
	live := page[strings.Index(page, `id="live"`):]
	if strings.Contains(live, "set-leak") || strings.Contains(live, `data-outcome="leak"`) || !strings.Contains(live, `data-outcome="idle"`) {
		t.Errorf("wrong-scope after a set-leak run shows it: %.600s", live)
	}
	if !strings.Contains(page, `ws-connect="/labs/`+lab.ID+`/ws?scenario=wrong-scope"`) {
		t.Error("wrong-scope's websocket does not ask for wrong-scope's frames only")
	}
	_, page = do(t, c, "GET", ts.URL+"/lessons/set-leak", "", "")
	if !strings.Contains(page, `data-outcome="leak"`) {
		t.Error("set-leak's own page does not show its run")
	}
}
