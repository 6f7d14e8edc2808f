package store

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/rlslab/rlslab"
)

// Run is a finished run as a learner's progress counts it.
type Run struct {
	Lesson   string // slug of the lesson the run belongs to
	Scenario string // scenario id, e.g. "set-leak"
	Variant  string // variant name, e.g. "session-set"
	Status   string // the run's final status, e.g. "done" or "failed"
	Leaks    int    // requests that got another tenant's rows
	Errors   int    // requests that failed
	Fix      bool   // the variant is the lesson's fix (the right way)
	Outcome  string // what the run showed (engine.Judge's kind), "" when unknown
}

// Prediction is a learner's answer to a lesson's prediction question about
// one variant, checked against what the run showed.
type Prediction struct {
	Variant string `json:"variant"`
	Choice  string `json:"choice"`
	Correct bool   `json:"correct"`
	// Actual is the text of the choice the run showed; Evidence is what the
	// run's request log said, in words and numbers. Both are optional and
	// are not part of GET /progress.json.
	Actual   string `json:"-"`
	Evidence string `json:"-"`
}

// Progress is a learner's progress, in the shape of GET /progress.json.
type Progress struct {
	Lessons []LessonProgress `json:"lessons"`
}

// LessonProgress is a learner's progress in one lesson. A leak is seen
// when a run of the lesson had at least one leak; the fix is run when a run
// of a fix variant finished without a leak.
type LessonProgress struct {
	Slug        string       `json:"slug"`
	VariantsRun []string     `json:"variants_run"` // in the order first run
	LeakSeen    bool         `json:"leak_seen"`
	FixRun      bool         `json:"fix_run"`
	Predictions []Prediction `json:"predictions"` // in the order answered
}

// checkRun checks a Run's fields.
func checkRun(r Run) error {
	if err := checkSlug("lesson", r.Lesson); err != nil {
		return err
	}
	if err := checkSlug("scenario", r.Scenario); err != nil {
		return err
	}
	if err := checkSlug("variant", r.Variant); err != nil {
		return err
	}
	if err := checkSlug("status", r.Status); err != nil {
		return err
	}
	if r.Outcome != "" {
		if err := checkSlug("outcome", r.Outcome); err != nil {
			return err
		}
	}
	if r.Leaks < 0 || r.Errors < 0 {
		return rlslab.Errorf(rlslab.EINVALID, "negative counts (leaks %d, errors %d)", r.Leaks, r.Errors)
	}
	return nil
}

