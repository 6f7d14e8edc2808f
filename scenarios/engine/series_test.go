package engine_test

import (
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// TestSeriesKeepsEveryChange checks that the pool time series keeps each
// change of the counts however fast they come (a run at full speed
// acquires and releases within milliseconds), moves a trailing point
// forward while nothing changes, and keeps its first point when it grows
// past its bound.
func TestSeriesKeepsEveryChange(t *testing.T) {
	tr := engine.NewTracker("lab", nil)
	tr.Begin("s", "v", "max")
	env := engine.NewEnv(engine.Sandbox{}, nil, tr, engine.NewPace(engine.Speed{Max: true}), nil)
	var cur engine.PoolCounts
	env.CountPool(func() engine.PoolCounts { return cur })
	set := func(total, idle, acquired int32) {
		cur = engine.PoolCounts{Max: 2, Total: total, Idle: idle, Acquired: acquired}
		env.Refresh(nil)
	}
	set(0, 0, 0)
	set(1, 0, 1)
	set(2, 0, 2)
	set(2, 1, 1)
	set(2, 2, 0)
	set(2, 2, 0)
	set(2, 2, 0)
	set(0, 0, 0)
	got := tr.Snapshot().Series
	var acquired []int32
	for _, s := range got {
		acquired = append(acquired, s.Acquired)
	}
	want := []int32{0, 1, 2, 1, 0, 0}
	if len(acquired) != len(want) {
		t.Fatalf("acquired over the series %v, want %v (every change; the unchanged readings only until the next change)", acquired, want)
	}
	for i := range want {
		if acquired[i] != want[i] {
			t.Fatalf("acquired over the series %v, want %v", acquired, want)
		}
	}
	for i := range int32(1000) {
		set(2, 2-i%3, i%3)
	}
	long := tr.Snapshot().Series
	if len(long) > 240 || long[0].Millis != got[0].Millis || long[len(long)-1].Acquired != 999%3 {
		t.Errorf("after 1000 changes: %d points, first at %d ms (was %d), last acquired %d", len(long), long[0].Millis, got[0].Millis, long[len(long)-1].Acquired)
	}
}
