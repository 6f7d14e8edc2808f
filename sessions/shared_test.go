package sessions_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// runRecords keeps the records of the runs that ended.
type runRecords struct {
	mu   sync.Mutex
	recs []sessions.RunRecord
}

func (r *runRecords) RunEnded(rec sessions.RunRecord) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec)
}

// of returns the records of lab's runs.
func (r *runRecords) of(lab *sessions.Lab) []sessions.RunRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []sessions.RunRecord
	for _, rec := range r.recs {
		if rec.Lab == lab {
			out = append(out, rec)
		}
	}
	return out
}

// crowdParams is a small crowd: 30 users online at once against the app
// role's CONNECTION LIMIT, on the lab's seeded tenants.
var crowdParams = map[string]string{"users": "30", "tenants": "3"}

func startRun(t *testing.T, l *sessions.Lab, variant string, speed engine.Speed, params map[string]string) {
	t.Helper()
	if err := l.Start(sessions.RunRequest{Scenario: "shared-pool", Variant: variant, Speed: speed, Params: params}); err != nil {
		t.Fatal(err)
	}
}

// frameJSON returns a recorded frame's state as JSON.
func frameJSON(t *testing.T, f sessions.RecordedFrame) json.RawMessage {
	t.Helper()
	b, err := f.JSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func waitRun(t *testing.T, l *sessions.Lab) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return l.Wait(ctx)
}

