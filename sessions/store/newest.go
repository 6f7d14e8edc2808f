package store

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/rlslab/rlslab"
)

// RecordingQuery names the recordings NewestRecording looks among: those
// of one variant of a scenario, made in a lab or by a learner.
type RecordingQuery struct {
	Lab      string // a lab id, or "" for none
	Learner  string // a learner id, or "" for none
	Scenario string
	Variant  string
}

// NewestRecording returns the newest recording with frames of q.Variant of
// q.Scenario that was made in lab q.Lab or by learner q.Learner. It fails
// with ENOTFOUND when there is none and EINVALID for bad input (a query
// with neither a lab nor a learner is bad input).
func (s *Store) NewestRecording(ctx context.Context, q RecordingQuery) (RecordingSummary, error) {
	if err := s.ready(); err != nil {
		return RecordingSummary{}, err
	}
	if err := checkSlug("scenario", q.Scenario); err != nil {
		return RecordingSummary{}, err
	}
	if err := checkSlug("variant", q.Variant); err != nil {
		return RecordingSummary{}, err
	}
	if q.Lab == "" && q.Learner == "" {
		return RecordingSummary{}, rlslab.Errorf(rlslab.EINVALID, "a lab or a learner is needed to find a recording")
	}
	if q.Lab != "" {
		if err := checkLabID(q.Lab); err != nil {
			return RecordingSummary{}, err
		}
	}
	if q.Learner != "" && !plausibleID(q.Learner) {
		return RecordingSummary{}, rlslab.Errorf(rlslab.EINVALID, "bad learner id")
	}
	rows, err := s.pool.Query(ctx, `
SELECT id, scenario, variant, status, leaks, finished_at, kind FROM (
	(SELECT id, seq, scenario, variant, status, leaks, finished_at, COALESCE(outcome->>'kind', '') AS kind FROM rlslab.recordings
	 WHERE lab_id = $1 AND scenario = $3 AND variant = $4 AND frame_count > 0
	 ORDER BY finished_at DESC, seq DESC LIMIT 1)
	UNION ALL
	(SELECT id, seq, scenario, variant, status, leaks, finished_at, COALESCE(outcome->>'kind', '') AS kind FROM rlslab.recordings
	 WHERE learner_id = $2 AND scenario = $3 AND variant = $4 AND frame_count > 0
	 ORDER BY finished_at DESC, seq DESC LIMIT 1)
) r ORDER BY finished_at DESC, seq DESC LIMIT 1`, q.Lab, q.Learner, q.Scenario, q.Variant)
	if err != nil {
		return RecordingSummary{}, wrap("finding a recording", err)
	}
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[RecordingSummary])
	if errors.Is(err, pgx.ErrNoRows) {
		return RecordingSummary{}, rlslab.Errorf(rlslab.ENOTFOUND, "no recorded run of %s / %s yet", q.Scenario, q.Variant)
	}
	return r, wrap("finding a recording", err)
}
