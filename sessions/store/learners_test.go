package store

import (
	"sync"
	"testing"

	"github.com/rlslab/rlslab"
)

// TestEnsureLearner stores a learner the first time its token is seen, and
// gives the same learner for that token afterwards, even when many requests
// ensure it at the same moment; malformed tokens are refused and store
// nothing.
func TestEnsureLearner(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := testCtx(t)
	token := NewToken()
	if _, err := s.LearnerByToken(ctx, token); rlslab.ErrorCode(err) != rlslab.ENOTFOUND {
		t.Fatalf("a fresh token is already a learner: %v", err)
	}
	const n = 16
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			l, err := s.EnsureLearner(ctx, token)
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = l.ID
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id == "" || id != ids[0] {
			t.Fatalf("one token, learners %q", ids)
		}
	}
	l, err := s.LearnerByToken(ctx, token)
	if err != nil || l.ID != ids[0] {
		t.Fatalf("after ensuring: %+v %v, want %s", l, err, ids[0])
	}
	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM rlslab.learners WHERE token_hash = $1", hashSecret(token)).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("%d rows for the token (%v)", rows, err)
	}

	bad := []string{"", "short", "has space in it and is long enough", "<script>alert(1)</script>aaaaaaaaaaaa", string(make([]byte, 200))}
	hashes := make([][]byte, len(bad))
	for i, tok := range bad {
		if _, err := s.EnsureLearner(ctx, tok); rlslab.ErrorCode(err) != rlslab.EINVALID {
			t.Errorf("token %q: %v, want EINVALID", tok, err)
		}
		hashes[i] = hashSecret(tok)
	}
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM rlslab.learners WHERE token_hash = ANY($1)", hashes).Scan(&rows); err != nil || rows != 0 {
		t.Errorf("bad tokens stored %d learners (%v)", rows, err)
	}
}
