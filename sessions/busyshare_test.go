package sessions_test

import (
	"context"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// TestBusyRoomFollowsTheSameRun: a lesson run shown at a teaching pace
// runs in its own lab while connections are free, even when the same run
// goes in another lab; once the budget is taken, the same run started in a
// third lab follows the one going instead of waiting: it holds no
// connection, opens no backend, never queues, says on screen that it is a
// shared run, and ends with the same outcome and requests.
func TestBusyRoomFollowsTheSameRun(t *testing.T) {
	t.Parallel()
	// 5 connections for runs: a set-leak run (2) fits beside another, and
	// not beside a free-play pool of 4.
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 4, ConnLimit: 4, Budget: sessions.AdminConns + 1 + sessions.MaintConns + 5})
	lead := sessionstest.MustCreateLab(t, m, "leader")
	own := sessionstest.MustCreateLab(t, m, "own")
	holder := sessionstest.MustCreateLab(t, m, "holder")
	follower := sessionstest.MustCreateLab(t, m, "follower")
	start := func(l *sessions.Lab, speed engine.Speed) {
		t.Helper()
		if err := l.Start(sessions.RunRequest{Scenario: "set-leak", Variant: engine.PatternSessionSet, Speed: speed}); err != nil {
			t.Fatal(err)
		}
	}
	start(lead, engine.Speed{Factor: 0.25})
	waitState(t, lead, "the leader's first frame", func(st engine.State) bool { return st.Frame >= 1 })
	waitUsage(t, m, "the leader's connections back", func(u sessions.Usage) bool { return u.RunConns == 0 })

	// Connections are free: the same run in another lab is its own.
	start(own, engine.Speed{Max: true})
	if err := waitRun(t, own); err != nil {
		t.Fatal(err)
	}
	if st := own.Tracker().Snapshot(); (st.Replay != nil && st.Replay.Shared != nil) || st.Leaks() == 0 {
		t.Fatalf("a run started while connections were free: replay %+v, %d leaks; want its own run", st.Replay, st.Leaks())
	}
	start(own, engine.Speed{Factor: 1})
	first := waitState(t, own, "the own run's first frame", func(st engine.State) bool { return st.Frame >= 1 })
	if first.Replay != nil && first.Replay.Shared != nil {
		t.Fatalf("a run at 1× started while connections were free follows another lab's: %+v", first.Replay.Shared)
	}
	if err := own.SetSpeed(engine.Speed{Max: true}); err != nil {
		t.Fatal(err)
	}
	if err := waitRun(t, own); err != nil {
		t.Fatal(err)
	}
	if st := lead.Tracker().Snapshot(); st.Status != engine.StatusRunning {
		t.Fatalf("the leader ended before the budget was taken: %s", st.Status)
	}

	// A free-play pool of 4 takes the budget: the next one follows.
	if res, err := holder.SQL(context.Background(), sessions.SQLRequest{PoolSize: 4, SQL: "SELECT 1"}); err != nil || res.Error != "" {
		t.Fatalf("free play: %+v, %v", res, err)
	}
	waitUsage(t, m, "the free-play pool admitted", func(u sessions.Usage) bool { return u.RunConns == 4 })
	peak := sessionstest.PeakBackends(m, follower)
	start(follower, engine.Speed{Factor: 4})
	got := waitState(t, follower, "the follower's first frame", func(st engine.State) bool { return st.Frame >= 1 })
	note := got.ReplayNote()
	if got.Replay == nil || got.Replay.Shared == nil || !got.Replay.Shared.Busy || !strings.HasPrefix(note, "Shared run: ") || strings.Contains(note, lead.ID) {
		t.Fatalf("the follower's first frame: replay %+v, note %q; want a shared run that names no lab", got.Replay, note)
	}
	if u := m.Usage(); u.RunConns != 4 || u.Queued != 0 {
		t.Errorf("while the follower shows its first frame: usage %+v, want only the free-play pool's 4 and no queue", u)
	}
	if err := lead.SetSpeed(engine.Speed{Max: true}); err != nil {
		t.Fatal(err)
	}
	if err := follower.SetSpeed(engine.Speed{Max: true}); err != nil {
		t.Fatal(err)
	}
	if err := waitRun(t, follower); err != nil {
		t.Fatalf("follower: %v", err)
	}
	if err := waitRun(t, lead); err != nil {
		t.Fatalf("leader: %v", err)
	}
	if n := peak(); n != 0 {
		t.Errorf("the follower's lab had %d backends during its run, want 0", n)
	}
	fin, want := follower.Tracker().Snapshot(), lead.Tracker().Snapshot()
	if fin.QueuedMS != 0 || fin.Status != engine.StatusDone || fin.Leaks() != want.Leaks() || fin.Leaks() == 0 || len(fin.Requests) != len(want.Requests) {
		t.Errorf("follower: %s, %d leaks, %d requests, queued %d ms; leader: %s, %d leaks, %d requests",
			fin.Status, fin.Leaks(), len(fin.Requests), fin.QueuedMS, want.Status, want.Leaks(), len(want.Requests))
	}
}

