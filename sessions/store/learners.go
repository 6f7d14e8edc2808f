package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rlslab/rlslab"
)

// Learner is one browser, known by the random token in its cookie. Only
// the token's hash is stored; the ID is the Store's own key for the learner
// and is not a secret.
type Learner struct {
	ID        string
	CreatedAt time.Time
}

// querier is what pgxpool.Pool and pgx.Tx share that the Store uses.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// CreateLearner stores a new learner and returns it with its token, which
// the caller hands to the browser (in a cookie) and which is not kept.
func (s *Store) CreateLearner(ctx context.Context) (Learner, string, error) {
	if err := s.ready(); err != nil {
		return Learner{}, "", err
	}
	return createLearner(ctx, s.pool)
}

// createLearner inserts a learner with a fresh token through q.
func createLearner(ctx context.Context, q querier) (Learner, string, error) {
	token := newToken()
	l := Learner{ID: randomString(idBytes)}
	err := q.QueryRow(ctx,
		"INSERT INTO rlslab.learners (id, token_hash) VALUES ($1, $2) RETURNING created_at",
		l.ID, hashSecret(token)).Scan(&l.CreatedAt)
	if err != nil {
		return Learner{}, "", wrap("creating a learner", err)
	}
	return l, token, nil
}

// LearnerByToken returns the learner whose token this is, or ENOTFOUND.
func (s *Store) LearnerByToken(ctx context.Context, token string) (Learner, error) {
	if err := s.ready(); err != nil {
		return Learner{}, err
	}
	if !plausibleID(token) {
		return Learner{}, rlslab.Errorf(rlslab.ENOTFOUND, "unknown learner")
	}
	var l Learner
	err := s.pool.QueryRow(ctx,
		"SELECT id, created_at FROM rlslab.learners WHERE token_hash = $1",
		hashSecret(token)).Scan(&l.ID, &l.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Learner{}, rlslab.Errorf(rlslab.ENOTFOUND, "unknown learner")
	}
	if err != nil {
		return Learner{}, wrap("looking up a learner", err)
	}
	return l, nil
}

// learnerExists fails with ENOTFOUND when no learner has that id.
func learnerExists(ctx context.Context, q querier, id string) error {
	if !plausibleID(id) {
		return rlslab.Errorf(rlslab.ENOTFOUND, "unknown learner")
	}
	var ok bool
	if err := q.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM rlslab.learners WHERE id = $1)", id).Scan(&ok); err != nil {
		return wrap("looking up a learner", err)
	}
	if !ok {
		return rlslab.Errorf(rlslab.ENOTFOUND, "unknown learner")
	}
	return nil
}
