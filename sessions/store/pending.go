package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rlslab/rlslab"
)

// maxChoices bounds a pending choice's index (lessons have 2 to 4 choices).
const maxChoices = 16

// Pending is a learner's answer to a prediction question that no run has
// checked yet: the index and text of the choice, and when it was made. Only
// a run that starts after ChosenAt checks it.
type Pending struct {
	Variant  string
	Choice   int
	Text     string
	ChosenAt time.Time
}

// SetPending keeps the learner's choice about a variant of a lesson until a
// run checks it; a later choice about the same variant replaces it. It
// fails with ECONFLICT when the learner's prediction about that variant was
// already checked, ENOTFOUND for an unknown learner and EINVALID for bad
// input.
func (s *Store) SetPending(ctx context.Context, learnerID, lesson string, p Pending) error {
	if err := s.ready(); err != nil {
		return err
	}
	if err := checkSlug("lesson", lesson); err != nil {
		return err
	}
	if err := checkSlug("variant", p.Variant); err != nil {
		return err
	}
	if p.Choice < 0 || p.Choice >= maxChoices {
		return rlslab.Errorf(rlslab.EINVALID, "choice %d out of range", p.Choice)
	}
	text, err := cleanText("choice", p.Text, MaxChoiceLen)
	if err != nil {
		return err
	}
	if p.ChosenAt.IsZero() {
		return rlslab.Errorf(rlslab.EINVALID, "a pending choice needs its time")
	}
	if !plausibleID(learnerID) {
		return rlslab.Errorf(rlslab.ENOTFOUND, "unknown learner")
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := ensureProgress(ctx, tx, learnerID, lesson); err != nil {
			return err
		}
		var checked bool
		if err := tx.QueryRow(ctx, `
SELECT EXISTS (SELECT 1 FROM rlslab.predictions WHERE learner_id = $1 AND lesson = $2 AND variant = $3)`,
			learnerID, lesson, p.Variant).Scan(&checked); err != nil {
			return err
		}
		if checked {
			return rlslab.Errorf(rlslab.ECONFLICT, "your prediction about %s was already checked by a run", p.Variant)
		}
		_, err = tx.Exec(ctx, `
INSERT INTO rlslab.pending_predictions (learner_id, lesson, variant, choice, choice_text, chosen_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (learner_id, lesson, variant) DO UPDATE SET
	choice = EXCLUDED.choice, choice_text = EXCLUDED.choice_text, chosen_at = EXCLUDED.chosen_at`,
			learnerID, lesson, p.Variant, p.Choice, text, p.ChosenAt)
		return err
	})
	return wrap("keeping a pending prediction", err)
}

// PendingFor returns the learner's unchecked choices in a lesson, by
// variant. An unknown learner has none.
func (s *Store) PendingFor(ctx context.Context, learnerID, lesson string) (map[string]Pending, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	out := map[string]Pending{}
	if !plausibleID(learnerID) || checkSlug("lesson", lesson) != nil {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, `
SELECT variant, choice, choice_text, chosen_at FROM rlslab.pending_predictions
WHERE learner_id = $1 AND lesson = $2`, learnerID, lesson)
	if err != nil {
		return nil, wrap("reading pending predictions", err)
	}
	defer rows.Close()
	for rows.Next() {
		var p Pending
		if err := rows.Scan(&p.Variant, &p.Choice, &p.Text, &p.ChosenAt); err != nil {
			return nil, wrap("reading pending predictions", err)
		}
		out[p.Variant] = p
	}
	return out, wrap("reading pending predictions", rows.Err())
}

// LastLesson returns the slug of the lesson the learner was last active in
// (the newest run or prediction), or "" when there is none.
func (s *Store) LastLesson(ctx context.Context, learnerID string) (string, error) {
	if err := s.ready(); err != nil {
		return "", err
	}
	if !plausibleID(learnerID) {
		return "", rlslab.Errorf(rlslab.ENOTFOUND, "unknown learner")
	}
	var slug string
	err := s.pool.QueryRow(ctx, `
SELECT lesson FROM (
	SELECT lesson, updated_at AS at FROM rlslab.progress WHERE learner_id = $1
	UNION ALL
	SELECT lesson, chosen_at FROM rlslab.pending_predictions WHERE learner_id = $1
	UNION ALL
	SELECT lesson, answered_at FROM rlslab.predictions WHERE learner_id = $1
) a ORDER BY at DESC, lesson LIMIT 1`, learnerID).Scan(&slug)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return slug, wrap("reading the last lesson", err)
}
