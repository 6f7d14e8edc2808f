package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/store"
)

// runKeeper stores every finished run's recording (the learner's progress
// is counted by the web server's RunEnded). Saving happens off the run's goroutine; Close waits for what is
// being saved.
type runKeeper struct {
	st        *store.Store
	pgVersion string
	log       *slog.Logger
	wg        sync.WaitGroup
}

// keep saves r in the background.
func (k *runKeeper) keep(r sessions.RunRecord) {
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := k.save(ctx, r); err != nil {
			k.log.Warn("recording not saved", "lab", r.Lab.ID, "scenario", r.Scenario, "variant", r.Variant, "err", err)
		}
	}()
}

// Close waits until every run handed over is saved.
func (k *runKeeper) Close() { k.wg.Wait() }

// save writes the recording of one run.
func (k *runKeeper) save(ctx context.Context, r sessions.RunRecord) error {
	learner := ""
	if l, err := k.st.LearnerByToken(ctx, r.Lab.Owner()); err == nil {
		learner = l.ID
	}
	params, _ := json.Marshal(r.Params)
	out := engine.OutcomeOf(r.Final)
	outcome, _ := json.Marshal(out)
	frames := make([]store.Frame, len(r.Frames))
	for i, f := range r.Frames {
		frames[i] = store.Frame{AtMs: f.AtMS, State: f.State}
	}
	bouncer := ""
	if r.Final.Pairing != nil {
		bouncer = r.Final.Pairing.Version
	}
	id, err := k.st.SaveRecording(ctx, store.Recording{
		Lab: r.Lab.ID, Learner: learner, Scenario: r.Scenario, Variant: r.Variant, Params: params,
		Status: r.Final.Status, Error: r.Final.Error, Leaks: out.Leaks, Errors: out.Errors, Outcome: outcome,
		PostgresVersion: k.pgVersion, BouncerVersion: bouncer, StartedAt: r.Started, FinishedAt: time.Now(), Frames: frames,
	})
	if err != nil {
		return err
	}
	k.log.Info("run recorded", "lab", r.Lab.ID, "recording", id, "frames", len(frames))
	return nil
}
