package web_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
)

// post sends a POST and returns the status, the headers and the body.
func post(t *testing.T, c *http.Client, u, contentType, body string, header ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest("POST", u, strings.NewReader(body))
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
	return resp.StatusCode, resp.Header, string(b)
}

// TestControlOnGoneLab: once a learner's lab is gone (closed as expiry
// closes it), their next control acts on a new lab of theirs, and their
// recent runs still list the runs of the lab that is gone. A control
// without a learner cookie still gets 404, and another learner's lab
// stays theirs.
func TestControlOnGoneLab(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 3})
	ann := newBrowserClient(t)
	gone := openLesson(t, s, ann, "set-leak")
	runToEnd(t, s, ann, gone, "set-leak", engine.PatternSessionSet)
	if err := s.Labs.CloseLab(context.Background(), gone); err != nil {
		t.Fatal(err)
	}

	// No cookie: nobody to give a lab to.
	if code, _, body := post(t, http.DefaultClient, s.URL+"/labs/"+gone+"/runs", ctJSON, `{"scenario":"set-leak","variant":"tx-local","speed":"max"}`); code != http.StatusNotFound || !strings.Contains(body, "expired or rlslab restarted") {
		t.Errorf("a run in a gone lab without a cookie: %d %s", code, body)
	}
	// Ann's run goes to a new lab of hers.
	code, h, body := post(t, ann, s.URL+"/labs/"+gone+"/runs", ctJSON, `{"scenario":"set-leak","variant":"tx-local","speed":"max"}`)
	var started struct{ Lab, Status string }
	if err := json.Unmarshal([]byte(body), &started); code != http.StatusAccepted || err != nil {
		t.Fatalf("a run in Ann's gone lab: %d %v %s", code, err, body)
	}
	lab := started.Lab
	if lab == gone || h.Get("Location") != "/labs/"+lab || h.Get("HX-Redirect") != "" {
		t.Errorf("the run went to lab %q (Location %q, HX-Redirect %q), gone %q", lab, h.Get("Location"), h.Get("HX-Redirect"), gone)
	}
	waitRunEnd(t, s.Labs, lab)
	// From the page of the gone lab, htmx is told to load the lesson
	// again; a control on the gone lab's own page goes to the new lab's.
	for current, want := range map[string]string{
		s.URL + "/lessons/set-leak": "/lessons/set-leak",
		s.URL + "/labs/" + gone:     "/labs/" + lab,
	} {
		code, h, body := post(t, ann, s.URL+"/labs/"+gone+"/reset", "", "", "HX-Request", "true", "HX-Current-URL", current)
		if code != http.StatusOK || h.Get("HX-Redirect") != want {
			t.Errorf("reset on %s: %d, HX-Redirect %q, want %q: %s", current, code, h.Get("HX-Redirect"), want, body)
		}
	}
	// The gone lab's page sends Ann to hers.
	if code, loc, _ := get(t, ann, s.URL+"/labs/"+gone); code != http.StatusSeeOther || loc != "/labs/"+lab {
		t.Errorf("the gone lab's page: %d to %q", code, loc)
	}
	// Bob may not drive Ann's new lab.
	bob := newBrowserClient(t)
	openLesson(t, s, bob, "set-leak")
	if code, _, body := post(t, bob, s.URL+"/labs/"+lab+"/reset", "", ""); code != http.StatusForbidden {
		t.Errorf("Bob's reset of Ann's lab: %d %s", code, body)
	}

	// Ann's recent runs: both labs'. A watcher of her lab sees the lab's.
	_, _, mine := get(t, ann, s.URL+"/labs/"+lab+"/recent-runs?scenario=set-leak")
	_, _, watched := get(t, bob, s.URL+"/labs/"+lab+"/recent-runs?scenario=set-leak")
	if strings.Count(mine, "data-run=") != 2 || !strings.Contains(mine, `data-variant="session-set"`) || !strings.Contains(mine, `data-variant="tx-local"`) {
		t.Errorf("Ann's recent runs: %s", mine)
	}
	if strings.Count(watched, "data-run=") != 1 || !strings.Contains(watched, `data-variant="tx-local"`) {
		t.Errorf("a watcher's recent runs of Ann's lab: %s", watched)
	}
}
