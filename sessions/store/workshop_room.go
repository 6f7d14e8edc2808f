package store

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Answer is one participant's answer to a prediction question: checked by
// a run (Checked, and then Correct says whether it was right) or still
// pending.
type Answer struct {
	Learner string
	Lesson  string
	Variant string
	Choice  string // the text of the choice picked
	Checked bool
	Correct bool
	Actual  string // for a checked answer: the text of the choice the run showed
}

// WorkshopAnswers returns every answer the workshop's participants gave to
// prediction questions, checked or pending, or ENOTFOUND for an unknown
// workshop.
func (s *Store) WorkshopAnswers(ctx context.Context, workshopID string) ([]Answer, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if _, err := s.Workshop(ctx, workshopID); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `
SELECT q.learner_id, q.lesson, q.variant, q.choice, true, q.correct, q.actual
FROM rlslab.predictions q JOIN rlslab.participants p USING (learner_id)
WHERE p.workshop_id = $1
UNION ALL
SELECT q.learner_id, q.lesson, q.variant, q.choice_text, false, false, ''
FROM rlslab.pending_predictions q JOIN rlslab.participants p USING (learner_id)
WHERE p.workshop_id = $1`, workshopID)
	if err != nil {
		return nil, wrap("reading a workshop's answers", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (a Answer, err error) {
		err = row.Scan(&a.Learner, &a.Lesson, &a.Variant, &a.Choice, &a.Checked, &a.Correct, &a.Actual)
		return a, err
	})
	if err != nil {
		return nil, wrap("reading a workshop's answers", err)
	}
	return out, nil
}

// WorkshopRunCounts returns how many recorded runs each participant of the
// workshop has, keyed by learner id (participants without a run are left
// out), or ENOTFOUND for an unknown workshop.
func (s *Store) WorkshopRunCounts(ctx context.Context, workshopID string) (map[string]int, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if _, err := s.Workshop(ctx, workshopID); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `
SELECT r.learner_id, count(*)
FROM rlslab.recordings r JOIN rlslab.participants p USING (learner_id)
WHERE p.workshop_id = $1
GROUP BY r.learner_id`, workshopID)
	if err != nil {
		return nil, wrap("counting a workshop's runs", err)
	}
	out := map[string]int{}
	var (
		id string
		n  int
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &n}, func() error {
		out[id] = n
		return nil
	})
	return out, wrap("counting a workshop's runs", err)
}
