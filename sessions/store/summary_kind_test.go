package store

import (
	"encoding/json"
	"testing"
	"time"
)

// TestSummariesCarryTheOutcomeKind saves a breach, a failed-closed run and
// a run recorded before outcomes had a kind, and checks that every list of
// summaries (a lab's, the recent runs, the newest of a variant) carries
// the kind from the stored outcome, and "" where there is none.
func TestSummariesCarryTheOutcomeKind(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := newStore(t)
	ann, _, err := s.CreateLearner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lab, now := newLabID(), time.Now()
	want := map[string]string{}
	for i, c := range []struct{ variant, outcome, kind string }{
		{"old", `{"scenario":"side-channels","leaks":0}`, ""},
		{"truncate", `{"scenario":"side-channels","kind":"breach","headline":"Acme wiped Globex's rows."}`, "breach"},
		{"fixed", `{"scenario":"side-channels","kind":"failed-closed","headline":"Failed closed."}`, "failed-closed"},
	} {
		r := testRecording(lab, now.Add(time.Duration(i)*time.Second), 1, 10)
		r.Learner, r.Scenario, r.Variant, r.Leaks = ann.ID, "side-channels", c.variant, 0
		r.Outcome = json.RawMessage(c.outcome)
		id, err := s.SaveRecording(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		want[id] = c.kind
	}
	check := func(name string, runs []RecordingSummary) {
		t.Helper()
		if len(runs) != len(want) {
			t.Fatalf("%s: %d runs, want %d", name, len(runs), len(want))
		}
		for _, r := range runs {
			if r.Kind != want[r.ID] {
				t.Errorf("%s: %s (%s) has kind %q, want %q", name, r.ID, r.Variant, r.Kind, want[r.ID])
			}
		}
	}
	listed, err := s.ListRecordings(ctx, lab)
	if err != nil {
		t.Fatal(err)
	}
	check("ListRecordings", listed)
	recent, err := s.RecentRecordings(ctx, RunsQuery{Lab: newLabID(), Learner: ann.ID, Scenario: "side-channels", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	check("RecentRecordings", recent)
	newest, err := s.NewestRecording(ctx, RecordingQuery{Lab: lab, Scenario: "side-channels", Variant: "truncate"})
	if err != nil {
		t.Fatal(err)
	}
	if newest.Kind != "breach" {
		t.Errorf("NewestRecording: kind %q, want breach", newest.Kind)
	}
}
