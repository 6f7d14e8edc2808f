package store

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/rlslab/rlslab"
)

// SetParticipantLesson records that the participant is on the lesson slug,
// so that the workshop's dashboard shows it after a restart too. Writing
// the lesson already recorded changes nothing. It fails with ENOTFOUND when
// the learner is in no workshop and EINVALID for a bad slug.
func (s *Store) SetParticipantLesson(ctx context.Context, learnerID, slug string) error {
	if err := s.ready(); err != nil {
		return err
	}
	if err := checkSlug("lesson", slug); err != nil {
		return err
	}
	notFound := rlslab.Errorf(rlslab.ENOTFOUND, "not a workshop participant")
	if !plausibleID(learnerID) {
		return notFound
	}
	var found bool
	err := s.pool.QueryRow(ctx, `
WITH moved AS (
	UPDATE rlslab.participants SET current_lesson = $2, current_lesson_at = now()
	WHERE learner_id = $1 AND current_lesson IS DISTINCT FROM $2
	RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM moved) OR EXISTS (SELECT 1 FROM rlslab.participants WHERE learner_id = $1)`,
		learnerID, slug).Scan(&found)
	if err != nil {
		return wrap("setting a participant's lesson", err)
	}
	if !found {
		return notFound
	}
	return nil
}

// ParticipantLessons returns the lesson each participant of the workshop
// was last seen on (see SetParticipantLesson), keyed by learner id;
// participants never seen on a lesson are missing. An unknown workshop is
// ENOTFOUND.
func (s *Store) ParticipantLessons(ctx context.Context, workshopID string) (map[string]string, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if _, err := s.Workshop(ctx, workshopID); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `
SELECT learner_id, current_lesson FROM rlslab.participants
WHERE workshop_id = $1 AND current_lesson IS NOT NULL`, workshopID)
	if err != nil {
		return nil, wrap("reading participants' lessons", err)
	}
	out := map[string]string{}
	var learner, slug string
	_, err = pgx.ForEachRow(rows, []any{&learner, &slug}, func() error {
		out[learner] = slug
		return nil
	})
	return out, wrap("reading participants' lessons", err)
}
