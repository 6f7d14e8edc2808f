package sessions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Lab is one learner's isolated workspace: a sandbox database with its own
// roles and data, at most one scenario run at a time, and any number of
// watching browsers. An idle lab holds no connection: a run's pools open
// when the run is admitted and close when it ends.
type Lab struct {
	ID      string
	Sandbox engine.Sandbox

	owner   string
	addr    string // the client address that asked for it; "" for workshop labs
	created time.Time
	mgr     *Manager
	srv     *labServer // the PostgreSQL server its sandbox is on
	tracker *engine.Tracker
	done    chan struct{} // closed when the lab closes

	// ctl serialises the control operations of this lab (Start, Reset,
	// close), so that a reset and a run never cross. It is held across
	// this lab's own database work, never across another lab's.
	ctl sync.Mutex

	mu         sync.Mutex // guards what follows; never held across I/O
	run        *activeRun
	lastActive time.Time
	closed     bool
	free       *freePlay // the free-play pool (freeplay.go), made on first use

	// A learner's app connected through rlslab's proxy (appconn.go).
	proxyPass string      // the password the app gives the proxy; set at creation
	appOpen   int         // app connections admitted and not yet gone
	app       *appSession // the app session drawn, while there is one

	// rowsChanged says free play or an app may have changed the lab's
	// rows since they were last seeded: the next run puts them back first,
	// so that a lesson shows what it says.
	rowsChanged atomic.Bool
}

// activeRun is a scenario run in progress (queued or playing).
type activeRun struct {
	scenario, variant string
	cancel            context.CancelFunc
	done              chan struct{}
	pace              *engine.Pace
	err               error
	params            engine.Params
	started           time.Time
	rec               *recorder
	live              bool // asked to play live even if it could be replayed

	mu       sync.Mutex
	reset    bool        // cancelled by a reset or the lab's close
	closing  bool        // cancelled by the lab's close
	env      *engine.Env // once admitted: what a look at a paused run's connections borrows
	replayed bool        // ran at full speed and is shown at its pace
}

// isReplayed reports whether the run ran at full speed and is shown at its
// pace from the states it produced.
func (r *activeRun) isReplayed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.replayed
}

// environment returns the run's environment once it is admitted, or nil.
func (r *activeRun) environment() *engine.Env {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.env
}

func newLab(s *labServer, sb engine.Sandbox, owner string) *Lab {
	now := time.Now()
	return &Lab{ID: sb.Lab, Sandbox: sb, owner: owner, created: now, lastActive: now, mgr: s.m, srv: s,
		tracker: engine.NewTracker(sb.Lab, sb.Tenants), done: make(chan struct{}), proxyPass: randomHex(16)}
}

// Owner returns the secret of the browser that owns the lab (it identifies
// the learner).
func (l *Lab) Owner() string { return l.owner }

// IsOwner reports whether token is the secret of the browser that created
// the lab.
func (l *Lab) IsOwner(token string) bool { return token != "" && equalToken(token, l.owner) }

// Touch records activity of the lab's owner (or a facilitator): it keeps
// the lab from expiring. Watching does not.
func (l *Lab) Touch() {
	l.mu.Lock()
	l.lastActive = time.Now()
	l.mu.Unlock()
}

// Done is closed when the lab closes.
func (l *Lab) Done() <-chan struct{} { return l.done }

// Created returns when the lab was made.
func (l *Lab) Created() time.Time { return l.created }

// IdleFor returns how long the owner has been away.
func (l *Lab) IdleFor() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Since(l.lastActive)
}

// expiresAt returns when the lab expires unless its owner comes back: the
// TTL after their last activity (a paused, stepped or queued run does not
// count), and never later than maxLife after it was made.
func (l *Lab) expiresAt(ttl, maxLife time.Duration) time.Time {
	l.mu.Lock()
	at := l.lastActive.Add(ttl)
	l.mu.Unlock()
	if hard := l.created.Add(maxLife); hard.Before(at) {
		return hard
	}
	return at
}

// RunRequest is what to run in a lab.
type RunRequest struct {
	Scenario string
	Variant  string
	Speed    engine.Speed
	Params   map[string]string
	// Live plays the run live at its pace even when its scenario could be
	// run at full speed and shown at that pace (engine.PacingReplay): the
	// run then holds its connections for the whole paced run, as every
	// run did before replays (a benchmark compares the two).
	Live bool
}

