package sessions

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Lab is one learner's isolated workspace: a sandbox database with its own
// roles and data, at most one scenario run at a time, and any number of
// watching browsers.
type Lab struct {
	ID      string
	Sandbox engine.Sandbox

	owner   string
	created time.Time
	mgr     *Manager
	tracker *engine.Tracker
	hub     *hub

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	run        *activeRun
	env        *engine.Env // the last run's pools, open until the next run or a reset
	lastActive time.Time
	closed     bool
}

// activeRun is a scenario run in progress.
type activeRun struct {
	cancel context.CancelFunc
	done   chan struct{}
	pace   *engine.Pace
	err    error
}

func newLab(m *Manager, id, owner string, sb engine.Sandbox) *Lab {
	now := time.Now()
	l := &Lab{ID: id, Sandbox: sb, owner: owner, created: now, lastActive: now, mgr: m, tracker: engine.NewTracker(id)}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.hub = newHub(l)
	l.wg.Add(1)
	go func() { defer l.wg.Done(); l.hub.run(l.ctx) }()
	return l
}

// IsOwner reports whether token is the secret of the browser that created
// the lab.
func (l *Lab) IsOwner(token string) bool { return token != "" && equalToken(token, l.owner) }

// Touch marks the lab as in use now.
func (l *Lab) Touch() {
	l.mu.Lock()
	l.lastActive = time.Now()
	l.mu.Unlock()
}

// idleFor returns how long nobody has used or watched the lab.
func (l *Lab) idleFor() time.Duration {
	if l.hub.watchers() > 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.run != nil {
		return 0
	}
	return time.Since(l.lastActive)
}

// RunRequest is what to run in a lab.
type RunRequest struct {
	Scenario string
	Variant  string
	Speed    engine.Speed
	Params   map[string]string
}

// Start validates r and starts the run in the background. It fails with
// EINVALID on an unknown scenario, variant or parameter and with ECONFLICT
// while another run is going.
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
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return rlslab.Errorf(rlslab.ENOTFOUND, "lab %s is closed", l.ID)
	}
	if l.run != nil {
		return rlslab.Errorf(rlslab.ECONFLICT, "a run is already going in lab %s; wait for it or reset the lab", l.ID)
	}
	l.lastActive = time.Now()
	if l.env != nil {
		l.env.Close()
		l.env = nil
	}
	ctx, cancel := context.WithCancel(l.ctx)
	pace := engine.NewPace(r.Speed)
	env := engine.NewEnv(l.Sandbox, params, l.tracker, pace, l.mgr.log.With("lab", l.ID, "scenario", sc.ID, "variant", r.Variant))
	run := &activeRun{cancel: cancel, done: make(chan struct{}), pace: pace}
	l.run, l.env = run, env
	l.tracker.Begin(sc.ID, r.Variant, r.Speed.String())
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer close(run.done)
		defer cancel()
		start := time.Now()
		run.err = engine.Play(ctx, sc, r.Variant, env)
		l.mgr.log.Info("run finished", "lab", l.ID, "scenario", sc.ID, "variant", r.Variant, "took", time.Since(start).Round(time.Millisecond), "err", run.err)
		l.mu.Lock()
		if l.run == run {
			l.run = nil
		}
		l.lastActive = time.Now()
		l.mu.Unlock()
	}()
	return nil
}

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

// SetSpeed changes the pace of the current run; ECONFLICT when nothing
// runs.
func (l *Lab) SetSpeed(s engine.Speed) error {
	l.mu.Lock()
	run := l.run
	l.mu.Unlock()
	if run == nil {
		return rlslab.Errorf(rlslab.ECONFLICT, "no run is going in lab %s", l.ID)
	}
	run.pace.Set(s)
	l.tracker.SetSpeed(s.String())
	return nil
}

// Step lets the current run go one frame further in single-step mode.
func (l *Lab) Step() error {
	l.mu.Lock()
	run := l.run
	l.mu.Unlock()
	if run == nil {
		return rlslab.Errorf(rlslab.ECONFLICT, "no run is going in lab %s", l.ID)
	}
	run.pace.Step()
	return nil
}

// Reset cancels a run in progress, closes the last run's pools, puts the
// seed data back, ends any leftover backends of the app role and clears the
// live state.
func (l *Lab) Reset(ctx context.Context) error {
	l.stopRun(ctx)
	if err := l.mgr.reseed(ctx, l.ID); err != nil {
		return err
	}
	l.Touch()
	l.tracker.Clear()
	return nil
}

// stopRun cancels the run (waiting for it) and closes the pools it left.
func (l *Lab) stopRun(ctx context.Context) {
	l.mu.Lock()
	run, env := l.run, l.env
	l.env = nil
	l.mu.Unlock()
	if run != nil {
		run.cancel()
		select {
		case <-run.done:
		case <-ctx.Done():
		}
	}
	if env != nil {
		env.Close()
	}
}

// State returns the lab's live state with fresh server-side counts.
func (l *Lab) State(ctx context.Context) (engine.State, error) {
	if err := l.refreshServer(ctx); err != nil {
		return engine.State{}, err
	}
	return l.tracker.Snapshot(), nil
}

// Tracker returns the lab's live state holder.
func (l *Lab) Tracker() *engine.Tracker { return l.tracker }

// Watch subscribes to the lab's frames; the first frame is the full current
// state. Close the watcher when done.
func (l *Lab) Watch() *Watcher {
	l.Touch()
	return l.hub.subscribe()
}

// refreshServer reads the lab's server-side counts from pg_stat_activity.
func (l *Lab) refreshServer(ctx context.Context) error {
	var c engine.ServerCounts
	err := l.mgr.admin.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'),
		coalesce((SELECT rolconnlimit FROM pg_roles WHERE rolname = $2), -1),
		current_setting('max_connections')::int`, l.Sandbox.Database, l.Sandbox.AppRole).
		Scan(&c.Backends, &c.RoleConnectionLimit, &c.MaxConnections)
	if err != nil {
		return fmt.Errorf("lab %s: server counts: %w", l.ID, err)
	}
	if l.tracker.Snapshot().Server != c {
		l.tracker.SetServer(c)
	}
	return nil
}

// close stops everything the lab runs and drops its sandbox.
func (l *Lab) close(ctx context.Context) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	l.stopRun(ctx)
	l.cancel()
	l.wg.Wait()
	l.hub.closeAll()
	l.mgr.dropSandbox(ctx, l.ID)
	l.mgr.forgetSem(l.ID)
	l.mgr.log.Info("lab closed", "lab", l.ID)
}
