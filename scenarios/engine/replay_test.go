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

	// Every frame the lab's tracker shows goes to its OnFrame function.
	var shown []engine.State
	lab.OnFrame(func(st engine.State) { shown = append(shown, st) })
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
