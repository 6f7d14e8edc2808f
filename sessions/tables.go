package sessions

import (
	"context"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/sessions/store"
)

// The kinds of rlslab's own data that the services hand their callers, as
// package store keeps them: callers name them through sessions and never
// reach the store.
type (
	Workshop         = store.Workshop
	Participant      = store.Participant
	LastRun          = store.LastRun
	LearnerProgress  = store.Progress
	LessonProgress   = store.LessonProgress
	Pending          = store.Pending
	Prediction       = store.Prediction
	Recording        = store.Recording
	RecordingFrame   = store.Frame
	RecordingSummary = store.RecordingSummary
	RecordingQuery   = store.RecordingQuery
	RunsQuery        = store.RunsQuery
)

// MaxNameLen bounds a participant's display name, in characters.
const MaxNameLen = store.MaxNameLen

// NewToken returns a new learner token: random and URL-safe. A browser
// keeps it in a cookie; the tables keep only its hash, once the learner has
// something to keep.
func NewToken() string { return store.NewToken() }

// DB is rlslab's own tables as the services (Workshops, Progress,
// Recordings) use them: every call goes through the outage guard, so that a
// stopped or frozen server is reported as EUNAVAILABLE with ErrDatabaseDown
// within about a second.
type DB struct {
	st *store.Store
	g  guard
}

// NewDB returns the services' access to st, whose pool is pool (the admin
// pool, from OpenAdmin).
func NewDB(st *store.Store, pool *pgxpool.Pool, log *slog.Logger) *DB {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &DB{st: st, g: guard{p: newProber(pool), log: log}}
}

// call runs f on d's tables under the guard and returns its result.
func call[T any](ctx context.Context, d *DB, what string, f func(ctx context.Context, st *store.Store) (T, error)) (T, error) {
	if d == nil || d.st == nil {
		var zero T
		return zero, rlslab.Errorf(rlslab.EUNAVAILABLE, "this needs rlslab's own tables, and this server runs without them")
	}
	return guarded(ctx, d.g, what, func(ctx context.Context) (T, error) { return f(ctx, d.st) })
}

// do is call for an f without a result.
func (d *DB) do(ctx context.Context, what string, f func(ctx context.Context, st *store.Store) error) error {
	_, err := call(ctx, d, what, func(ctx context.Context, st *store.Store) (struct{}, error) { return struct{}{}, f(ctx, st) })
	return err
}

// learner returns the id of the learner whose token is token, or "" when
// the tables do not know it (or token is "").
func learner(ctx context.Context, st *store.Store, token string) (string, error) {
	if token == "" {
		return "", nil
	}
	l, err := st.LearnerByToken(ctx, token)
	if rlslab.ErrorCode(err) == rlslab.ENOTFOUND {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return l.ID, nil
}
