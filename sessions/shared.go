package sessions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// A crowd is shared. A crowd scenario (engine.Variant.Shared, shared-pool)
// costs the server seconds of CPU per run; a room whose learners each start
// one at once would measure the machine, not the pool the lesson is about.
// While a run of a shared variant goes for real in one lab, a run of the
// same scenario, variant and parameters started in another lab on the
// same server follows it: it holds no connection and never queues, shows
// the states the real run produces (from its first one, at its own pace,
// with the other lab's id hidden), says so in its replay note, and ends
// with the real run's outcome. A run asked to play live never follows and
// is never followed; only a run shown as a replay (a teaching pace) is
// followed, since only its states are kept for others to show.

// errSharedCrowdStopped ends a run whose followed crowd was stopped by the
// learner who started it (a reset, the lab's close) before it ended.
var errSharedCrowdStopped = errors.New("the shared run you were following was stopped by the learner who started it; run it again")

// sharedCrowd is a crowd run going for real in one lab, which runs in
// other labs of the same server follow.
type sharedCrowd struct {
	key string
	// room marks a lesson run shared because its room was busy, not a
	// crowd; live, one that plays live at its pace (not replayed).
	room, live bool
	began      time.Time     // when its learner started it
	ready      chan struct{} // closed once capture is set, or the run ended without one
	done       chan struct{} // closed once the real run returned (err, stopped set)

	mu        sync.Mutex
	capture   *engine.Capture
	err       error // the real run's error
	stopped   bool  // cancelled by its learner, or never admitted
	readyOnce sync.Once
	doneOnce  sync.Once
}

// sharedCrowds are the shared crowd runs going on one lab server, by key.
type sharedCrowds struct {
	mu    sync.Mutex
	going map[string]*sharedCrowd
}

// crowdKey is what two runs must have in common to share a crowd: the
// scenario, the variant, every parameter, and the app role's CONNECTION
// LIMIT the crowd runs into.
func crowdKey(sc *engine.Scenario, variant string, p engine.Params, connLimit int) string {
	names := make([]string, 0, len(p))
	for k := range p {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, "%s/%s/limit=%d", sc.ID, variant, connLimit)
	for _, k := range names {
		b.WriteString("/" + k + "=" + strconv.Itoa(p[k]))
	}
	return b.String()
}

// join returns the shared crowd going under key and false, or, when none
// is, registers a new one that the caller leads and returns it and true.
func (s *sharedCrowds) join(key string, room, live bool) (*sharedCrowd, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sh := s.going[key]; sh != nil {
		return sh, false
	}
	if s.going == nil {
		s.going = map[string]*sharedCrowd{}
	}
	sh := &sharedCrowd{key: key, room: room, live: live, began: time.Now(), ready: make(chan struct{}), done: make(chan struct{})}
	s.going[key] = sh
	return sh, true
}

// end takes sh off the server once its leading run is over; a run that
// never ran for real counts as stopped for its followers.
func (s *sharedCrowds) end(sh *sharedCrowd) {
	s.mu.Lock()
	if s.going[sh.key] == sh {
		delete(s.going, sh.key)
	}
	s.mu.Unlock()
	sh.finish(errSharedCrowdStopped, true)
}

// setCapture makes the real run's states available to the followers.
func (sh *sharedCrowd) setCapture(c *engine.Capture) {
	if sh == nil {
		return
	}
	sh.mu.Lock()
	sh.capture = c
	sh.mu.Unlock()
	sh.readyOnce.Do(func() { close(sh.ready) })
}

// finish records how the real run ended (only the first call counts).
func (sh *sharedCrowd) finish(err error, stopped bool) {
	if sh == nil {
		return
	}
	sh.doneOnce.Do(func() {
		sh.mu.Lock()
		sh.err, sh.stopped = err, stopped
		sh.mu.Unlock()
		close(sh.done)
	})
	sh.readyOnce.Do(func() { close(sh.ready) })
}

