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
	var out []RecordingSummary
	err := r.db.do(ctx, "list recordings", func(ctx context.Context, st *store.Store) (err error) {
		out, err = st.ListRecordings(ctx, lab)
		return err
	})
	if rlslab.ErrorCode(err) == rlslab.EINVALID {
		return nil, rlslab.Errorf(rlslab.ENOTFOUND, "no such lab")
	}
	return out, err
}

// Get returns the recording with that id, frames included, or ENOTFOUND.
func (r *Recordings) Get(ctx context.Context, id string) (Recording, error) {
	var out Recording
	err := r.db.do(ctx, "read a recording", func(ctx context.Context, st *store.Store) (err error) {
		out, err = st.GetRecording(ctx, id)
		return err
	})
	return out, err
}

// Newest returns the newest recording with frames of q.Variant of
// q.Scenario made in lab q.Lab or by the learner whose token is token (q's
// Learner is set from it; a token the tables do not know has recorded
// nothing), or ENOTFOUND.
func (r *Recordings) Newest(ctx context.Context, q RecordingQuery, token string) (RecordingSummary, error) {
	var out RecordingSummary
	err := r.db.do(ctx, "find a recording", func(ctx context.Context, st *store.Store) (err error) {
		if q.Learner, err = learner(ctx, st, token); err != nil {
			return err
		}
		if q.Lab == "" && q.Learner == "" {
			return rlslab.Errorf(rlslab.ENOTFOUND, "no recorded run")
		}
		out, err = st.NewestRecording(ctx, q)
		return err
	})
	return out, err
}
