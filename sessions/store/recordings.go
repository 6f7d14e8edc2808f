package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rlslab/rlslab"
)

// Bounds of a recording, as JSON.
const (
	MaxFramesBytes  = 16 << 20 // its frames
	MaxOutcomeBytes = 4 << 20  // its params, and its outcome
)

// Recording is a finished run kept in rlslab's own tables: what ran, how it
// ended and every frame of it, replayable without a lab.
type Recording struct {
	ID              string          `json:"id"`     // set by SaveRecording: random, URL-safe
	Format          int             `json:"format"` // the version of the frames' states (see storedFrames)
	Lab             string          `json:"lab"`
	Learner         string          `json:"-"` // the learner who ran it, "" when unknown; not exported with a shared run
	Scenario        string          `json:"scenario"`
	Variant         string          `json:"variant"`
	Params          json.RawMessage `json:"params"` // the run's parameters; nil means {}
	Status          string          `json:"status"`
	Error           string          `json:"error,omitempty"`
	Leaks           int             `json:"leaks"`
	Errors          int             `json:"errors"`
	Outcome         json.RawMessage `json:"outcome"` // the run's outcome; nil means null
	PostgresVersion string          `json:"postgres_version"`
	BouncerVersion  string          `json:"pgbouncer_version,omitempty"` // "" when the run used no PgBouncer
	StartedAt       time.Time       `json:"started_at"`
	FinishedAt      time.Time       `json:"finished_at"`
	Frames          []Frame         `json:"frames"`
}

// Frame is one update of the live view during a recorded run: when it
// happened, in milliseconds since the run started, and the lab's state in
// the recording's format.
type Frame struct {
	AtMs  int64           `json:"at_ms"`
	State json.RawMessage `json:"state"`
}

// RecordingSummary is a recording without its frames and, of its outcome,
// only the kind, as listed for a lab (GET /labs/{id}/runs.json) and in a
// lesson's recent runs.
type RecordingSummary struct {
	ID         string    `json:"id"`
	Scenario   string    `json:"scenario"`
	Variant    string    `json:"variant"`
	Status     string    `json:"status"`
	Leaks      int       `json:"leaks"`
	FinishedAt time.Time `json:"finished_at"`
	// Kind is what the run showed (engine.Judge's kind: leak, breach,
	// disclosure, failed-closed, error, measurement, none), "" for a
	// recording made before outcomes had one.
	Kind string `json:"kind"`
}

// jsonOr returns raw compacted, or def when raw is empty; EINVALID when raw
// is not JSON or longer than MaxOutcomeBytes.
func jsonOr(field string, raw json.RawMessage, def string) ([]byte, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return []byte(def), nil
	}
	if len(raw) > MaxOutcomeBytes {
		return nil, rlslab.Errorf(rlslab.EINVALID, "the recording's %s take %d bytes, at most %d", field, len(raw), MaxOutcomeBytes)
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return nil, rlslab.Errorf(rlslab.EINVALID, "the recording's %s is not JSON: %v", field, err)
	}
	return b.Bytes(), nil
}

// checkRecording checks a recording's fields and returns its params,
// outcome and frames as JSON.
func checkRecording(r Recording) (params, outcome, frames []byte, err error) {
	if err := checkLabID(r.Lab); err != nil {
		return nil, nil, nil, err
	}
	if r.Learner != "" && !plausibleID(r.Learner) {
		return nil, nil, nil, rlslab.Errorf(rlslab.EINVALID, "bad learner id")
	}
	for _, f := range []struct{ field, v string }{{"scenario", r.Scenario}, {"variant", r.Variant}, {"status", r.Status}} {
		if err := checkSlug(f.field, f.v); err != nil {
			return nil, nil, nil, err
		}
	}
	if r.Format < 0 {
		return nil, nil, nil, rlslab.Errorf(rlslab.EINVALID, "bad recording format %d", r.Format)
	}
	if r.Leaks < 0 || r.Errors < 0 {
		return nil, nil, nil, rlslab.Errorf(rlslab.EINVALID, "negative counts (leaks %d, errors %d)", r.Leaks, r.Errors)
	}
	if len(r.Error) > maxErrorLen || len(r.PostgresVersion) > maxVersionLen || len(r.BouncerVersion) > maxVersionLen {
		return nil, nil, nil, rlslab.Errorf(rlslab.EINVALID, "the recording's error or versions are too long")
	}
	if r.StartedAt.IsZero() || r.FinishedAt.IsZero() || r.FinishedAt.Before(r.StartedAt) {
		return nil, nil, nil, rlslab.Errorf(rlslab.EINVALID, "the recording needs a start and a finish, in that order")
	}
	if params, err = jsonOr("params", r.Params, "{}"); err != nil {
		return nil, nil, nil, err
	}
	if outcome, err = jsonOr("outcome", r.Outcome, "null"); err != nil {
		return nil, nil, nil, err
	}
	var last int64
	size := 0
	for i, f := range r.Frames {
		if size += len(f.State); size > MaxFramesBytes {
			return nil, nil, nil, rlslab.Errorf(rlslab.EINVALID, "the recording's frames take more than %d bytes", MaxFramesBytes)
		}
		if f.AtMs < last {
			return nil, nil, nil, rlslab.Errorf(rlslab.EINVALID, "frame %d goes back in time (%d ms after %d ms)", i, f.AtMs, last)
		}
		last = f.AtMs
		if len(bytes.TrimSpace(f.State)) == 0 {
			return nil, nil, nil, rlslab.Errorf(rlslab.EINVALID, "frame %d has no state", i)
		}
	}
	fs := r.Frames
	if fs == nil {
		fs = []Frame{}
	}
	// Encoding checks that each state is JSON; markup in states is kept
	// as it is (no \u003c escapes).
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(fs); err != nil {
		return nil, nil, nil, rlslab.Errorf(rlslab.EINVALID, "the recording's frames are not JSON: %v", err)
	}
	frames = bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	if r.Format > 1 {
		frames = fmt.Appendf(nil, `{"format":%d,"frames":%s}`, r.Format, frames)
	}
	if len(frames) > MaxFramesBytes {
		return nil, nil, nil, rlslab.Errorf(rlslab.EINVALID, "the recording's frames take %d bytes, at most %d", len(frames), MaxFramesBytes)
	}
	return params, outcome, frames, nil
}

