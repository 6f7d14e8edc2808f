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

// NewToken returns a fresh learner token for a browser's cookie. The
// learner is stored only once there is something to keep for it
// (EnsureLearner), so a visit that runs nothing writes nothing.
func NewToken() string { return newToken() }

// EnsureLearner returns the learner whose token this is, storing it first
// if the store does not know it yet (a new browser, or one that comes back
// after rlslab's tables were lost). A malformed token is EINVALID.
func (s *Store) EnsureLearner(ctx context.Context, token string) (Learner, error) {
	if err := s.ready(); err != nil {
		return Learner{}, err
	}
	if !plausibleID(token) || len(token) < minTokenLen {
		return Learner{}, rlslab.Errorf(rlslab.EINVALID, "not a learner token")
	}
	// The insert and the lookup share one snapshot: exactly one of them
	// gives a row, unless another request stored the same token after the
	// statement began; then the lookup below finds it.
	var l Learner
	err := s.pool.QueryRow(ctx, `WITH ins AS (
		INSERT INTO rlslab.learners (id, token_hash) VALUES ($1, $2)
		ON CONFLICT (token_hash) DO NOTHING RETURNING id, created_at)
	SELECT id, created_at FROM ins
	UNION ALL SELECT id, created_at FROM rlslab.learners WHERE token_hash = $2
	LIMIT 1`, randomString(idBytes), hashSecret(token)).Scan(&l.ID, &l.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return s.LearnerByToken(ctx, token)
	}
	if err != nil {
		return Learner{}, wrap("storing a learner", err)
	}
	return l, nil
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