// Start validates r and starts the run in the background: it waits in the
// admission queue (State says so) until its connections fit the budget, then
// plays. It fails with EINVALID on an unknown scenario, variant or
// parameter and with ECONFLICT while another run is going.
func (l *Lab) Start(r RunRequest) error {
	sc, err := l.mgr.cfg.Catalog.Lookup(r.Scenario)
	if err != nil {
		return err
	}
	if err := sc.CheckVariant(r.Variant); err != nil {
		return err
	}
	params, err := sc.ParseParams(r.Params)
	if err != nil {
		return err
	}
	if r.Speed.Factor == 0 && !r.Speed.Max && !r.Speed.Single {
		r.Speed.Factor = 1
	}
	// Not on a server that is down (see servers.go).
	if err := l.srv.answers(context.Background(), "start a run"); err != nil {
		return err
	}
	l.ctl.Lock()
	defer l.ctl.Unlock()
	l.closeFreePlay("a scenario run starts")
	l.mu.Lock()
	if prev := l.run; prev != nil && l.tracker.Finished() {
		// The last run is over and only closing its pools: wait for that
		// rather than refuse a learner who saw "done".
		l.mu.Unlock()
		select {
		case <-prev.done:
		case <-time.After(stopTimeout):
		}
		l.mu.Lock()
	}
	if l.closed {
		l.mu.Unlock()
		return rlslab.Errorf(rlslab.ENOTFOUND, "lab %s is closed", l.ID)
	}
	if l.run != nil {
		l.mu.Unlock()
		return rlslab.Errorf(rlslab.ECONFLICT, "a run is already going in lab %s; wait for it or reset the lab", l.ID)
	}
	if err := l.appBusyLocked("a scenario run starts"); err != nil {
		l.mu.Unlock()
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := &activeRun{scenario: sc.ID, variant: r.Variant, cancel: cancel, done: make(chan struct{}), pace: engine.NewPace(r.Speed), live: r.Live}
	l.run = run
	l.lastActive = time.Now()
	l.mu.Unlock()
	l.tracker.Begin(sc.ID, r.Variant, r.Speed.String())
	run.params, run.started, run.rec = params, time.Now(), record(l.tracker)
	go l.play(ctx, run, sc, params)
	return nil
}

// client is whom the admission queue counts the lab's runs for: the client
// address that made the lab outside a workshop (so that a script's many
// labs are one client and cannot hold back another learner), else the
// learner who owns it.
func (l *Lab) client() string {
	if l.addr != "" {
		return "address " + l.addr
	}
	return l.owner
}

// need is how many connections a run of variant is admitted for: what the
// variant declares (its pools, its crowd, PgBouncer's server connections,
// a superuser connection), or, for a variant that declares nothing, what
// the lab's app role may open plus one superuser connection.
func (l *Lab) need(sc *engine.Scenario, variant string, p engine.Params) int {
	if n := sc.Need(variant, p, l.Sandbox); n > 0 {
		return n
	}
	return l.Sandbox.ConnLimit + 1
}

// play admits the run, plays it, closes its pools and reports its end.
func (l *Lab) play(ctx context.Context, run *activeRun, sc *engine.Scenario, params engine.Params) {
	defer close(run.done)
	defer run.cancel()
	// The run's end is published last, after its connections are back in
	// the budget (the deferred release below runs first).
	var ended *RunRecord
	defer func() { l.mgr.publish(ended) }()
	log := l.mgr.log.With("lab", l.ID, "scenario", sc.ID, "variant", run.variant)
	// A crowd going on this server for another learner is followed, with no
	// connection and no place in the queue, and so is the same run of any
	// lesson when this one would wait for connections (shared.go).
	need := l.need(sc, run.variant, params)
	crowd, follow := l.shareCrowd(run, sc, params, need)
	if follow {
		err := l.follow(ctx, run, crowd, log)
		ended, run.err = l.endRun(run, err)
		return
	}
	if crowd != nil {
		defer l.srv.crowds.end(crowd)
	}
	var queued atomic.Bool // set by the admission queue's goroutines
	asked := time.Now()
	client := l.client()
	err := l.srv.admit.acquire(ctx, client, need, func(ahead int) {
		queued.Store(true)
		l.tracker.SetQueue(&engine.Queue{Need: need, Ahead: ahead})
	})
	if err != nil {
		if !run.isReset() {
			l.tracker.SetQueue(nil)
			l.tracker.Finish(err)
		}
		ended, run.err = l.endRun(run, err)
		return
	}
	released := false
	release := func() {
		if !released {
			released = true
			l.srv.admit.release(client, need)
		}
	}
	defer release()
	if queued.Load() {
		waited := time.Since(asked).Milliseconds()
		l.tracker.SetQueue(nil)
		l.tracker.Update(func(s *engine.State) { s.QueuedMS = waited })
	}
	if err := l.reseedIfChanged(ctx); err != nil {
		if !run.isReset() {
			l.tracker.Finish(err)
		}
		ended, run.err = l.endRun(run, err)
		return
	}
	if sc.Replayable(run.pace.Speed()) && !run.live {
		err = l.playReplayed(ctx, run, sc, params, need, release, crowd, log)
		ended, run.err = l.endRun(run, err)
		return
	}
	env := engine.NewEnv(l.Sandbox, params, l.tracker, run.pace, log)
	run.mu.Lock()
	run.env = env
	run.mu.Unlock()
	var capture *engine.Capture
	if crowd != nil {
		// Runs in other labs that would wait for connections follow this
		// one as it plays (shared.go).
		capture = engine.NewCapture(l.tracker)
		crowd.setCapture(capture)
	}
	start := time.Now()
	// The run's pools close as it ends (an idle lab holds no connection);
	// the last picture of its connections stays.
	err = engine.PlayAndClose(ctx, sc, run.variant, env)
	if capture != nil {
		crowd.finish(err, ctx.Err() != nil)
		capture.Finish()
	}
	// A closed connection's backend exits a moment later: the run's
	// connections go back to the budget only once the server has let them
	// go, so the budget holds on the server's own count.
	l.waitBackendsGone(backendsGoneTimeout)
	// The connections go back to the budget before anything is written to
	// rlslab's tables: a recording may take seconds to store.
	release()
	log.Info("run finished", "took", time.Since(start).Round(time.Millisecond), "connections", need, "err", err)
	ended, run.err = l.endRun(run, err)
}

// reseedIfChanged puts the lab's rows back as they were seeded when free
// play or an app may have changed them (a learner's DELETE would otherwise
// turn every later lesson's leak into "failed closed").
func (l *Lab) reseedIfChanged(ctx context.Context) error {
	if !l.rowsChanged.Swap(false) {
		return nil
	}
	if err := l.srv.reseed(ctx, l.ID); err != nil {
		l.rowsChanged.Store(true)
		return l.mgr.dbError("put back the lab's rows that free play or your app changed", err)
	}
	l.mgr.log.Info("lab rows put back before a run", "lab", l.ID)
	return nil
}

// playReplayed plays an admitted run of a scenario whose outcome does not
// depend on the pace: it runs at full speed on a tracker of its own, gives
// its connections back (release) as soon as its backends are gone, and
// meanwhile shows the states it produced on the lab's tracker at the run's
// pace, from the first one on, saying so ("Ran in 212 ms, shown at 1×").
// It returns once the last state is shown, with the run's error, or when
// the run is cancelled. When crowd is not nil, runs in other labs follow
// the states it produces (shared.go).
func (l *Lab) playReplayed(ctx context.Context, run *activeRun, sc *engine.Scenario, params engine.Params, need int, release func(), crowd *sharedCrowd, log *slog.Logger) error {
	run.mu.Lock()
	run.replayed = true
	run.mu.Unlock()
	own := engine.NewTracker(l.ID, l.Sandbox.Tenants)
	own.Begin(sc.ID, run.variant, engine.Speed{Max: true}.String())
	capture := engine.NewCapture(own)
	env := engine.NewEnv(l.Sandbox, params, own, engine.NewPace(engine.Speed{Max: true}), log)
	shown := make(chan error, 1)
	go func() { shown <- capture.Replay(ctx, l.tracker, run.pace) }()
	crowd.setCapture(capture)
	start := time.Now()
	err := engine.PlayAndClose(ctx, sc, run.variant, env)
	// The followers learn how it ended before they see its last state.
	crowd.finish(err, ctx.Err() != nil)
	capture.Finish()
	ran := time.Since(start)
	t0 := time.Now()
	l.waitBackendsGone(backendsGoneTimeout)
	gone := time.Since(t0)
	release()
	log.Info("run finished; shown at its pace", "took", ran.Round(time.Millisecond), "gone", gone.Round(time.Millisecond), "connections", need, "err", err, "capture", capture.String())
	if serr := <-shown; serr != nil {
		// Cancelled while it was shown: the lab shows that, as a live run
		// cancelled on a frame would.
		if !run.isReset() {
			l.tracker.Finish(errors.New("run cancelled"))
		}
		if err == nil {
			err = errors.New("run cancelled")
		}
	}
	return err
}

// endRun records how the run ended and frees the lab for the next one; it
// returns the record of the run for the subscribers, and the run's error.
func (l *Lab) endRun(run *activeRun, err error) (*RunRecord, error) {
	reset := run.isReset()
	l.mu.Lock()
	if l.run == run {
		l.run = nil
	}
	l.mu.Unlock()
	closing := run.isClosing()
	switch {
	case closing:
		err = errCancelledByClose
		if l.mgr.isClosed() {
			err = errCancelledByShutdown
		}
	case reset:
		err = errCancelledByReset
	case err != nil && errors.Is(err, context.Canceled):
		err = errors.New("run cancelled")
	case err != nil && isOutage(err) && l.srv.ping(context.Background()) != nil:
		// The driver's words name hosts, ports and socket paths: log them,
		// show the learner what happened in words.
		l.mgr.log.Warn("run ended by an outage", "lab", l.ID, "err", err)
		msg := "the database stopped answering during the run (" + ErrDatabaseDown + ")"
		l.tracker.Update(func(s *engine.State) {
			s.Error, s.Narration = msg, "The run failed: "+msg
		})
	}
	frames := run.rec.finish()
	// A follower's last state shares the crowd's slices (its recording's
	// frames do too): the record reads them, it copies none.
	final := l.tracker.View()
	switch {
	case closing:
		final.Status, final.Error = engine.StatusCancelled, err.Error()
		final.Narration = "The run was cancelled: " + err.Error() + "."
	case reset:
		final.Status, final.Error = engine.StatusFailed, err.Error()
	}
	return &RunRecord{Lab: l, Scenario: run.scenario, Variant: run.variant, Params: run.params, Started: run.started, Ended: time.Now(), Final: final, Frames: frames}, err
}

// publish tells every subscriber of r's end (nil: nothing to tell).
func (m *Manager) publish(r *RunRecord) {
	if r == nil {
		return
	}
	for _, s := range m.cfg.Subscribers {
		s.RunEnded(*r)
	}
}

// isReset reports whether a reset (or the lab's close) stopped the run.
func (r *activeRun) isReset() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reset
}

