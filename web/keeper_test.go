package web_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/store"
)

// testKeeper records every finished run of a test server, as the rlslab
// command does: the recording, and the run in its learner's progress. It
// saves on the run's goroutine, so a run's recording is there once the lab
// takes the next run (lab.Wait).
type testKeeper struct {
	tb      testing.TB
	lessons *lessons.Set
	// pgVersion is the server's version, set before the first run.
	pgVersion string
	st        atomic.Pointer[store.Store]
}

// keep saves r.
func (k *testKeeper) keep(r sessions.RunRecord) {
	st := k.st.Load()
	if st == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	learner := ""
	if l, err := st.LearnerByToken(ctx, r.Lab.Owner()); err == nil {
		learner = l.ID
	}
	out := engine.OutcomeOf(r.Final)
	outcome, _ := json.Marshal(out)
	params, _ := json.Marshal(r.Params)
	frames := make([]store.Frame, len(r.Frames))
	for i, f := range r.Frames {
		frames[i] = store.Frame{AtMs: f.AtMS, State: f.State}
	}
	if _, err := st.SaveRecording(ctx, store.Recording{Lab: r.Lab.ID, Learner: learner, Scenario: r.Scenario, Variant: r.Variant,
		Params: params, Status: r.Final.Status, Error: r.Final.Error, Leaks: out.Leaks, Errors: out.Errors, Outcome: outcome,
		PostgresVersion: k.pgVersion, StartedAt: r.Started, FinishedAt: time.Now(), Frames: frames}); err != nil {
		k.tb.Logf("recording not saved: %v", err)
		return
	}
	if learner == "" {
		return
	}
	slug := r.Scenario
	if l := k.lessons.ForScenario(r.Scenario); l != nil {
		slug = l.Slug
	}
	// A fix is a run without a leak of a variant other than the lesson's
	// first (wrong) one: enough for these tests.
	fix := out.Leaks == 0 && r.Final.Status == engine.StatusDone && r.Variant != engine.PatternSessionSet
	if err := st.RecordRun(ctx, learner, store.Run{Lesson: slug, Scenario: r.Scenario, Variant: r.Variant,
		Status: r.Final.Status, Leaks: out.Leaks, Errors: out.Errors, Fix: fix}); err != nil {
		k.tb.Logf("progress not saved: %v", err)
	}
}
