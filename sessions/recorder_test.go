package sessions

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// TestRecorderKeepsFramesInOrder adds a newer state and then an older one,
// as the frame hook and the recording goroutine can when they race:
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
	doc, err := r.frames[1].JSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(doc, &last); err != nil {
		t.Fatal(err)
	}
	if last.Status != engine.StatusRunning {
		t.Errorf("the last frame is %q, want the newer state (%q)", last.Status, engine.StatusRunning)
	}
}

// TestRecorderSharesAFollowedCrowd records two labs that follow one
// captured crowd: their recorders keep the crowd's states as the capture
// made them (no JSON, no copy: the last frame's request rows are the very
// rows both labs show), and each frame becomes, when asked for, the JSON
// of the state its lab showed: its own lab's id, the capturing lab's id
// hidden, marked shared.
func TestRecorderSharesAFollowedCrowd(t *testing.T) {
	ctx := context.Background()
	own := engine.NewTracker("lead1", nil)
	own.Begin("shared-pool", "conn-per-user", "max")
	capture := engine.NewCapture(own)
	env := engine.NewEnv(engine.Sandbox{}, nil, own, engine.NewPace(engine.Speed{Max: true}), nil)
	for i := range 4 {
		own.Update(func(s *engine.State) {
			s.Requests = append(s.Requests, engine.RequestRow{Seq: i + 1, Pattern: "select", Role: "lab_lead1_app", Rows: 1})
		})
		if err := env.Step(ctx, fmt.Sprint("frame ", i)); err != nil {
			t.Fatal(err)
		}
	}
	own.Finish(nil)
	capture.Finish()

	follow := func(lab string) (*engine.Tracker, []RecordedFrame) {
		tr := engine.NewTracker(lab, nil)
		tr.Begin("shared-pool", "conn-per-user", "4")
		r := record(tr)
		if err := capture.Follow(ctx, tr, engine.NewPace(engine.Speed{Max: true}), engine.Shared{AgoMS: 10}); err != nil {
			t.Fatal(err)
		}
		tr.Finish(nil)
		return tr, r.finish()
	}
	a, frames := follow("follower1")
	b, _ := follow("follower2")
	shared := 0
	for i, f := range frames {
		if f.kept == nil {
			continue
		}
		shared++
		if f.doc != nil {
			t.Errorf("frame %d keeps both the state and its JSON", i)
		}
		raw, err := f.JSON()
		if err != nil {
			t.Fatal(err)
		}
		var d StateDoc
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatal(err)
		}
		if d.Lab != "follower1" || strings.Contains(string(raw), "lead1") || d.Replay == nil || d.Replay.Shared == nil || len(d.Requests) == 0 {
			t.Errorf("frame %d: lab %q, replay %+v, %d requests: %s", i, d.Lab, d.Replay, len(d.Requests), raw)
		}
	}
	if shared < 4 {
		t.Fatalf("%d of %d frames keep the crowd's state, want every shown frame (4 at least)", shared, len(frames))
	}
	last := frames[len(frames)-1]
	va, vb := a.View(), b.View()
	if last.kept == nil || &last.kept.Requests[0] != &va.Requests[0] || &va.Requests[0] != &vb.Requests[0] {
		t.Errorf("the last frame's request rows are a copy, not the rows both followers show")
	}
	if last.kept != nil && last.kept.Status != engine.StatusDone {
		t.Errorf("the last frame is %s, want done", last.kept.Status)
	}
}
