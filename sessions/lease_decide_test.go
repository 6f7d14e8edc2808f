package sessions

import (
	"testing"
	"time"
)

// TestDecideLeasesWithinWhatOthersLeave: the lease for runs never takes
// what the other instances hold, takes waiting runs in turn as they fit,
// keeps for another instance's starving run what it lacks, and gathers
// connections for this instance's own starving run.
func TestDecideLeasesWithinWhatOthersLeave(t *testing.T) {
	now := time.Now()
	old := now.Add(-time.Minute)
	recent := now.Add(-time.Second)
	const total, base = 87, 11
	for _, tc := range []struct {
		name   string
		q      queueSnapshot
		others []otherLease
		want   int
	}{
		{"alone, nothing waits", queueSnapshot{used: 17}, nil, 17},
		{"alone, two crowds wait", queueSnapshot{used: 17, needs: []int{17, 17}, oldest: recent, oldNeed: 17}, nil, 51},
		{"the other holds most", queueSnapshot{used: 0, needs: []int{17, 2}, oldest: recent, oldNeed: 17},
			[]otherLease{{conns: 11 + 40, used: 11 + 40}}, 19},
		{"the other holds nearly all: the small run fits", queueSnapshot{used: 0, needs: []int{17, 2}, oldest: recent, oldNeed: 17},
			[]otherLease{{conns: 11 + 60, used: 11 + 60}}, 2},
		{"the other's run starves: its shortfall is kept", queueSnapshot{used: 0, needs: []int{2}, oldest: recent, oldNeed: 2},
			[]otherLease{{conns: 11 + 50, used: 11 + 50, oldest: &old, oldNeed: 17}}, 0},
		{"this one's run starves: it gathers what frees up", queueSnapshot{used: 0, needs: []int{17, 2}, strict: true, oldest: old, oldNeed: 17},
			[]otherLease{{conns: 11 + 55, used: 11 + 55, oldest: &recent, oldNeed: 2}}, 10},
		{"never below what is used", queueSnapshot{used: 30}, []otherLease{{conns: 70, used: 70}}, 30},
	} {
		if got := decide(tc.q, tc.others, total, base, now); got != tc.want {
			t.Errorf("%s: lease %d, want %d", tc.name, got, tc.want)
		}
	}
}