// SaveRecording stores a finished run and returns its new id. Then only the
// newest Options.KeepRecordings recordings of its lab are kept. Bad input
// (including an unknown learner) is EINVALID.
func (s *Store) SaveRecording(ctx context.Context, r Recording) (string, error) {
	if err := s.ready(); err != nil {
		return "", err
	}
	params, outcome, frames, err := checkRecording(r)
	if err != nil {
		return "", err
	}
	id := randomString(recordingBytes)
	var learner *string
	if r.Learner != "" {
		learner = &r.Learner
	}
	var pruned int64
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `
INSERT INTO rlslab.recordings (id, lab_id, learner_id, scenario, variant, params, status, error, leaks, errors,
	outcome, postgres_version, pgbouncer_version, started_at, finished_at, frame_count, frames)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`,
			id, r.Lab, learner, r.Scenario, r.Variant, string(params), r.Status, r.Error, r.Leaks, r.Errors,
			string(outcome), r.PostgresVersion, r.BouncerVersion, r.StartedAt, r.FinishedAt, len(r.Frames), frames)
		if sqlState(err) == foreignKeyViolation {
			return rlslab.Errorf(rlslab.EINVALID, "the recording's learner is unknown")
		}
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `
DELETE FROM rlslab.recordings WHERE lab_id = $1 AND id NOT IN (
	SELECT id FROM rlslab.recordings WHERE lab_id = $1 ORDER BY finished_at DESC, seq DESC LIMIT $2)`,
			r.Lab, s.opts.KeepRecordings)
		pruned = tag.RowsAffected()
		return err
	})
	if err != nil {
		return "", wrap("saving a recording", err)
	}
	if pruned > 0 {
		s.log.Debug("store: pruned a lab's oldest recordings", "lab", r.Lab, "deleted", pruned)
	}
	return id, nil
}

// notFoundRecording is the error for an unknown recording.
func notFoundRecording() error {
	return rlslab.Errorf(rlslab.ENOTFOUND, "no such recording (recordings are kept for a while, then deleted)")
}

// GetRecording returns the recording with that id, frames included, or
// ENOTFOUND.
func (s *Store) GetRecording(ctx context.Context, id string) (Recording, error) {
	if err := s.ready(); err != nil {
		return Recording{}, err
	}
	if !plausibleID(id) {
		return Recording{}, notFoundRecording()
	}
	var (
		r                       Recording
		learner                 *string
		params, outcome, frames []byte
	)
	err := s.pool.QueryRow(ctx, `
SELECT id, lab_id, learner_id, scenario, variant, params::text, status, error, leaks, errors, outcome::text,
	postgres_version, pgbouncer_version, started_at, finished_at, frames
FROM rlslab.recordings WHERE id = $1`, id).Scan(&r.ID, &r.Lab, &learner, &r.Scenario, &r.Variant, &params,
		&r.Status, &r.Error, &r.Leaks, &r.Errors, &outcome, &r.PostgresVersion, &r.BouncerVersion,
		&r.StartedAt, &r.FinishedAt, &frames)
	if errors.Is(err, pgx.ErrNoRows) {
		return Recording{}, notFoundRecording()
	}
	if err != nil {
		return Recording{}, wrap("reading a recording", err)
	}
	if learner != nil {
		r.Learner = *learner
	}
	r.Params, r.Outcome = params, outcome
	if r.Format, r.Frames, err = storedFrames(frames); err != nil {
		return Recording{}, wrap("reading a recording's frames", err)
	}
	return r, nil
}

