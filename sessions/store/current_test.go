package store

import (
	"fmt"
	"testing"
	"time"

	"github.com/rlslab/rlslab"
)

func TestParticipantLessonSurvivesReopen(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	db := sharedDB(t)
	pool := newPool(t, db)
	s, err := Open(ctx, pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	w, _, err := s.CreateWorkshop(ctx, "Lessons kept", []string{"set-leak", "split-calls"})
	if err != nil {
		t.Fatal(err)
	}
	ann, _, err := s.Join(ctx, w.ID, "Ann")
	if err != nil {
		t.Fatal(err)
	}
	bob, _, err := s.Join(ctx, w.ID, "Bob")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.ParticipantLessons(ctx, w.ID); err != nil || len(got) != 0 {
		t.Fatalf("lessons before anyone was seen: %v, %v", got, err)
	}
	for _, slug := range []string{"set-leak", "split-calls", "split-calls"} {
		if err := s.SetParticipantLesson(ctx, ann.Learner, slug); err != nil {
			t.Fatalf("Ann on %s: %v", slug, err)
		}
	}
	// Bad input changes nothing.
	wantCode(t, s.SetParticipantLesson(ctx, ann.Learner, "Not A Slug"), rlslab.EINVALID)
	wantCode(t, s.SetParticipantLesson(ctx, ann.Learner, ""), rlslab.EINVALID)
	wantCode(t, s.SetParticipantLesson(ctx, "no-such-learner", "set-leak"), rlslab.ENOTFOUND)
	wantCode(t, s.SetParticipantLesson(ctx, "bad id!", "set-leak"), rlslab.ENOTFOUND)
	loner, _, err := s.CreateLearner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.SetParticipantLesson(ctx, loner.ID, "set-leak"), rlslab.ENOTFOUND)
	_, err = s.ParticipantLessons(ctx, "no-such-workshop")
	wantCode(t, err, rlslab.ENOTFOUND)

	// A restart: the store and its pool closed, then opened again.
	s.Close()
	wantCode(t, s.SetParticipantLesson(ctx, bob.Learner, "set-leak"), rlslab.EUNAVAILABLE)
	pool.Close()
	s2, err := Open(ctx, newPool(t, db), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s2.Close)
	got, err := s2.ParticipantLessons(ctx, w.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{ann.Learner: "split-calls"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("lessons after reopening: %v, want %v", got, want)
	}
}

func TestNewestRecording(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := newStore(t)
	learner, _, err := s.CreateLearner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lab, other := newLabID(), newLabID()
	base := time.Now().Add(-time.Hour)
	save := func(lab, variant string, at time.Duration, frames int, by string) string {
		t.Helper()
		r := testRecording(lab, base.Add(at), frames, 10)
		r.Variant, r.Learner = variant, by
		id, err := s.SaveRecording(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	save(lab, "session-set", 0, 3, "")
	newest := save(lab, "session-set", time.Minute, 3, "")
	save(lab, "session-set", 2*time.Minute, 0, "") // no frames: nothing to compare
	tx := save(other, "tx-local", 3*time.Minute, 3, learner.ID)

	got, err := s.NewestRecording(ctx, RecordingQuery{Lab: lab, Scenario: "set-leak", Variant: "session-set"})
	if err != nil || got.ID != newest || got.Variant != "session-set" {
		t.Fatalf("newest session-set of the lab: %+v, %v; want %s", got, err, newest)
	}
	// By learner: a recording made in another lab of theirs.
	got, err = s.NewestRecording(ctx, RecordingQuery{Lab: lab, Learner: learner.ID, Scenario: "set-leak", Variant: "tx-local"})
	if err != nil || got.ID != tx {
		t.Fatalf("newest tx-local of the learner: %+v, %v; want %s", got, err, tx)
	}
	_, err = s.NewestRecording(ctx, RecordingQuery{Lab: lab, Scenario: "set-leak", Variant: "tx-local"})
	wantCode(t, err, rlslab.ENOTFOUND)
	_, err = s.NewestRecording(ctx, RecordingQuery{Lab: lab, Scenario: "split-calls", Variant: "session-set"})
	wantCode(t, err, rlslab.ENOTFOUND)
	for _, q := range []RecordingQuery{
		{Scenario: "set-leak", Variant: "session-set"},
		{Lab: "bad lab!", Scenario: "set-leak", Variant: "session-set"},
		{Learner: "bad learner!", Scenario: "set-leak", Variant: "session-set"},
		{Lab: lab, Scenario: "Set Leak", Variant: "session-set"},
		{Lab: lab, Scenario: "set-leak", Variant: ""},
	} {
		_, err := s.NewestRecording(ctx, q)
		wantCode(t, err, rlslab.EINVALID)
	}
}
