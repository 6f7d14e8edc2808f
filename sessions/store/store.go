// Package store keeps rlslab's own data in PostgreSQL: learners, their
// progress, workshops and their participants, and recordings of finished
// runs. Everything lives in the schema "rlslab" of the database the admin
// pool is connected to, never inside a lab database. Open migrates that
// schema; secrets (learner tokens, facilitator secrets) are stored only as
// SHA-256 hashes.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rlslab/rlslab"
)

// Defaults of Options.
const (
	DefaultKeepRecordings = 20
	DefaultRecordingAge   = 7 * 24 * time.Hour
)

// Options configures a Store. Zero fields take their defaults.
type Options struct {
	// KeepRecordings is how many recordings each lab keeps (its newest);
	// 0 means DefaultKeepRecordings.
	KeepRecordings int
	// RecordingAge is how long a recording is kept after its run finished;
	// 0 means DefaultRecordingAge.
	RecordingAge time.Duration
}

// withDefaults fills zero fields and rejects negative ones.
func (o Options) withDefaults() (Options, error) {
	if o.KeepRecordings < 0 || o.RecordingAge < 0 {
		return o, rlslab.Errorf(rlslab.EINVALID, "store: negative recording limits (keep %d, age %s)", o.KeepRecordings, o.RecordingAge)
	}
	if o.KeepRecordings == 0 {
		o.KeepRecordings = DefaultKeepRecordings
	}
	if o.RecordingAge == 0 {
		o.RecordingAge = DefaultRecordingAge
	}
	return o, nil
}

// Store is rlslab's own data in PostgreSQL. It uses the caller's pool and
// never opens connections of its own. It is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	log    *slog.Logger
	opts   Options
	closed atomic.Bool
}

// Open migrates the rlslab schema in the database pool is connected to and
// returns a Store on it. It uses the first of opts, if any (zero fields take
// their defaults). Two processes opening the same database at once are
// serialized by an advisory lock, so each migration runs exactly once. A nil
// log discards.
func Open(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger, opts ...Options) (*Store, error) {
	if pool == nil {
		return nil, rlslab.Errorf(rlslab.EINVALID, "store: no pool")
	}
	if len(opts) > 1 {
		return nil, rlslab.Errorf(rlslab.EINVALID, "store: more than one Options")
	}
	var o Options
	if len(opts) == 1 {
		o = opts[0]
	}
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Store{pool: pool, log: log, opts: o}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Options returns the options in force, defaults filled in.
func (s *Store) Options() Options { return s.opts }

// Close marks the Store closed: later calls fail with EUNAVAILABLE. It does
// not close the caller's pool, and the data stays in the database.
func (s *Store) Close() {
	s.closed.Store(true)
}

// Ping checks that the database answers on the Store's pool.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.ready(); err != nil {
		return err
	}
	return s.pool.Ping(ctx)
}

// ready fails with EUNAVAILABLE once the Store is closed.
func (s *Store) ready() error {
	if s.closed.Load() {
		return rlslab.Errorf(rlslab.EUNAVAILABLE, "store: closed")
	}
	return nil
}

// SQLSTATE codes the Store maps to rlslab error codes.
const (
	uniqueViolation     = "23505"
	foreignKeyViolation = "23503"
)

// sqlState returns the SQLSTATE of err when it is a PostgreSQL error, else "".
func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// wrap adds what the Store was doing to an unexpected database error,
// keeping *rlslab.Error values (and nil) as they are.
func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	var re *rlslab.Error
	if errors.As(err, &re) {
		return err
	}
	return fmt.Errorf("store: %s: %w", what, err)
}
