package engine_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// TestReplayShowsEveryFrameInOrder plays a run of five frames at full
// speed on a tracker of its own while its capture is replayed, from its
// first frame on, on the lab's tracker at a teaching pace: the lab's
// tracker shows every frame of the run, in order, with the run's
// narration, counted as frames, each with a replay note; the lab's own
// server counts and speed stay; the last state says how long the run took.
func TestReplayShowsEveryFrameInOrder(t *testing.T) {
	ctx := context.Background()
	own := engine.NewTracker("lab", nil)
	own.Begin("s", "v", "max")
	lab := engine.NewTracker("lab", nil)
	lab.Begin("s", "v", "4")
	lab.SetServer(engine.ServerCounts{Backends: 7, MaxConnections: 100})
	capture := engine.NewCapture(own)
	env := engine.NewEnv(engine.Sandbox{}, nil, own, engine.NewPace(engine.Speed{Max: true}), nil)

	// Every frame the lab's tracker shows goes to its frame hooks.
	var shown []engine.State
	lab.AddFrameHook(func(st engine.State) { shown = append(shown, st) })
	pace := engine.NewPace(engine.Speed{Factor: 4})
	replayed := make(chan error, 1)
	go func() { replayed <- capture.Replay(ctx, lab, pace) }()

	var want []string
	for i := 1; i <= 5; i++ {
		want = append(want, fmt.Sprintf("frame %d", i))
		if err := env.Step(ctx, want[i-1]); err != nil {
			t.Fatal(err)
		}
	}
	own.Finish(nil)
	capture.Finish()
	if n := capture.Frames(); n != 5 {
		t.Fatalf("the capture kept %d frames, want 5", n)
	}

	if err := <-replayed; err != nil {
		t.Fatal(err)
	}
	var got []string
	for i, st := range shown {
		got = append(got, st.Narration)
		if st.Frame != i+1 || st.Replay == nil || st.Speed != "4" || st.Server.Backends != 7 {
			t.Errorf("frame %d shown as frame %d: replay %+v, speed %q, backends %d; want a note, the lab's speed 4 and its 7 backends", i+1, st.Frame, st.Replay, st.Speed, st.Server.Backends)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("frames shown %q, want %q", got, want)
	}
	final := lab.Snapshot()
	if final.Status != engine.StatusDone || final.Replay == nil || final.Replay.RanMS <= 0 || lab.Frame() != 5 {
		t.Errorf("after the replay: status %s, replay %+v, frame %d; want done, ran_ms > 0, 5", final.Status, final.Replay, lab.Frame())
	}
	if note := final.ReplayNote(); note != fmt.Sprintf("Ran in %d ms, shown at 4×", final.Replay.RanMS) {
		t.Errorf("replay note %q", note)
	}
}

// TestReplayStopsWithItsPace: a replay held on a frame in single-step mode
// ends with ErrStopped when its pace is stopped (a reset), without waiting
// for the rest.
func TestReplayStopsWithItsPace(t *testing.T) {
	ctx := context.Background()
	own := engine.NewTracker("lab", nil)
	own.Begin("s", "v", "max")
	capture := engine.NewCapture(own)
	env := engine.NewEnv(engine.Sandbox{}, nil, own, engine.NewPace(engine.Speed{Max: true}), nil)
	for i := range 3 {
		if err := env.Step(ctx, fmt.Sprint("frame ", i)); err != nil {
			t.Fatal(err)
		}
	}
	own.Finish(nil)
	capture.Finish()
	lab := engine.NewTracker("lab", nil)
	pace := engine.NewPace(engine.Speed{Single: true})
	replayed := make(chan error, 1)
	go func() { replayed <- capture.Replay(ctx, lab, pace) }()
	waitFor(t, lab, func(st engine.State) bool { return st.Frame == 1 })
	pace.Stop()
	if err := <-replayed; !errors.Is(err, engine.ErrStopped) {
		t.Fatalf("replay ended with %v, want ErrStopped", err)
	}
	if lab.Frame() != 1 {
		t.Errorf("the stopped replay went on to frame %d", lab.Frame())
	}
}

// TestSharedReplayNote: a run that follows another learner's crowd says so
// before how it is shown, without naming that learner's lab.
func TestSharedReplayNote(t *testing.T) {
	st := engine.State{Speed: "1", Replay: &engine.Replay{RanMS: 9300, Shared: &engine.Shared{AgoMS: 4200}}}
	note := st.ReplayNote()
	want := "Shared crowd: this is a crowd run already going on this server (started 4 s before your click, in another learner's lab, shown as lab_…); a crowd for every learner at once would measure the machine, not the pool. Ran in 9300 ms, shown at 1×"
	if note != want {
		t.Errorf("note %q\nwant %q", note, want)
	}
	st.Replay.Shared = nil
	if note := st.ReplayNote(); note != "Ran in 9300 ms, shown at 1×" {
		t.Errorf("without sharing: %q", note)
	}
}

// TestFollowersShareTheCapturedStates: two labs that follow one capture
// show its states without a copy each: the request rows their trackers
// show, and that a frame hook gets, are the very rows the
// other follower shows (with the capturing lab's id hidden, once for
// both), marked kept with the length of their JSON. A change on one
// follower's tracker makes that tracker's own copy first, and leaves the
// other follower's state as it was.
func TestFollowersShareTheCapturedStates(t *testing.T) {
	ctx := context.Background()
	own := engine.NewTracker("lead1", nil)
	own.Begin("s", "v", "max")
	capture := engine.NewCapture(own)
	env := engine.NewEnv(engine.Sandbox{}, nil, own, engine.NewPace(engine.Speed{Max: true}), nil)
	for i := range 3 {
		own.Update(func(s *engine.State) {
			s.Requests = append(s.Requests, engine.RequestRow{Seq: i + 1, Pattern: "select", Role: "lab_lead1_app", Rows: i})
		})
		if err := env.Step(ctx, fmt.Sprint("frame ", i)); err != nil {
			t.Fatal(err)
		}
	}
	own.Finish(nil)
	capture.Finish()

	follow := func(lab string) (*engine.Tracker, []engine.State) {
		tr := engine.NewTracker(lab, nil)
		tr.Begin("s", "v", "4")
		var frames []engine.State
		tr.AddFrameHook(func(st engine.State) { frames = append(frames, st) })
		if err := capture.Follow(ctx, tr, engine.NewPace(engine.Speed{Max: true}), engine.Shared{AgoMS: 10}); err != nil {
			t.Fatal(err)
		}
		return tr, frames
	}
	a, framesA := follow("follower1")
	b, framesB := follow("follower2")
	if len(framesA) != 3 || len(framesB) != 3 {
		t.Fatalf("frames shown: %d and %d, want 3 each", len(framesA), len(framesB))
	}
	for i := range framesA {
		fa, fb := framesA[i], framesB[i]
		if fa.Lab != "follower1" || fb.Lab != "follower2" {
			t.Errorf("frame %d shown as lab %q and %q, want each follower's own", i, fa.Lab, fb.Lab)
		}
		if len(fa.Requests) != i+1 || len(fb.Requests) != i+1 || &fa.Requests[0] != &fb.Requests[0] {
			t.Errorf("frame %d: the followers' request rows are copies (%d and %d rows), want the capture's, shared", i, len(fa.Requests), len(fb.Requests))
		}
		if size, ok := fa.Kept(); !ok || size == 0 {
			t.Errorf("frame %d: kept %v, size %d; want a kept state with the length of its JSON", i, ok, size)
		}
		if fa.Requests[0].Role != "lab_"+engine.HiddenLab+"_app" {
			t.Errorf("frame %d shows role %q, want the capturing lab hidden", i, fa.Requests[0].Role)
		}
	}
	va, vb := a.View(), b.View()
	if &va.Requests[0] != &vb.Requests[0] {
		t.Error("the followers' last states do not share their request rows")
	}
	if snap := a.Snapshot(); &snap.Requests[0] == &va.Requests[0] {
		t.Error("Snapshot returned the shared rows, not a copy")
	} else if _, ok := snap.Kept(); ok {
		t.Error("a Snapshot is marked kept")
	}
	a.UpdateRequest(1, func(r *engine.RequestRow) { r.Rows = 99 })
	if got := b.View().Requests[0].Rows; got != 0 {
		t.Fatalf("a change on one follower's tracker reached the other's: rows %d, want 0", got)
	}
	if st := a.View(); st.Requests[0].Rows != 99 || &st.Requests[0] == &va.Requests[0] {
		t.Errorf("the changed follower shows rows %d (want 99) in shared rows %v", st.Requests[0].Rows, &st.Requests[0] == &va.Requests[0])
	} else if _, ok := st.Kept(); ok {
		t.Error("a state changed in place is still marked kept")
	}
}
