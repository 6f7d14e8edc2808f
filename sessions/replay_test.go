package sessions_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// waitUsage waits (up to 10 s) until the manager's usage satisfies ok. The
// admission queue tells nobody when it changes, so it asks again, backing
// off from 2 ms to 100 ms.
func waitUsage(t *testing.T, m *sessions.Manager, what string, ok func(sessions.Usage) bool) sessions.Usage {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for wait := 2 * time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		u := m.Usage()
		if ok(u) {
			return u
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: usage %+v", what, u)
		}
		time.Sleep(wait)
	}
}

// TestReplayedRunGivesItsBudgetBackBeforeItIsShown runs lesson 1 at 0.25×
// (each frame on screen for 3.6 s): the run goes at full speed, its
// connections go back to the budget and its backends leave the server
// while its frames are still being shown, each frame saying how it is
// shown; at full speed the rest is shown at once, with the outcome of the
// real run (one leak), every frame of it.
func TestReplayedRunGivesItsBudgetBackBeforeItIsShown(t *testing.T) {
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2})
	l := sessionstest.MustCreateLab(t, m, "owner")
	if err := l.Start(sessions.RunRequest{Scenario: "set-leak", Variant: engine.PatternSessionSet, Speed: engine.Speed{Factor: 0.25}}); err != nil {
		t.Fatal(err)
	}
	first := waitState(t, l, "the first frame", func(st engine.State) bool { return st.Frame >= 1 })
	if first.Replay == nil || first.ReplayNote() == "" {
		t.Fatalf("lesson 1 at 0.25× is not shown as a replay: frame 1 is %+v", first)
	}
	waitUsage(t, m, "the run's connections back in the budget", func(u sessions.Usage) bool { return u.RunConns == 0 })
	st := l.Tracker().Snapshot()
	if st.Status != engine.StatusRunning || st.Frame > 2 {
		t.Fatalf("the budget came back only when the replay was at frame %d, status %s; want it back while the first frames are shown", st.Frame, st.Status)
	}
	if n := appBackends(t, m, l.Sandbox); n != 0 {
		t.Errorf("%d backends of the app role while the run is shown, after its budget came back", n)
	}
	st = waitState(t, l, "how long the run took", func(st engine.State) bool { return st.Replay != nil && st.Replay.RanMS > 0 })
	note := st.ReplayNote()
	if !strings.HasPrefix(note, "Ran in ") || !strings.HasSuffix(note, " ms, shown at 0.25×") {
		t.Errorf("replay note %q, want \"Ran in N ms, shown at 0.25×\"", note)
	}
	if doc := sessions.StateDocOf(st); doc.Replay == nil || doc.Replay.RanMS != st.Replay.RanMS {
		t.Errorf("state.json's replay: %+v, want ran_ms %d", doc.Replay, st.Replay.RanMS)
	}
	if err := l.SetSpeed(engine.Speed{Max: true}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	final := l.Tracker().Snapshot()
	if final.Status != engine.StatusDone || final.Leaks() != 1 || final.Replay == nil {
		t.Errorf("after the replay: status %s, %d leaks, replay %+v; want done, 1 leak, a replay note", final.Status, final.Leaks(), final.Replay)
	}
	// Every frame of the run was shown: the full-speed run of the same
	// variant shows as many.
	live := sessionstest.MustRun(t, l, "set-leak", engine.PatternSessionSet, nil)
	if final.Frame != live.Frame || live.Replay != nil {
		t.Errorf("the replay showed %d frames, a run at full speed %d (replay note %+v)", final.Frame, live.Frame, live.Replay)
	}
}

// TestLiveRunsHoldTheirConnections: a run asked to play live, a run in
// single-step mode and a run of a scenario whose outcome depends on time
// play live at their pace: the first frame is shown while the run holds
// its connections, with no replay note.
func TestLiveRunsHoldTheirConnections(t *testing.T) {
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2})
	l := sessionstest.MustCreateLab(t, m, "owner")
	for _, r := range []sessions.RunRequest{
		{Scenario: "set-leak", Variant: engine.PatternSessionSet, Speed: engine.Speed{Factor: 0.25}, Live: true},
		{Scenario: "set-leak", Variant: engine.PatternSessionSet, Speed: engine.Speed{Single: true}},
		{Scenario: "wrong-scope", Variant: "conn-per-user", Speed: engine.Speed{Factor: 0.25}},
	} {
		if err := l.Start(r); err != nil {
			t.Fatal(err)
		}
		st := waitState(t, l, "the first frame", func(st engine.State) bool { return st.Frame >= 1 })
		if st.Replay != nil {
			t.Errorf("%s at %s (live %v) is shown as a replay", r.Scenario, r.Speed, r.Live)
		}
		if u := m.Usage(); u.RunConns == 0 {
			t.Errorf("%s at %s (live %v): on its first frame the run holds no connection of the budget", r.Scenario, r.Speed, r.Live)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := l.Reset(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
}
