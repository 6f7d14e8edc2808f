package views

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// crowdState returns a state with n requests of three tenants, the last
// one still in flight.
func crowdState(n int) engine.State {
	st := engine.State{Lab: "ab12cd34", Scenario: "shared-pool", Variant: "shared", Status: engine.StatusRunning}
	names := []string{"1", "2", "3"}
	for i := range n {
		t, seen := names[i%3], names[i%3]
		r := engine.RequestRow{Seq: i + 1, Tenant: &t, SeenTenant: &seen, Pattern: engine.PatternTxLocal, PID: uint32(4000 + i%10),
			Role: "lab_ab12cd34_app", Rows: 3, FinishedAt: int64(1700000000000 + i)}
		if i == n-1 {
			r.FinishedAt, r.SeenTenant, r.Rows = 0, nil, 0
		}
		st.Requests = append(st.Requests, r)
	}
	return st
}

// TestRowCacheRendersWhatFramePartsRenders renders a run's frames with and
// without the cache: every frame must be the same, byte for byte, while a
// row finishes, a finished row changes, and old rows leave the log.
func TestRowCacheRendersWhatFramePartsRenders(t *testing.T) {
	c := NewRowCache()
	st := crowdState(30)
	same := func(step string) {
		t.Helper()
		v := NewFrame(st, tenants)
		want, err := FrameParts(v)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.FrameParts(v)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d parts, want %d", step, len(got), len(want))
		}
		for i := range want {
			if got[i].ID != want[i].ID || !bytes.Equal(got[i].HTML, want[i].HTML) {
				t.Fatalf("%s: part %s differs:\n got %s\nwant %s", step, want[i].ID, got[i].HTML, want[i].HTML)
			}
		}
	}
	same("first frame")
	same("the same state again")
	last := &st.Requests[len(st.Requests)-1]
	seen := "1"
	last.FinishedAt, last.SeenTenant, last.Rows, last.ForeignRows, last.Leak = 1700000009999, &seen, 3, 3, true
	same("the last row finished with a leak")
	st.Requests[3].Why = "another reason"
	st.Requests[4].Error, st.Requests[4].SQLState = "permission denied", "42501"
	same("two finished rows changed")
	st.Requests = st.Requests[10:]
	same("old rows dropped")
	if n := len(c.rows); n != len(st.Requests) {
		t.Errorf("the cache keeps %d rows, the log has %d", n, len(st.Requests))
	}
	st.Lab = "ffff0000"
	same("another lab's roles")
}

// BenchmarkFrameParts renders a 400-request crowd frame after one more row
// finished, with and without the row cache, side by side.
func BenchmarkFrameParts(b *testing.B) {
	for _, cached := range []bool{false, true} {
		b.Run(fmt.Sprintf("cache=%v", cached), func(b *testing.B) {
			st := crowdState(400)
			var c *RowCache
			if cached {
				c = NewRowCache()
				if _, err := c.FrameParts(NewFrame(st, tenants)); err != nil {
					b.Fatal(err)
				}
			}
			for b.Loop() {
				if _, err := c.FrameParts(NewFrame(st, tenants)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