// TestBusyRoomFollowsALiveRun: a run of a lesson that plays live (its
// outcome depends on the pace) is followed as it plays by the same run
// started in another lab while the budget is taken: the follower holds no
// connection and never queues, shows the leader's frames as they come, and
// ends with the same outcome.
func TestBusyRoomFollowsALiveRun(t *testing.T) {
	t.Parallel()
	const runs = 6 // the live run's 2 and a free-play pool of 4
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 3, ConnLimit: 4, Budget: sessions.AdminConns + 1 + sessions.MaintConns + runs})
	lead := sessionstest.MustCreateLab(t, m, "leader")
	holder := sessionstest.MustCreateLab(t, m, "holder")
	follower := sessionstest.MustCreateLab(t, m, "follower")
	run := sessions.RunRequest{Scenario: "wrong-scope", Variant: "global", Speed: engine.Speed{Factor: 2}}
	if err := lead.Start(run); err != nil {
		t.Fatal(err)
	}
	waitState(t, lead, "the leader's first frame", func(st engine.State) bool { return st.Frame >= 1 })
	held := m.Usage().RunConns
	if held == 0 || held >= runs {
		t.Fatalf("the live leader holds %d of %d connections", held, runs)
	}
	if res, err := holder.SQL(context.Background(), sessions.SQLRequest{PoolSize: min(runs-held, 4), SQL: "SELECT 1"}); err != nil || res.Error != "" {
		t.Fatalf("free play: %+v, %v", res, err)
	}
	if u := m.Usage(); u.RunConns+1 <= runs {
		t.Fatalf("the budget is not taken: %d of %d", u.RunConns, runs)
	}
	peak := sessionstest.PeakBackends(m, follower)
	if err := follower.Start(run); err != nil {
		t.Fatal(err)
	}
	got := waitState(t, follower, "the follower's first frame", func(st engine.State) bool { return st.Frame >= 1 })
	if got.Replay == nil || got.Replay.Shared == nil || !got.Replay.Shared.Busy {
		t.Fatalf("the follower's first frame: replay %+v; want a shared run", got.Replay)
	}
	if err := waitRun(t, lead); err != nil {
		t.Fatalf("leader: %v", err)
	}
	if err := waitRun(t, follower); err != nil {
		t.Fatalf("follower: %v", err)
	}
	if n := peak(); n != 0 {
		t.Errorf("the follower's lab had %d backends during its run, want 0", n)
	}
	fin, want := follower.Tracker().Snapshot(), lead.Tracker().Snapshot()
	if fin.QueuedMS != 0 || fin.Status != engine.StatusDone || fin.Leaks() != want.Leaks() || len(fin.Requests) != len(want.Requests) || fin.Frame != want.Frame {
		t.Errorf("follower: %s, %d leaks, %d requests, %d frames, queued %d ms; leader: %s, %d leaks, %d requests, %d frames",
			fin.Status, fin.Leaks(), len(fin.Requests), fin.Frame, fin.QueuedMS, want.Status, want.Leaks(), len(want.Requests), want.Frame)
	}
}

// TestSharedBudgetRoomRunsItsOwn: with the budget shared through rlslab's
// tables (as serve runs it), a lease shrinks to what runs use while none
// waits; the same run started in a second lab while the first is shown
// still runs in its own lab, since the budget has room for it.
func TestSharedBudgetRoomRunsItsOwn(t *testing.T) {
	t.Parallel()
	m := openInstance(t, pgenvtest.MustServer(t), "busy-share-"+strings.ReplaceAll(t.Name(), "/", "-"), -1)
	lead := sessionstest.MustCreateLab(t, m, "leader")
	own := sessionstest.MustCreateLab(t, m, "own")
	if err := lead.Start(sessions.RunRequest{Scenario: "set-leak", Variant: engine.PatternSessionSet, Speed: engine.Speed{Factor: 0.25}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, lead, "the leader's first frame", func(st engine.State) bool { return st.Frame >= 1 })
	waitUsage(t, m, "the leader's connections back", func(u sessions.Usage) bool { return u.RunConns == 0 })
	if err := own.Start(sessions.RunRequest{Scenario: "set-leak", Variant: engine.PatternSessionSet, Speed: engine.Speed{Factor: 1}}); err != nil {
		t.Fatal(err)
	}
	first := waitState(t, own, "the second lab's first frame", func(st engine.State) bool { return st.Frame >= 1 })
	if first.Replay != nil && first.Replay.Shared != nil {
		t.Fatalf("with the budget free, the second lab follows the first: %+v", first.Replay.Shared)
	}
	for _, l := range []*sessions.Lab{lead, own} {
		if err := l.SetSpeed(engine.Speed{Max: true}); err != nil {
			t.Fatal(err)
		}
		if err := waitRun(t, l); err != nil {
			t.Fatal(err)
		}
	}
}