// TestCrowdIsShared: a crowd run shown at 0.25× in one lab is followed by
// the same crowd started in a second lab: the second run holds no
// connection of the budget and opens no backend, says that it is a shared
// crowd without naming the first lab, shows the first run's requests, ends
// with the same outcome and is recorded as shared. A run with other
// parameters, or of the other variant, runs a crowd of its own.
func TestCrowdIsShared(t *testing.T) {
	t.Parallel()
	recs := &runRecords{}
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 3, Subscribers: []sessions.RunSubscriber{recs}})
	lead := sessionstest.MustCreateLab(t, m, "leader")
	follower := sessionstest.MustCreateLab(t, m, "follower")
	other := sessionstest.MustCreateLab(t, m, "other")

	startRun(t, lead, scenarios.SharedPoolConnPerUser, engine.Speed{Factor: 0.25}, crowdParams)
	waitState(t, lead, "the leader's first frame", func(st engine.State) bool { return st.Frame >= 1 })
	// The leader's real run is over (its connections are back) while its
	// frames are still shown: a follower from now on must hold none.
	waitUsage(t, m, "the leader's connections back", func(u sessions.Usage) bool { return u.RunConns == 0 })
	if st := lead.Tracker().Snapshot(); st.Status != engine.StatusRunning {
		t.Fatalf("the leader ended before a follower could start: %s", st.Status)
	}

	peak := sessionstest.PeakBackends(m, follower)
	startRun(t, follower, scenarios.SharedPoolConnPerUser, engine.Speed{Factor: 4}, crowdParams)
	first := waitState(t, follower, "the follower's first frame", func(st engine.State) bool { return st.Frame >= 1 })
	if u := m.Usage(); u.RunConns != 0 || u.Queued != 0 {
		t.Errorf("while the follower shows its first frame: usage %+v, want no run connections and no queue", u)
	}
	note := first.ReplayNote()
	if first.Replay == nil || first.Replay.Shared == nil || !strings.HasPrefix(note, "Shared crowd: ") {
		t.Fatalf("the follower's first frame does not say it is a shared crowd: replay %+v, note %q", first.Replay, note)
	}
	if err := waitRun(t, follower); err != nil {
		t.Fatalf("follower: %v", err)
	}
	if n := peak(); n != 0 {
		t.Errorf("the follower's lab had %d backends during its run, want 0", n)
	}
	got := follower.Tracker().Snapshot()
	if err := lead.SetSpeed(engine.Speed{Max: true}); err != nil {
		t.Fatal(err)
	}
	if err := waitRun(t, lead); err != nil {
		t.Fatalf("leader: %v", err)
	}
	want := lead.Tracker().Snapshot()
	if got.QueuedMS != 0 || got.Queue != nil {
		t.Errorf("the follower queued: %d ms, %+v", got.QueuedMS, got.Queue)
	}
	if got.Status != want.Status || engine.OutcomeOf(got).Kind != engine.OutcomeOf(want).Kind || got.Frame != want.Frame {
		t.Errorf("follower ended %s, %q, %d frames; leader %s, %q, %d frames", got.Status, engine.OutcomeOf(got).Kind, got.Frame, want.Status, engine.OutcomeOf(want).Kind, want.Frame)
	}
	if len(got.Requests) != len(want.Requests) || len(want.Requests) == 0 {
		t.Fatalf("follower shows %d requests, leader %d", len(got.Requests), len(want.Requests))
	}
	for i, w := range want.Requests {
		g := got.Requests[i]
		if g.Seq != w.Seq || g.PID != w.PID || g.Rows != w.Rows || g.SQLState != w.SQLState || g.Phase != w.Phase ||
			g.Role != strings.ReplaceAll(w.Role, lead.ID, engine.HiddenLab) {
			t.Errorf("request %d: follower %+v, leader %+v", i, g, w)
			break
		}
	}
	b, _ := json.Marshal(got)
	if strings.Contains(string(b), lead.ID) {
		t.Errorf("the follower's state names the leader's lab %s: %s", lead.ID, b)
	}
	if fr := recs.of(follower); len(fr) != 1 || fr[0].Final.Replay == nil || fr[0].Final.Replay.Shared == nil || len(fr[0].Frames) == 0 {
		t.Errorf("the follower's run is not recorded as a shared crowd: %d records", len(fr))
	} else {
		// Its frames are the states the follower showed, as a replay of
		// the recording reads them: its own lab, the leader's hidden.
		shared := 0
		for i, f := range fr[0].Frames {
			raw := frameJSON(t, f)
			d, err := sessions.DecodeFrame(sessions.RecordingFormat, raw)
			if err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
			if d.Lab != follower.ID || strings.Contains(string(raw), lead.ID) {
				t.Errorf("recorded frame %d shows lab %q (want %s) or names the leader's lab %s", i, d.Lab, follower.ID, lead.ID)
				break
			}
			if d.Replay != nil && d.Replay.Shared != nil && len(d.Requests) > 0 {
				shared++
			}
		}
		if shared == 0 {
			t.Errorf("none of the follower's %d recorded frames shows the shared crowd's requests", len(fr[0].Frames))
		}
	}
	if lr := recs.of(lead); len(lr) != 1 || lr[0].Final.Replay == nil || lr[0].Final.Replay.Shared != nil {
		t.Errorf("the leader's run is not recorded as its own: %d records", len(lr))
	}

	// Other parameters, or the other variant, while a crowd goes: a crowd
	// of one's own.
	startRun(t, lead, scenarios.SharedPoolConnPerUser, engine.Speed{Factor: 0.25}, crowdParams)
	waitState(t, lead, "the leader's first frame", func(st engine.State) bool { return st.Frame >= 1 })
	for _, r := range []struct {
		variant string
		params  map[string]string
	}{
		{scenarios.SharedPoolConnPerUser, map[string]string{"users": "20", "tenants": "3"}},
		{scenarios.SharedPoolShared, crowdParams},
	} {
		peak := sessionstest.PeakBackends(m, other)
		startRun(t, other, r.variant, engine.Speed{Factor: 4}, r.params)
		if err := waitRun(t, other); err != nil {
			t.Fatalf("%s %v: %v", r.variant, r.params, err)
		}
		st := other.Tracker().Snapshot()
		if st.Replay == nil || st.Replay.Shared != nil {
			t.Errorf("%s %v followed the leader's crowd: replay %+v", r.variant, r.params, st.Replay)
		}
		if n := peak(); n == 0 {
			t.Errorf("%s %v: no backend of its own", r.variant, r.params)
		}
	}
	if !lead.Running() {
		t.Error("the leader stopped")
	}
}

