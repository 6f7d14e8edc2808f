package scenarios_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// directRun is a run played straight through engine.Play on a lab's
// sandbox, outside the lab manager: nothing resets, re-seeds or terminates
// anything after it, so a test sees exactly what the scenario itself left.
type directRun struct {
	tr     *engine.Tracker
	pace   *engine.Pace
	env    *engine.Env
	cancel context.CancelFunc
	done   chan error
	err    error
	ended  bool
}

// startDirect starts scenario/variant on lab's sandbox at speed.
func startDirect(t *testing.T, lab *sessions.Lab, scenario, variant string, params map[string]string, speed engine.Speed) *directRun {
	t.Helper()
	sc, err := scenarios.DefaultCatalog().Lookup(scenario)
	if err != nil {
		t.Fatal(err)
	}
	p, err := sc.ParseParams(params)
	if err != nil {
		t.Fatal(err)
	}
	d := &directRun{tr: engine.NewTracker(lab.ID, lab.Sandbox.Tenants), pace: engine.NewPace(speed), done: make(chan error, 1)}
	d.env = engine.NewEnv(lab.Sandbox, p, d.tr, d.pace, nil)
	d.tr.Begin(scenario, variant, speed.String())
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { d.done <- engine.Play(ctx, sc, variant, d.env) }()
	t.Cleanup(func() { d.stop(t) })
	return d
}

// stepTo lets the single-step run go one frame at a time until stop holds
// for the frame it is held on, and returns that frame's state; ok is false
// when the run ended first. It follows the tracker's changes and the frame
// count, so it stops on the same phase every time.
func (d *directRun) stepTo(t *testing.T, stop func(frame int, st engine.State) bool) (st engine.State, ok bool) {
	t.Helper()
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	seen := 0
	for {
		if f := d.tr.Frame(); f > seen {
			// Frame f's state and number change in one update just before
			// the run waits on it: the run is held on f until the Step.
			seen = f
			if st := d.tr.Snapshot(); stop(f, st) {
				return st, true
			}
			d.pace.Step()
			continue
		}
		select {
		case <-d.tr.Changed():
		case d.err = <-d.done:
			d.ended = true
			return d.tr.Snapshot(), false
		case <-timeout.C:
			t.Fatalf("no frame after frame %d within 30 s (state %+v)", seen, d.tr.Snapshot())
		}
	}
}

// wait waits for the run to end (at most 2 minutes) and returns its error.
func (d *directRun) wait(t *testing.T) error {
	t.Helper()
	if !d.ended {
		select {
		case d.err = <-d.done:
			d.ended = true
		case <-time.After(2 * time.Minute):
			t.Fatal("the run did not end within 2 minutes")
		}
	}
	return d.err
}

// stop cancels the run, waits until Play has returned and closes the run's
// environment: what a lab does to a run it stops, without the re-seed.
func (d *directRun) stop(t *testing.T) error {
	t.Helper()
	d.cancel()
	err := d.wait(t)
	d.env.Close()
	return err
}

// countFrames plays scenario/variant in single-step mode to its end and
// returns how many frames it showed.
func countFrames(t *testing.T, lab *sessions.Lab, scenario, variant string, params map[string]string) int {
	t.Helper()
	d := startDirect(t, lab, scenario, variant, params, engine.Speed{Single: true})
	if st, held := d.stepTo(t, func(int, engine.State) bool { return false }); held || d.err != nil {
		t.Fatalf("%s/%s in single steps: %v (status %s)", scenario, variant, d.err, st.Status)
	}
	d.env.Close()
	return d.tr.Frame()
}

// cancelAt plays scenario/variant in single steps until stop holds on a
// frame, cancels the run there (without any re-seed), and checks what the
// scenario itself left: no connection shown, no backend in the lab's
// database, and nothing labLeftovers finds. It returns the state of the
// frame the run was cancelled on.
func cancelAt(t *testing.T, m *sessions.Manager, lab *sessions.Lab, scenario, variant string, params map[string]string, stop func(frame int, st engine.State) bool) engine.State {
	t.Helper()
	d := startDirect(t, lab, scenario, variant, params, engine.Speed{Single: true})
	st, ok := d.stepTo(t, stop)
	if !ok {
		t.Fatalf("%s/%s ended (%v) before the phase to cancel at", scenario, variant, d.err)
	}
	d.stop(t)
	if after := d.tr.Snapshot(); len(after.Connections) != 0 || after.Status != engine.StatusFailed {
		t.Errorf("%s/%s cancelled at frame %d: status %q, connections still shown %+v", scenario, variant, d.tr.Frame(), after.Status, after.Connections)
	}
	sessionstest.WaitNoBackends(t, m, lab)
	if left := labLeftovers(t, m, lab); len(left) > 0 {
		t.Errorf("%s/%s cancelled at frame %d (%q) left: %v", scenario, variant, d.tr.Frame(), st.Narration, left)
	}
	return st
}

// narrationStarts stops on the first frame whose narration starts with
// prefix.
func narrationStarts(prefix string) func(int, engine.State) bool {
	return func(_ int, st engine.State) bool { return strings.HasPrefix(st.Narration, prefix) }
}

// atFrame stops on frame n.
func atFrame(n int) func(int, engine.State) bool {
	return func(f int, _ engine.State) bool { return f == n }
}

// leftoverObjects counts the views, functions and tables of the lab's
// public schema beyond the sandbox's own two tables.
func leftoverObjects(t *testing.T, lab *sessions.Lab) int {
	t.Helper()
	ctx := context.Background()
	conn, release, err := lab.Sandbox.Admin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	var n int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm') AND c.relname NOT IN ('tenants', 'invoices'))
		+ (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public')`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
