package sessions

import (
	"encoding/json"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// TestRecorderKeepsFramesInOrder adds a newer state and then an older one,
// as the OnFrame function and the recording goroutine can when they race:
// the older one is not recorded after the newer, so a replay never steps
// back in time.
func TestRecorderKeepsFramesInOrder(t *testing.T) {
	tr := engine.NewTracker("lab1", nil)
	older := tr.Snapshot()
	tr.Update(func(s *engine.State) { s.Status = engine.StatusRunning })
	newer := tr.Snapshot()
	r := &recorder{tracker: tr}
	r.add(older)
	r.add(newer)
	r.add(older)
	r.add(newer)
	if len(r.frames) != 2 {
		t.Fatalf("%d frames recorded, want 2 (the older state once, the newer once)", len(r.frames))
	}
	var last StateDoc
	if err := json.Unmarshal(r.frames[1].State, &last); err != nil {
		t.Fatal(err)
	}
	if last.Status != engine.StatusRunning {
		t.Errorf("the last frame is %q, want the newer state (%q)", last.Status, engine.StatusRunning)
	}
}