// storedFrames reads the frames column: format 1 is a bare JSON array of
// frames (each state the engine's State JSON of its day); later formats
// are an object {"format": N, "frames": [...]}, whose states the format
// says how to read.
func storedFrames(b []byte) (int, []Frame, error) {
	var frames []Frame
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '[' {
		err := json.Unmarshal(t, &frames)
		return 1, frames, err
	}
	var doc struct {
		Format int     `json:"format"`
		Frames []Frame `json:"frames"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return 0, nil, err
	}
	if doc.Format < 2 {
		return 0, nil, fmt.Errorf("frames stored as an object of format %d", doc.Format)
	}
	return doc.Format, doc.Frames, nil
}

// ListRecordings returns the lab's recordings, newest first, without their
// frames. A lab without recordings (or an unknown one) has none.
func (s *Store) ListRecordings(ctx context.Context, labID string) ([]RecordingSummary, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if err := checkLabID(labID); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `
SELECT id, scenario, variant, status, leaks, finished_at, COALESCE(outcome->>'kind', '') FROM rlslab.recordings
WHERE lab_id = $1 ORDER BY finished_at DESC, seq DESC`, labID)
	if err != nil {
		return nil, wrap("listing recordings", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[RecordingSummary])
	if err != nil {
		return nil, wrap("listing recordings", err)
	}
	if out == nil {
		out = []RecordingSummary{}
	}
	return out, nil
}

// RunsQuery names the recordings RecentRecordings lists: those made in a
// lab, and those of a learner (in any lab they had).
type RunsQuery struct {
	Lab      string // a lab id
	Learner  string // a learner id, or "" for only the lab's
	Scenario string // only this scenario's, or "" for all
	Limit    int    // at most this many (1 to MaxRecentRuns)
}

// MaxRecentRuns bounds RunsQuery.Limit.
const MaxRecentRuns = 100

// RecentRecordings returns the newest recordings of q, newest first,
// without their frames: a learner's runs outlive the lab they were made
// in. Bad input is EINVALID.
func (s *Store) RecentRecordings(ctx context.Context, q RunsQuery) ([]RecordingSummary, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if err := checkLabID(q.Lab); err != nil {
		return nil, err
	}
	if q.Learner != "" && !plausibleID(q.Learner) {
		return nil, rlslab.Errorf(rlslab.EINVALID, "bad learner id")
	}
	if q.Scenario != "" {
		if err := checkSlug("scenario", q.Scenario); err != nil {
			return nil, err
		}
	}
	if q.Limit < 1 || q.Limit > MaxRecentRuns {
		return nil, rlslab.Errorf(rlslab.EINVALID, "list 1 to %d recordings, not %d", MaxRecentRuns, q.Limit)
	}
	rows, err := s.pool.Query(ctx, `
SELECT id, scenario, variant, status, leaks, finished_at, kind FROM (
	(SELECT id, seq, scenario, variant, status, leaks, finished_at, COALESCE(outcome->>'kind', '') AS kind FROM rlslab.recordings
	 WHERE lab_id = $1 AND ($3 = '' OR scenario = $3)
	 ORDER BY finished_at DESC, seq DESC LIMIT $4)
	UNION
	(SELECT id, seq, scenario, variant, status, leaks, finished_at, COALESCE(outcome->>'kind', '') AS kind FROM rlslab.recordings
	 WHERE $2 <> '' AND learner_id = $2 AND ($3 = '' OR scenario = $3)
	 ORDER BY finished_at DESC, seq DESC LIMIT $4)
) r ORDER BY finished_at DESC, seq DESC LIMIT $4`, q.Lab, q.Learner, q.Scenario, q.Limit)
	if err != nil {
		return nil, wrap("listing recent recordings", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[RecordingSummary])
	if err != nil {
		return nil, wrap("listing recent recordings", err)
	}
	if out == nil {
		out = []RecordingSummary{}
	}
	return out, nil
}

// Prune deletes the recordings whose run finished more than
// Options.RecordingAge ago and, in every lab, all but the newest
// Options.KeepRecordings. It returns how many it deleted. Run it at start-up
// and now and then (SaveRecording already keeps its lab within the count).
func (s *Store) Prune(ctx context.Context) (int64, error) {
	if err := s.ready(); err != nil {
		return 0, err
	}
	tag, err := s.pool.Exec(ctx, `
DELETE FROM rlslab.recordings WHERE finished_at < now() - $1::interval OR id IN (
	SELECT id FROM (
		SELECT id, row_number() OVER (PARTITION BY lab_id ORDER BY finished_at DESC, seq DESC) AS n
		FROM rlslab.recordings) ranked
	WHERE n > $2)`, s.opts.RecordingAge, s.opts.KeepRecordings)
	if err != nil {
		return 0, wrap("pruning recordings", err)
	}
	if n := tag.RowsAffected(); n > 0 {
		s.log.Info("store: pruned recordings", "deleted", n, "keep", s.opts.KeepRecordings, "max_age", s.opts.RecordingAge)
	}
	return tag.RowsAffected(), nil
}
