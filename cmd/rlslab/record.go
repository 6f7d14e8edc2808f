package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/store"
)

// runKeeper stores every finished run: its recording, and the learner's
// progress. Saving happens off the run's goroutine; Close waits for what is
// being saved.
type runKeeper struct {
	st        *store.Store
	lessons   *lessons.Set
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

// save writes the recording and the progress of one run.
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
	if learner == "" {
		return nil
	}
	lesson, fix := k.lessonOf(r.Scenario, r.Variant)
	return k.st.RecordRun(ctx, learner, store.Run{Lesson: lesson, Scenario: r.Scenario, Variant: r.Variant,
		Status: r.Final.Status, Leaks: out.Leaks, Errors: out.Errors, Fix: fix})
}

// lessonOf returns the slug of the lesson that runs scenario, and whether
// variant is one of its fixes: a variant its lesson expects to show no leak.
func (k *runKeeper) lessonOf(scenario, variant string) (slug string, fix bool) {
	for _, l := range k.lessons.All() {
		if l.Scenario != scenario {
			continue
		}
		for _, e := range l.ExpectationsFor(variant) {
			if strings.Contains(e.When.String(), "leaks == 0") {
				fix = true
			}
		}
		return l.Slug, fix
	}
	return scenario, false
}
