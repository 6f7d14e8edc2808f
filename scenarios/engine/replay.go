package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Pacing says how a run of a scenario at a teaching pace uses its
// connections.
type Pacing string

const (
	// PacingReplay is a scenario whose outcome does not depend on the pace:
	// a run at a teaching pace runs at full speed while it holds its
	// connections, gives them back, and its states are shown at the
	// learner's pace (see Capture).
	PacingReplay Pacing = "replay"
	// PacingLive is a scenario whose outcome depends on time (it measures
	// wall-clock time, waits with timeouts, or samples while requests
	// wait): every run plays live at the learner's pace, holding its
	// connections throughout. The scenario's LiveWhy says why.
	PacingLive Pacing = "live"
)

// Replayable reports whether a run of the scenario at speed may run at full
// speed and be shown at that speed: the scenario says PacingReplay, and the
// speed is a factor (a run at full speed needs no replay; a single-step run
// stays live, so that a look at a paused run's connections finds them).
func (s *Scenario) Replayable(speed Speed) bool {
	return s.Pacing == PacingReplay && !speed.Max && !speed.Single
}

// Replay says that the run on screen ran at full speed while it held its
// connections and is shown at the learner's pace from the states it
// produced.
type Replay struct {
	// RanMS is how long the run took; 0 while it still runs.
	RanMS int64 `json:"ran_ms"`
	// Shared is set when the run on screen is a crowd that another learner
	// started on the same server, which this lab follows (Capture.Follow).
	Shared *Shared `json:"shared,omitempty"`
}

// Shared says that the run on screen follows a crowd run another learner
// started on the same server: this lab opened no connection for it.
type Shared struct {
	// AgoMS is how long that run had been going when this lab's run
	// started following it.
	AgoMS int64 `json:"ago_ms"`
	// Busy says the run followed is not a crowd but the same run of
	// another lab, followed because every connection rlslab may use on the
	// server was taken: the room did not wait for the machine.
	Busy bool `json:"busy,omitempty"`
}

// HiddenLab is what the id of the lab that runs a shared crowd becomes in
// the states its followers see ("lab_…_app"): they must not learn another
// learner's lab.
const HiddenLab = "…"

// SharedNote says in words that the run on screen is a shared crowd, or ""
// when it is not.
func (r *Replay) SharedNote() string {
	if r == nil || r.Shared == nil {
		return ""
	}
	if r.Shared.Busy {
		return "Shared run: every connection rlslab may use on this server was taken when you clicked, so instead of waiting you see the same run going in another learner's lab (started " +
			FormatAgo(r.Shared.AgoMS) + " before your click, shown as lab_" + HiddenLab + "); its backends and settings are real, read from the database, and your own lab opened no connection."
	}
	return "Shared crowd: this is a crowd run already going on this server (started " + FormatAgo(r.Shared.AgoMS) +
		" before your click, in another learner's lab, shown as lab_" + HiddenLab + "); a crowd for every learner at once would measure the machine, not the pool."
}