// isClosing reports whether the lab's close stopped the run.
func (r *activeRun) isClosing() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closing
}

// The ends of a run that rlslab stopped.
var (
	errCancelledByReset    = errors.New("cancelled by a reset")
	errCancelledByClose    = errors.New("the lab was closed")
	errCancelledByShutdown = errors.New("rlslab shut down")
)

// Wait waits for the current run (if any) to end and returns its error.
func (l *Lab) Wait(ctx context.Context) error {
	l.mu.Lock()
	run := l.run
	l.mu.Unlock()
	if run == nil {
		return nil
	}
	select {
	case <-run.done:
		return run.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Running reports whether a run is going (queued or playing).
func (l *Lab) Running() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.run != nil
}

// Pace returns the pace of the current run, or nil.
func (l *Lab) Pace() *engine.Pace {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.run == nil {
		return nil
	}
	return l.run.pace
}

// SetSpeed changes the pace of the current run; ECONFLICT when nothing
// runs.
func (l *Lab) SetSpeed(s engine.Speed) error {
	p := l.Pace()
	if p == nil {
		return rlslab.Errorf(rlslab.ECONFLICT, "no run is going in lab %s", l.ID)
	}
	p.Set(s)
	l.tracker.SetSpeed(s.String())
	return nil
}

// Step lets the current run go one frame further in single-step mode.
func (l *Lab) Step() error {
	p := l.Pace()
	if p == nil {
		return rlslab.Errorf(rlslab.ECONFLICT, "no run is going in lab %s", l.ID)
	}
	p.Step()
	return nil
}

// Reset cancels a run in progress (waiting for it to give its connections
// back), puts the seed data back, ends any leftover backends of the app
// role and clears the live state. A cancelled run is reported as cancelled
// by the reset. When the database does not answer it fails with
// EUNAVAILABLE within about a second (see guard).
func (l *Lab) Reset(ctx context.Context) error {
	return guard{p: l.srv.prober, log: l.mgr.log}.do(ctx, "reset lab", l.reset)
}

// reset is Reset without the guard.
func (l *Lab) reset(ctx context.Context) error {
	l.ctl.Lock()
	defer l.ctl.Unlock()
	cancelled, err := l.stopRun(false)
	if err != nil {
		return err
	}
	l.closeFreePlay("the lab is reset")
	ctx, cancel := context.WithTimeout(ctx, 2*dbTimeout)
	defer cancel()
	if err := l.srv.reseed(ctx, l.ID); err != nil {
		return l.mgr.dbError("reset lab", err)
	}
	l.rowsChanged.Store(false)
	l.Touch()
	l.endAppSession("the lab was reset")
	l.tracker.Clear()
	if cancelled != nil {
		l.tracker.Narrate(fmt.Sprintf("The run of %s (%s) was cancelled by a reset.", cancelled.scenario, cancelled.variant))
	}
	return nil
}

// stopRun cancels the current run and waits (at most stopTimeout) until it
// has returned and closed its pools; it returns the run it stopped. The run
// closes its own environment, so nothing is closed while still in use.
// Callers hold l.ctl; closing says the lab's close stops it.
func (l *Lab) stopRun(closing bool) (*activeRun, error) {
	l.mu.Lock()
	run := l.run
	l.mu.Unlock()
	if run == nil {
		return nil, nil
	}
	run.mu.Lock()
	run.reset, run.closing = true, closing
	run.mu.Unlock()
	run.pace.Stop()
	run.cancel()
	select {
	case <-run.done:
		return run, nil
	case <-time.After(stopTimeout):
		l.mgr.log.Error("run did not stop", "lab", l.ID, "scenario", run.scenario, "variant", run.variant)
		return run, rlslab.Errorf(rlslab.EUNAVAILABLE, "the run in lab %s did not stop within %s; try again", l.ID, stopTimeout)
	}
}

// State returns the lab's live state with fresh server-side counts (or an
// outage message when the database does not answer).
func (l *Lab) State(ctx context.Context) engine.State {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_ = l.refreshServer(ctx, 0)
	return l.tracker.Snapshot()
}

// Tracker returns the lab's live state holder.
func (l *Lab) Tracker() *engine.Tracker { return l.tracker }

// close stops everything the lab runs and drops its sandbox; a failed drop
// is retried by the reaper.
func (l *Lab) close(ctx context.Context) {
	if !l.shut() {
		return
	}
	if err := l.srv.dropSandbox(ctx, l.ID); err != nil {
		l.mgr.fails.Warn("drop lab; will retry", "lab", l.ID, "err", err)
		l.srv.retryDrop(l.ID)
	}
	l.mgr.forgetSem(l.ID)
	l.mgr.log.Info("lab closed", "lab", l.ID)
}

// shut marks the lab closed, stops its run (which is then reported as
// cancelled) and tells its watchers; it reports false when the lab was
// closed already. The sandbox is left for the caller to drop.
func (l *Lab) shut() bool {
	l.ctl.Lock()
	defer l.ctl.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.closed = true
	l.mu.Unlock()
	if _, err := l.stopRun(true); err != nil {
		l.mgr.log.Warn("close lab", "lab", l.ID, "err", err)
	}
	l.closeFreePlay("the lab closes")
	l.endAppSession("the lab closed")
	close(l.done)
	return true
}

// backendsGoneTimeout bounds how long a finished run waits for its
// backends to exit before it gives its connections back.
const backendsGoneTimeout = 2 * time.Second

// waitBackendsGone waits until pg_stat_activity shows no backend on the
// lab's database, or the timeout passes (the server gives no notice, so it
// asks again every few milliseconds).
func (l *Lab) waitBackendsGone(timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		// A fresh read, shared with every other lab that asks at once.
		n, _, err := l.srv.counts.get(ctx, l.Sandbox.Database, 0)
		if err == nil && n == 0 {
			return
		}
		// A read that failed (a loaded server answers late) is asked
		// again: giving the connections back on it would let the server
		// hold more backends than the budget.
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}