// shareCrowd decides how run takes part in a shared run: it returns the
// run to follow (follow true), or the run it leads and others may follow,
// or nil when the run is not shared. A crowd variant is always shared. A
// run of any other variant shown at a teaching pace leads when no run of
// the same key goes on the server, and follows one that goes only when it
// would otherwise wait for connections (need of them): a room that clicks
// Run together sees one real run at once instead of queueing for the
// machine, while a learner alone, or a room within the budget, runs in
// their own lab.
func (l *Lab) shareCrowd(run *activeRun, sc *engine.Scenario, params engine.Params, need int) (sh *sharedCrowd, follow bool) {
	v, ok := sc.Variant(run.variant)
	if !ok || run.live {
		return nil, false
	}
	key := crowdKey(sc, run.variant, sc.Defaults(params), l.Sandbox.ConnLimit)
	if !v.Shared {
		speed := run.pace.Speed()
		if speed.Max || speed.Single {
			return nil, false
		}
		live := !sc.Replayable(speed)
		if live {
			// A run that plays live is followed at its own pace: only a
			// run at the same speed shares it.
			key += "/live@" + speed.String()
		}
		l.srv.crowds.mu.Lock()
		going := l.srv.crowds.going[key]
		l.srv.crowds.mu.Unlock()
		if going != nil && l.srv.admit.wouldWait(need) {
			return going, true
		}
		if going != nil {
			return nil, false
		}
		sh, lead := l.srv.crowds.join(key, true, live)
		if !lead {
			return nil, false // another run took the lead meanwhile
		}
		return sh, false
	}
	if !sc.Replayable(run.pace.Speed()) {
		// Only a replayed run keeps its states for others: a run at full
		// speed or one step at a time follows one, but leads none.
		l.srv.crowds.mu.Lock()
		sh = l.srv.crowds.going[key]
		l.srv.crowds.mu.Unlock()
		return sh, sh != nil
	}
	sh, lead := l.srv.crowds.join(key, false, false)
	return sh, !lead
}

// follow plays a run that follows the shared crowd sh: it holds no
// connection, shows sh's states at the run's pace from the first one on,
// and returns the real run's error once the last state is shown.
func (l *Lab) follow(ctx context.Context, run *activeRun, sh *sharedCrowd, log *slog.Logger) error {
	run.mu.Lock()
	run.replayed = true
	run.mu.Unlock()
	shared := engine.Shared{AgoMS: time.Since(sh.began).Milliseconds(), Busy: sh.room}
	note := &engine.Replay{Shared: &shared}
	what := "a crowd run"
	if sh.room {
		what = "the same run, which"
	}
	l.tracker.Update(func(s *engine.State) {
		s.Replay = note
		s.Narration = "Following " + what + " another learner started " + engine.FormatAgo(shared.AgoMS) + " earlier on this server; its frames follow as it produces them."
	})
	log.Info("run follows a shared crowd", "started_ago", time.Duration(shared.AgoMS)*time.Millisecond)
	cancelled := func() error {
		if !run.isReset() {
			l.tracker.Finish(errors.New("run cancelled"))
		}
		return errors.New("run cancelled")
	}
	select {
	case <-sh.ready:
	case <-ctx.Done():
		return cancelled()
	}
	sh.mu.Lock()
	capture := sh.capture
	sh.mu.Unlock()
	if capture != nil {
		pace := run.pace
		if sh.live {
			// The states of a run that played live are already as far
			// apart as its pace made them: shown as they came, each frame
			// held once.
			pace = engine.NewPace(engine.Speed{Max: true})
			defer pace.Stop()
		}
		if err := capture.Follow(ctx, l.tracker, pace, shared); err != nil {
			return cancelled()
		}
	}
	select {
	case <-sh.done:
	case <-ctx.Done():
		return cancelled()
	}
	sh.mu.Lock()
	err, stopped := sh.err, sh.stopped
	sh.mu.Unlock()
	if stopped {
		l.tracker.Finish(errSharedCrowdStopped)
		return errSharedCrowdStopped
	}
	return err
}
