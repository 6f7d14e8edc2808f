package store

import (
	"slices"
	"testing"
	"time"

	"github.com/rlslab/rlslab"
)

// TestRecentRecordings lists a learner's runs across the labs they had:
// after their first lab is gone, the runs made in it are still theirs,
// newest first, beside the new lab's; another learner's runs, in a lab of
// their own, are not.
func TestRecentRecordings(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := newStore(t)
	ann, _, err := s.CreateLearner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bob, _, err := s.CreateLearner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	save := func(lab, learner, scenario string, at time.Duration) string {
		t.Helper()
		r := testRecording(lab, now.Add(at), 1, 10)
		r.Learner, r.Scenario = learner, scenario
		id, err := s.SaveRecording(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	old, lab, bobs := newLabID(), newLabID(), newLabID()
	first := save(old, ann.ID, "set-leak", -3*time.Minute)
	second := save(old, ann.ID, "split-calls", -2*time.Minute)
	third := save(lab, ann.ID, "set-leak", -time.Minute)
	bobsRun := save(bobs, bob.ID, "set-leak", 0)
	unknown := save(lab, "", "set-leak", -90*time.Second) // made in the lab, learner unknown

	ids := func(q RunsQuery) []string {
		t.Helper()
		runs, err := s.RecentRecordings(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		out := []string{}
		for _, r := range runs {
			out = append(out, r.ID)
		}
		return out
	}
	for _, c := range []struct {
		name string
		q    RunsQuery
		want []string
	}{
		{"Ann's, in both labs", RunsQuery{Lab: lab, Learner: ann.ID, Limit: 10}, []string{third, unknown, second, first}},
		{"Ann's set-leak runs", RunsQuery{Lab: lab, Learner: ann.ID, Scenario: "set-leak", Limit: 10}, []string{third, unknown, first}},
		{"the newest two", RunsQuery{Lab: lab, Learner: ann.ID, Limit: 2}, []string{third, unknown}},
		{"the lab's alone", RunsQuery{Lab: lab, Limit: 10}, []string{third, unknown}},
		{"the gone lab's alone", RunsQuery{Lab: old, Limit: 10}, []string{second, first}},
		{"a new lab of Bob's", RunsQuery{Lab: newLabID(), Learner: bob.ID, Limit: 10}, []string{bobsRun}},
	} {
		if got := ids(c.q); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	for _, q := range []RunsQuery{{Lab: "", Limit: 1}, {Lab: "a b", Limit: 1}, {Lab: lab, Limit: 0}, {Lab: lab, Limit: MaxRecentRuns + 1},
		{Lab: lab, Learner: "no body", Limit: 1}, {Lab: lab, Scenario: "Set Leak", Limit: 1}} {
		if _, err := s.RecentRecordings(ctx, q); rlslab.ErrorCode(err) != rlslab.EINVALID {
			t.Errorf("%+v: %v, want EINVALID", q, err)
		}
	}
}