// TestFollowerResetLeavesLeaderRunning: a reset of a lab that follows a
// crowd stops only that lab's run; the leader goes on to its end.
func TestFollowerResetLeavesLeaderRunning(t *testing.T) {
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2})
	lead := sessionstest.MustCreateLab(t, m, "leader")
	follower := sessionstest.MustCreateLab(t, m, "follower")
	startRun(t, lead, scenarios.SharedPoolConnPerUser, engine.Speed{Factor: 0.25}, crowdParams)
	waitState(t, lead, "the leader's first frame", func(st engine.State) bool { return st.Frame >= 1 })
	startRun(t, follower, scenarios.SharedPoolConnPerUser, engine.Speed{Factor: 0.25}, crowdParams)
	st := waitState(t, follower, "the follower's first frame", func(st engine.State) bool { return st.Frame >= 1 })
	if st.Replay == nil || st.Replay.Shared == nil {
		t.Fatalf("the second run does not follow: replay %+v", st.Replay)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := follower.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if follower.Running() {
		t.Error("the follower still runs after its reset")
	}
	frame := lead.Tracker().Frame()
	waitState(t, lead, "the leader's next frame", func(st engine.State) bool { return st.Frame > frame })
	if err := lead.SetSpeed(engine.Speed{Max: true}); err != nil {
		t.Fatal(err)
	}
	if err := waitRun(t, lead); err != nil {
		t.Fatalf("the leader after the follower's reset: %v", err)
	}
	if st := lead.Tracker().Snapshot(); st.Status != engine.StatusDone {
		t.Errorf("the leader ended %s: %s", st.Status, st.Error)
	}
}

// TestLeaderResetEndsFollowers: a crowd run waiting in the admission queue
// is followed already; when its learner resets it before it ran, its
// follower ends saying that the shared crowd was stopped, and holds no
// connection meanwhile.
func TestLeaderResetEndsFollowers(t *testing.T) {
	t.Parallel()
	// Room for one crowd run at a time (16 connections each), not two.
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 3, Budget: sessions.AdminConns + 1 + sessions.MaintConns + 30})
	blocker := sessionstest.MustCreateLab(t, m, "blocker")
	lead := sessionstest.MustCreateLab(t, m, "leader")
	follower := sessionstest.MustCreateLab(t, m, "follower")
	// A crowd paused in single-step mode holds its connections (and, not
	// being shown as a replay, is followed by nobody).
	startRun(t, blocker, scenarios.SharedPoolConnPerUser, engine.Speed{Single: true}, crowdParams)
	waitState(t, blocker, "the blocker's first frame", func(st engine.State) bool { return st.Frame >= 1 })
	startRun(t, lead, scenarios.SharedPoolConnPerUser, engine.Speed{Factor: 1}, crowdParams)
	waitState(t, lead, "the leader queued", func(st engine.State) bool { return st.Status == engine.StatusQueued })
	startRun(t, follower, scenarios.SharedPoolConnPerUser, engine.Speed{Factor: 4}, crowdParams)
	st := waitState(t, follower, "the follower following", func(st engine.State) bool { return st.Replay != nil && st.Replay.Shared != nil })
	if st.Status != engine.StatusRunning || st.Queue != nil {
		t.Errorf("the follower of a queued crowd: status %s, queue %+v; want running, not queued", st.Status, st.Queue)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := lead.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	// The follower may have ended before Wait is asked: its state says how.
	st = waitState(t, follower, "the follower's end", func(st engine.State) bool { return st.Status != engine.StatusRunning })
	if st.Status != engine.StatusFailed || !strings.Contains(st.Error, "stopped by the learner who started it; run it again") {
		t.Errorf("the follower of a crowd reset before it ran: %s %q", st.Status, st.Error)
	}
	if u := m.Usage(); u.Queued != 0 {
		t.Errorf("usage %+v: a run still queued", u)
	}
	if err := blocker.Reset(ctx); err != nil {
		t.Fatal(err)
	}
}