// RecordRun adds a finished run to the learner's progress in its lesson and
// makes it the learner's last run. It fails with ENOTFOUND for an unknown
// learner and EINVALID for a bad Run.
func (s *Store) RecordRun(ctx context.Context, learnerID string, r Run) error {
	if err := s.ready(); err != nil {
		return err
	}
	if err := checkRun(r); err != nil {
		return err
	}
	if !plausibleID(learnerID) {
		return rlslab.Errorf(rlslab.ENOTFOUND, "unknown learner")
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
UPDATE rlslab.learners SET last_run_lesson = $2, last_run_scenario = $3, last_run_variant = $4,
	last_run_status = $5, last_run_leaks = $6, last_run_at = now(), last_run_outcome = $7
WHERE id = $1`, learnerID, r.Lesson, r.Scenario, r.Variant, r.Status, r.Leaks, r.Outcome)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return rlslab.Errorf(rlslab.ENOTFOUND, "unknown learner")
		}
		_, err = tx.Exec(ctx, `
INSERT INTO rlslab.progress AS p (learner_id, lesson, variants_run, leak_seen, fix_run)
VALUES ($1, $2, ARRAY[$3::text], $4, $5)
ON CONFLICT (learner_id, lesson) DO UPDATE SET
	variants_run = CASE WHEN $3::text = ANY (p.variants_run) THEN p.variants_run ELSE p.variants_run || $3::text END,
	leak_seen = p.leak_seen OR EXCLUDED.leak_seen,
	fix_run = p.fix_run OR EXCLUDED.fix_run,
	updated_at = now()`, learnerID, r.Lesson, r.Variant, r.Leaks > 0, r.Fix && r.Leaks == 0)
		return err
	})
	return wrap("recording a run", err)
}

// ensureProgress adds the learner's progress row for lesson in tx unless
// it is there: a prediction, pending or checked, belongs to one. It fails
// with ENOTFOUND for an unknown learner.
func ensureProgress(ctx context.Context, tx pgx.Tx, learnerID, lesson string) error {
	_, err := tx.Exec(ctx, `
INSERT INTO rlslab.progress (learner_id, lesson) VALUES ($1, $2)
ON CONFLICT (learner_id, lesson) DO NOTHING`, learnerID, lesson)
	if sqlState(err) == foreignKeyViolation {
		return rlslab.Errorf(rlslab.ENOTFOUND, "unknown learner")
	}
	return err
}

// RecordPrediction stores the learner's checked prediction about a variant
// of a lesson, replacing an earlier one and the pending choice about that
// variant. It fails
// with ENOTFOUND for an unknown learner and EINVALID for bad input.
func (s *Store) RecordPrediction(ctx context.Context, learnerID, lesson string, p Prediction) error {
	if err := s.ready(); err != nil {
		return err
	}
	if err := checkSlug("lesson", lesson); err != nil {
		return err
	}
	if err := checkSlug("variant", p.Variant); err != nil {
		return err
	}
	choice, err := cleanText("choice", p.Choice, MaxChoiceLen)
	if err != nil {
		return err
	}
	if p.Actual != "" {
		if p.Actual, err = cleanText("actual choice", p.Actual, MaxChoiceLen); err != nil {
			return err
		}
	}
	if p.Evidence != "" {
		if p.Evidence, err = cleanText("evidence", p.Evidence, MaxEvidenceLen); err != nil {
			return err
		}
	}
	if !plausibleID(learnerID) {
		return rlslab.Errorf(rlslab.ENOTFOUND, "unknown learner")
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := ensureProgress(ctx, tx, learnerID, lesson); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `
INSERT INTO rlslab.predictions (learner_id, lesson, variant, choice, correct, actual, evidence) VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (learner_id, lesson, variant) DO UPDATE SET
	choice = EXCLUDED.choice, correct = EXCLUDED.correct, actual = EXCLUDED.actual, evidence = EXCLUDED.evidence, answered_at = now()`,
			learnerID, lesson, p.Variant, choice, p.Correct, p.Actual, p.Evidence)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "DELETE FROM rlslab.pending_predictions WHERE learner_id = $1 AND lesson = $2 AND variant = $3",
			learnerID, lesson, p.Variant)
		return err
	})
	return wrap("recording a prediction", err)
}

// Progress returns the learner's progress, lessons ordered by slug. A
// learner who has done nothing yet has no lessons; an unknown learner is
// ENOTFOUND.
func (s *Store) Progress(ctx context.Context, learnerID string) (Progress, error) {
	if err := s.ready(); err != nil {
		return Progress{}, err
	}
	if err := learnerExists(ctx, s.pool, learnerID); err != nil {
		return Progress{}, err
	}
	all, err := s.progressWhere(ctx, "p.learner_id = $1", learnerID)
	if err != nil {
		return Progress{}, err
	}
	p := all[learnerID]
	if p.Lessons == nil {
		p.Lessons = []LessonProgress{}
	}
	return p, nil
}

// WorkshopProgress returns the progress of each participant of the
// workshop, keyed by learner id (participants who have done nothing yet
// have no lessons), or ENOTFOUND for an unknown workshop.
func (s *Store) WorkshopProgress(ctx context.Context, workshopID string) (map[string]Progress, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if _, err := s.Workshop(ctx, workshopID); err != nil {
		return nil, err
	}
	all, err := s.progressWhere(ctx,
		"p.learner_id IN (SELECT learner_id FROM rlslab.participants WHERE workshop_id = $1)", workshopID)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, "SELECT learner_id FROM rlslab.participants WHERE workshop_id = $1", workshopID)
	if err != nil {
		return nil, wrap("listing participants", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, wrap("listing participants", err)
	}
	for _, id := range ids {
		if _, ok := all[id]; !ok {
			all[id] = Progress{Lessons: []LessonProgress{}}
		}
	}
	return all, nil
}

// progressWhere reads the progress rows that match where (a condition on
// progress p with one parameter, arg), grouped by learner.
func (s *Store) progressWhere(ctx context.Context, where string, arg any) (map[string]Progress, error) {
	rows, err := s.pool.Query(ctx, `
SELECT p.learner_id, p.lesson, p.variants_run, p.leak_seen, p.fix_run, q.variant, q.choice, q.correct, q.actual, q.evidence
FROM rlslab.progress p
LEFT JOIN rlslab.predictions q USING (learner_id, lesson)
WHERE `+where+`
ORDER BY p.learner_id, p.lesson, q.answered_at, q.variant`, arg)
	if err != nil {
		return nil, wrap("reading progress", err)
	}
	defer rows.Close()
	out := map[string]Progress{}
	for rows.Next() {
		var (
			learner string
			l       LessonProgress
			variant *string
			choice  *string
			correct *bool
			actual  *string
			proof   *string
		)
		if err := rows.Scan(&learner, &l.Slug, &l.VariantsRun, &l.LeakSeen, &l.FixRun, &variant, &choice, &correct, &actual, &proof); err != nil {
			return nil, wrap("reading progress", err)
		}
		p := out[learner]
		if n := len(p.Lessons); n == 0 || p.Lessons[n-1].Slug != l.Slug {
			if l.VariantsRun == nil {
				l.VariantsRun = []string{}
			}
			l.Predictions = []Prediction{}
			p.Lessons = append(p.Lessons, l)
		}
		if variant != nil {
			last := &p.Lessons[len(p.Lessons)-1]
			last.Predictions = append(last.Predictions, Prediction{Variant: *variant, Choice: *choice, Correct: *correct, Actual: *actual, Evidence: *proof})
		}
		out[learner] = p
	}
	return out, wrap("reading progress", rows.Err())
}
