package store

import (
	"strings"
	"testing"
	"time"

	"github.com/rlslab/rlslab"
)

// TestMigrationV2KeepsV1Data opens a database that version 1 made, with a
// checked prediction in it: the upgrade keeps the prediction and adds the
// pending choices.
func TestMigrationV2KeepsV1Data(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	pool := newPool(t, freshDB(t))
	v1 := migrations()[0]
	if _, err := pool.Exec(ctx, `CREATE SCHEMA rlslab;
CREATE TABLE rlslab.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, v1.sql); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO rlslab.schema_migrations (version, name) VALUES (1, 'v1');
INSERT INTO rlslab.learners (id, token_hash) VALUES ('learner-from-v1-0000000', sha256('x'));
INSERT INTO rlslab.progress (learner_id, lesson) VALUES ('learner-from-v1-0000000', 'set-leak');
INSERT INTO rlslab.predictions (learner_id, lesson, variant, choice, correct) VALUES ('learner-from-v1-0000000', 'set-leak', 'session-set', 'no invoices', false)`); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, all := appliedVersions(t, pool), migrations(); len(got) != len(all) || got[1] != 2 {
		t.Fatalf("applied versions %v, want 1 to %d", got, len(all))
	}
	want := `{"lessons":[{"slug":"set-leak","variants_run":[],"leak_seen":false,"fix_run":false,"predictions":[{"variant":"session-set","choice":"no invoices","correct":false}]}]}`
	if got := progressJSON(t, s, "learner-from-v1-0000000"); got != want {
		t.Fatalf("after the upgrade\n got %s\nwant %s", got, want)
	}
	if err := s.SetPending(ctx, "learner-from-v1-0000000", "set-leak", Pending{Variant: "tx-local", Choice: 1, Text: "no invoices", ChosenAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

func TestPending(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := newStore(t)
	l, _, err := s.CreateLearner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if last, err := s.LastLesson(ctx, l.ID); err != nil || last != "" {
		t.Fatalf("a new learner's last lesson %q, %v", last, err)
	}
	at := time.Now().Truncate(time.Microsecond)
	if err := s.SetPending(ctx, l.ID, "set-leak", Pending{Variant: "session-set", Choice: 0, Text: "Acme's invoices", ChosenAt: at}); err != nil {
		t.Fatal(err)
	}
	// A later choice replaces the earlier one.
	if err := s.SetPending(ctx, l.ID, "set-leak", Pending{Variant: "session-set", Choice: 1, Text: "no invoices", ChosenAt: at.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.PendingFor(ctx, l.ID, "set-leak")
	if err != nil {
		t.Fatal(err)
	}
	if p := got["session-set"]; len(got) != 1 || p.Choice != 1 || p.Text != "no invoices" || !p.ChosenAt.Equal(at.Add(time.Second)) {
		t.Fatalf("pending %+v", got)
	}
	// A pending choice is not a prediction yet.
	if want := `{"lessons":[{"slug":"set-leak","variants_run":[],"leak_seen":false,"fix_run":false,"predictions":[]}]}`; progressJSON(t, s, l.ID) != want {
		t.Fatalf("progress with a pending choice: %s", progressJSON(t, s, l.ID))
	}
	if last, err := s.LastLesson(ctx, l.ID); err != nil || last != "set-leak" {
		t.Fatalf("last lesson %q, %v", last, err)
	}
	// Checking it moves it to the predictions, with what the run showed.
	if err := s.RecordPrediction(ctx, l.ID, "set-leak", Prediction{Variant: "session-set", Choice: "no invoices", Correct: false,
		Actual: "Acme's invoices", Evidence: "leaks = 1"}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.PendingFor(ctx, l.ID, "set-leak"); err != nil || len(got) != 0 {
		t.Fatalf("pending after the check: %+v, %v", got, err)
	}
	p, err := s.Progress(ctx, l.ID)
	if err != nil {
		t.Fatal(err)
	}
	if q := p.Lessons[0].Predictions; len(q) != 1 || q[0].Actual != "Acme's invoices" || q[0].Evidence != "leaks = 1" || q[0].Correct {
		t.Fatalf("checked prediction %+v", q)
	}
	// A checked prediction is not asked again.
	err = s.SetPending(ctx, l.ID, "set-leak", Pending{Variant: "session-set", Choice: 0, Text: "Acme's invoices", ChosenAt: time.Now()})
	wantCode(t, err, rlslab.ECONFLICT)

	// Bad input stores nothing.
	for i, bad := range []Pending{
		{Variant: "tx-local", Choice: -1, Text: "a", ChosenAt: at},
		{Variant: "tx-local", Choice: 16, Text: "a", ChosenAt: at},
		{Variant: "tx-local", Choice: 0, Text: "", ChosenAt: at},
		{Variant: "tx-local", Choice: 0, Text: strings.Repeat("c", 10<<10), ChosenAt: at},
		{Variant: "tx-local", Choice: 0, Text: "a"},
		{Variant: "Tx Local", Choice: 0, Text: "a", ChosenAt: at},
	} {
		if err := s.SetPending(ctx, l.ID, "set-leak", bad); rlslab.ErrorCode(err) != rlslab.EINVALID {
			t.Errorf("bad pending %d: %v, want EINVALID", i, err)
		}
	}
	wantCode(t, s.SetPending(ctx, "nobody-at-all-000000000", "set-leak", Pending{Variant: "tx-local", Text: "a", ChosenAt: at}), rlslab.ENOTFOUND)
	if got, err := s.PendingFor(ctx, l.ID, "set-leak"); err != nil || len(got) != 0 {
		t.Fatalf("bad input left pending choices: %+v, %v", got, err)
	}
}