// CountOf says n of something in words that agree with it: "1 request",
// "3 requests".
func CountOf(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// FormatAgo formats a duration in milliseconds in whole seconds ("4 s"),
// or "less than a second".
func FormatAgo(ms int64) string {
	if ms < 1000 {
		return "less than a second"
	}
	return strconv.FormatInt(ms/1000, 10) + " s"
}

// ReplayNote says in words how the run on screen is shown ("Ran in 212 ms,
// shown at 1×"), or "" for a run shown live.
func (s State) ReplayNote() string {
	if s.Replay == nil {
		return ""
	}
	if shared := s.Replay.SharedNote(); shared != "" {
		s.Replay = &Replay{RanMS: s.Replay.RanMS}
		return shared + " " + s.ReplayNote()
	}
	ran := "Running at full speed"
	if s.Replay.RanMS > 0 {
		ran = "Ran in " + FormatMS(s.Replay.RanMS)
	}
	switch s.Speed {
	case "max":
		return ran + ", shown at full speed"
	case "step":
		return ran + ", shown one frame at a time"
	case "":
		return ran
	}
	return ran + ", shown at " + s.Speed + "×"
}

// FormatMS formats a duration in milliseconds as "212 ms" or "3.4 s".
func FormatMS(ms int64) string {
	if ms < 10000 {
		return strconv.FormatInt(ms, 10) + " ms"
	}
	return strconv.FormatFloat(float64(ms)/1000, 'f', 1, 64) + " s"
}

// captureEvery is how often a capture keeps a state between two frames;
// every frame itself is kept.
const captureEvery = 20 * time.Millisecond

// captured is one state a run produced, At after the run began; Step marks
// the state at the end of a frame (an Env.Step), which a replay holds for
// as long as the pace says. The state is marked kept (State.Kept): nobody
// changes it, and the trackers it is shown on share it.
type captured struct {
	st   State
	at   time.Duration
	step bool
}

// Capture keeps the states a run produces on its own tracker (every frame,
// and the changes between frames at most every captureEvery), so that they
// can be shown later, at a teaching pace, by Replay, while the run itself
// went at full speed. The run's tracker must be its own: nobody watches it.
type Capture struct {
	tracker *Tracker
	began   time.Time
	stop    context.CancelFunc
	done    chan struct{}

	lab    string // the id of the lab whose run it keeps
	unhook func() // takes the capture's frame hook off the tracker

	mu      sync.Mutex
	states  []captured
	hidden  []*State // states[i].st with the lab's id hidden, made when a follower first needs it
	version uint64
	ran     time.Duration // set by Finish
	over    bool
	more    chan struct{} // closed and replaced when a state is kept or the capture ends
}

// NewCapture starts keeping t's states until Finish.
func NewCapture(t *Tracker) *Capture {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Capture{tracker: t, lab: t.Snapshot().Lab, began: time.Now(), stop: cancel, done: make(chan struct{}), more: make(chan struct{})}
	changes, unsubscribe := t.Subscribe()
	c.unhook = t.AddFrameHook(func(st State) { c.add(st, true) })
	go func() {
		defer close(c.done)
		defer unsubscribe()
		for {
			select {
			case <-ctx.Done():
				return
			case <-changes:
			}
			c.add(t.Snapshot(), false)
			select {
			case <-ctx.Done():
				return
			case <-time.After(captureEvery):
			}
		}
	}()
	return c
}

// add keeps st: a state between frames only when it is newer than every
// state kept; a frame's state always, unless it is the last frame again.
// A state once kept is never replaced: a replay may have shown it already.
func (c *Capture) add(st State, step bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.over {
		return
	}
	if n := len(c.states); n > 0 {
		last := c.states[n-1]
		if step && last.step && last.st.Version == st.Version || !step && st.Version <= c.version {
			return
		}
	}
	c.version = max(c.version, st.Version)
	st.kept = &keptState{}
	c.states = append(c.states, captured{st: st, at: time.Since(c.began), step: step})
	close(c.more)
	c.more = make(chan struct{})
}

// Finish stops the capture after the run returned, keeps its final state,
// and records how long the run took.
func (c *Capture) Finish() {
	c.unhook()
	c.stop()
	<-c.done
	c.add(c.tracker.Snapshot(), false)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ran = time.Since(c.began)
	c.over = true
	close(c.more)
	c.more = make(chan struct{})
}

// Frames returns how many frames (Env.Step states) the capture kept.
func (c *Capture) Frames() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, s := range c.states {
		if s.step {
			n++
		}
	}
	return n
}

// next returns state i once it is kept, whether there is none (the run is
// over with fewer states), and how long the run took (0 while it runs).
// With hide, the state has the capturing lab's id hidden (see Follow).
func (c *Capture) next(ctx context.Context, p *Pace, i int, hide bool) (st captured, ok bool, ran time.Duration, err error) {
	for {
		c.mu.Lock()
		if i < len(c.states) {
			st, ran = c.states[i], c.ran
			if hide {
				st.st = c.hiddenLocked(i)
			}
			c.mu.Unlock()
			return st, true, ran, nil
		}
		if c.over {
			ran = c.ran
			c.mu.Unlock()
			return captured{}, false, ran, nil
		}
		more := c.more
		c.mu.Unlock()
		select {
		case <-more:
		case <-ctx.Done():
			return captured{}, false, 0, ctx.Err()
		case <-p.stopped:
			return captured{}, false, 0, ErrStopped
		}
	}
}

