package sessions

import (
	"context"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/sessions/store"
)

// Recordings reads the recordings of finished runs (the Keeper writes
// them): they outlive their lab.
type Recordings struct {
	db *DB
}

// NewRecordings returns the recordings over db.
func NewRecordings(db *DB) *Recordings { return &Recordings{db: db} }

// List returns the recordings of lab id, newest first; ENOTFOUND for an id
// no lab can have.
func (r *Recordings) List(ctx context.Context, lab string) ([]RecordingSummary, error) {
	out, err := call(ctx, r.db, "list recordings", func(ctx context.Context, st *store.Store) ([]RecordingSummary, error) {
		return st.ListRecordings(ctx, lab)
	})
	if rlslab.ErrorCode(err) == rlslab.EINVALID {
		return nil, rlslab.Errorf(rlslab.ENOTFOUND, "no such lab")
	}
	return out, err
}

// Recent returns the newest recordings of q (Limit of them, of
// q.Scenario if set) made in lab q.Lab or by the learner whose token is
// token ("" or a token the tables do not know: the lab's only), newest
// first. q's Learner is set from token.
func (r *Recordings) Recent(ctx context.Context, q RunsQuery, token string) ([]RecordingSummary, error) {
	out, err := call(ctx, r.db, "list recent recordings", func(ctx context.Context, st *store.Store) ([]RecordingSummary, error) {
		id, err := learner(ctx, st, token)
		if err != nil {
			return nil, err
		}
		mine := q
		mine.Learner = id
		return st.RecentRecordings(ctx, mine)
	})
	if rlslab.ErrorCode(err) == rlslab.EINVALID {
		return nil, rlslab.Errorf(rlslab.ENOTFOUND, "no such lab")
	}
	return out, err
}

// Get returns the recording with that id, frames included, or ENOTFOUND.
func (r *Recordings) Get(ctx context.Context, id string) (Recording, error) {
	return call(ctx, r.db, "read a recording", func(ctx context.Context, st *store.Store) (Recording, error) {
		return st.GetRecording(ctx, id)
	})
}

// Newest returns the newest recording with frames of q.Variant of
// q.Scenario made in lab q.Lab or by the learner whose token is token (q's
// Learner is set from it; a token the tables do not know has recorded
// nothing), or ENOTFOUND.
func (r *Recordings) Newest(ctx context.Context, q RecordingQuery, token string) (RecordingSummary, error) {
	return call(ctx, r.db, "find a recording", func(ctx context.Context, st *store.Store) (RecordingSummary, error) {
		id, err := learner(ctx, st, token)
		if err != nil {
			return RecordingSummary{}, err
		}
		if q.Lab == "" && id == "" {
			return RecordingSummary{}, rlslab.Errorf(rlslab.ENOTFOUND, "no recorded run")
		}
		mine := q
		mine.Learner = id
		return st.NewestRecording(ctx, mine)
	})
}
