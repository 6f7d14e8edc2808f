package web_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/sessions"
)

// TestReplayOfAFormatOneRecording writes a recording the way rlslab kept
// them before recordings had a format of their own (the frames column a
// bare JSON array, each state the engine's State JSON) straight into the
// store's table, and replays it: /runs/{id}.json serves it in the current
// format, saying so, with its states whole, and the replay page and a
// frame fragment show what it recorded. A run recorded now says the
// current format too.
func TestReplayOfAFormatOneRecording(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 1})
	state, err := os.ReadFile("testdata/state-rich.json") // the engine's JSON of a rich state
	if err != nil {
		t.Fatal(err)
	}
	frames := `[{"at_ms":0,"state":` + string(state) + `},{"at_ms":250,"state":` + string(state) + `}]`
	const id = "formatOneRecording0000000000"
	if _, err := s.Labs.Admin().Exec(context.Background(), `
INSERT INTO rlslab.recordings (id, lab_id, learner_id, scenario, variant, params, status, error, leaks, errors,
	outcome, postgres_version, pgbouncer_version, started_at, finished_at, frame_count, frames)
VALUES ($1, 'lab1', NULL, 'shared-pool', 'fresh', '{}', 'done', '', 1, 0, 'null', '15.0', '',
	now() - interval '1 minute', now(), 2, $2)`, id, []byte(frames)); err != nil {
		t.Fatal(err)
	}

	code, body := do(t, http.DefaultClient, "GET", s.URL+"/runs/"+id+".json", "", "")
	var rec struct {
		Format int `json:"format"`
		Frames []struct {
			AtMs  int64           `json:"at_ms"`
			State json.RawMessage `json:"state"`
		} `json:"frames"`
	}
	if err := json.Unmarshal([]byte(body), &rec); code != http.StatusOK || err != nil {
		t.Fatalf("/runs/%s.json: %d %v %.300s", id, code, err, body)
	}
	if rec.Format != sessions.RecordingFormat || len(rec.Frames) != 2 || rec.Frames[1].AtMs != 250 {
		t.Fatalf("format %d with %d frames, want format %d with 2", rec.Format, len(rec.Frames), sessions.RecordingFormat)
	}
	var was, now any
	_ = json.Unmarshal(state, &was)
	if err := json.Unmarshal(rec.Frames[1].State, &now); err != nil {
		t.Fatal(err)
	}
	wb, _ := json.Marshal(was)
	nb, _ := json.Marshal(now)
	if string(wb) != string(nb) {
		t.Errorf("the frame's state changed on the way:\nstored %s\nserved %s", wb, nb)
	}

	code, page := do(t, http.DefaultClient, "GET", s.URL+"/runs/"+id, "", "")
	if code != http.StatusOK || !strings.Contains(page, "Request 3 takes connection 1.") {
		t.Fatalf("replay page: %d, narration not shown: %.500s", code, page)
	}
	code, frag := do(t, http.DefaultClient, "GET", s.URL+"/runs/"+id+"/frames/1", "", "")
	if code != http.StatusOK || !strings.Contains(frag, "Request 3 takes connection 1.") {
		t.Fatalf("frame 1: %d, narration not shown: %.500s", code, frag)
	}

	// A run recorded now is in the current format.
	c := newBrowserClient(t)
	lab := openLesson(t, s, c, "set-leak")
	if code, body := do(t, c, "POST", s.URL+"/labs/"+lab+"/runs", "application/json", `{"scenario":"set-leak","variant":"tx-local","speed":"max"}`); code != http.StatusAccepted {
		t.Fatalf("run: %d %s", code, body)
	}
	l, err := s.Labs.Get(lab)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Wait(t.Context()); err != nil { // the recording is saved by then
		t.Fatal(err)
	}
	runs := labRuns(t, s, lab)
	if len(runs) != 1 {
		t.Fatalf("%d recordings after one run", len(runs))
	}
	code, body = do(t, http.DefaultClient, "GET", s.URL+"/runs/"+runs[0].ID+".json", "", "")
	if err := json.Unmarshal([]byte(body), &rec); code != http.StatusOK || err != nil || rec.Format != sessions.RecordingFormat || len(rec.Frames) == 0 {
		t.Fatalf("a new recording: %d %v, format %d, %d frames", code, err, rec.Format, len(rec.Frames))
	}
}