// Replay shows the captured states on tr, the lab's own tracker, as the run
// produced them: the states between two frames as far apart as they were,
// and each frame held for as long as p says (p may change while it plays,
// and in single-step mode each frame waits for Step). It may start while
// the run still goes: a state not kept yet is waited for. Every state shown
// carries a Replay note; the lab's server counts, outage, speed and queue
// wait stay as tr has them. It returns once the last state is shown, or
// with ctx's error, or ErrStopped once p is stopped.
func (c *Capture) Replay(ctx context.Context, tr *Tracker, p *Pace) error {
	return c.replay(ctx, tr, p, nil)
}

// Follow shows the captured states on tr, another lab's tracker, as Replay
// does, from the run's first state on, for a run that follows this one
// instead of running a crowd of its own: in every state shown the
// capturing lab's id is HiddenLab ("lab_…_app"; each state is rewritten
// once, for every follower), and the replay note carries shared.
func (c *Capture) Follow(ctx context.Context, tr *Tracker, p *Pace, shared Shared) error {
	return c.replay(ctx, tr, p, &shared)
}

// hiddenLocked returns state i with the capturing lab's id replaced by
// HiddenLab in every string, made once and kept. The states a follower
// shows are shared by every follower, and by their recordings (they are
// marked kept, with the length of their JSON): a tracker copies a kept
// state before it changes its slices (Tracker.Update).
func (c *Capture) hiddenLocked(i int) State {
	for len(c.hidden) <= i {
		c.hidden = append(c.hidden, nil)
	}
	if h := c.hidden[i]; h != nil {
		return *h
	}
	st := c.states[i].st
	if c.lab != "" {
		if b, err := json.Marshal(st); err == nil {
			var out State
			if json.Unmarshal([]byte(strings.ReplaceAll(string(b), c.lab, HiddenLab)), &out) == nil {
				out.kept = &keptState{size: len(b)}
				if out.Connections == nil {
					out.Connections = []Connection{}
				}
				if out.Requests == nil {
					out.Requests = []RequestRow{}
				}
				if out.Series == nil {
					out.Series = []Sample{}
				}
				st = out
			}
		}
	}
	c.hidden[i] = &st
	return st
}

func (c *Capture) replay(ctx context.Context, tr *Tracker, p *Pace, shared *Shared) error {
	start := time.Now()
	var held time.Duration // how long the frames shown so far were held
	for i := 0; ; i++ {
		st, ok, ran, err := c.next(ctx, p, i, shared != nil)
		if err != nil {
			return err
		}
		if !ok {
			// The run is over: the last state shown learns how long it took.
			tr.set(func(s *State) { s.Replay = &Replay{RanMS: max(ran.Milliseconds(), 1), Shared: shared} })
			return nil
		}
		if wait := time.Until(start.Add(st.at + held)); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-p.stopped:
				t.Stop()
				return ErrStopped
			}
		}
		note := &Replay{Shared: shared}
		if ran > 0 {
			note.RanMS = max(ran.Milliseconds(), 1)
		}
		tr.show(st.st, st.step, note)
		if st.step {
			t := time.Now()
			if err := p.Wait(ctx); err != nil {
				return err
			}
			held += time.Since(t)
		}
	}
}

// show puts a captured state on the tracker: everything the run produced,
// with the lab's own identity, server counts, outage, speed and queue wait
// kept, and note set. A frame's state counts as a frame shown and goes to
// the frame hooks. The state's slices are the capture's, not a copy
// (it is kept, see State.Kept).
func (t *Tracker) show(st State, step bool, note *Replay) {
	t.set(func(s *State) {
		keep := *s
		*s = st
		s.Lab, s.Tenants, s.Server, s.Outage = keep.Lab, keep.Tenants, keep.Server, keep.Outage
		s.Speed, s.QueuedMS, s.Queue, s.Version = keep.Speed, keep.QueuedMS, keep.Queue, keep.Version
		s.Frame = keep.Frame
		if step {
			t.frame++
			s.Frame = t.frame
		}
		s.Replay = note
	})
	if step {
		t.stepped()
	}
}

// String says what the capture holds, for logs.
func (c *Capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	first := time.Duration(0)
	for _, s := range c.states {
		if s.step {
			first = s.at
			break
		}
	}
	return fmt.Sprintf("%d states, first frame %s, ran %s", len(c.states), first.Round(time.Millisecond), c.ran.Round(time.Millisecond))
}
