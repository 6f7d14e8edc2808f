package store

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/rlslab/rlslab"
)

// TestSchemaListMatchesTheMigrations keeps the list of objects the start-up
// check wants equal to what the migrations make.
func TestSchemaListMatchesTheMigrations(t *testing.T) {
	t.Parallel()
	_, pool := freshStore(t)
	tx, err := pool.Begin(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(testCtx(t)) //nolint:errcheck
	have, err := presentSchema(testCtx(t), tx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for o := range have {
		// Primary keys and unique constraints bring their own indexes.
		if !strings.HasSuffix(o, "_pkey") && !strings.HasSuffix(o, "_key") {
			got = append(got, o)
		}
	}
	want := wantedSchema()
	slices.Sort(got)
	slices.Sort(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("the migrations make\n%v\nthe schema check wants\n%v", got, want)
	}
}

// TestHalfPresentSchemaIsRefused drops one object after another behind the
// migration table's back: Open refuses to start and names what is missing.
func TestHalfPresentSchemaIsRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ drop, want string }{
		{"DROP TABLE rlslab.predictions", "missing table rlslab.predictions,"},
		{"ALTER TABLE rlslab.participants DROP COLUMN current_lesson", "missing column rlslab.participants.current_lesson,"},
		{"DROP INDEX rlslab.recordings_learner", "missing index rlslab.recordings_learner,"},
	} {
		t.Run(tc.drop, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			_, pool := freshStore(t)
			if _, err := pool.Exec(ctx, tc.drop); err != nil {
				t.Fatal(err)
			}
			_, err := Open(ctx, pool, nil)
			wantCode(t, err, rlslab.EUNAVAILABLE)
			if msg := rlslab.ErrorMessage(err); !strings.Contains(msg, "rlslab schema is "+tc.want) || !strings.Contains(msg, fmt.Sprintf("version %d", len(migrations()))) {
				t.Fatalf("Open after %q: %v", tc.drop, err)
			}
			t.Logf("%s: %s", tc.drop, rlslab.ErrorMessage(err))
		})
	}
}
