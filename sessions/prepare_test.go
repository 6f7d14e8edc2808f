package sessions_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// TestJoinBurstWithoutSparesNeverFails: twelve browsers ask for a lab at
// once with no spare ready and a short deadline each. No one is refused:
// a browser whose deadline passes is told its lab is being prepared, with
// how many are ahead, and asking again gets the same lab in the making
// until it is ready.
func TestJoinBurstWithoutSparesNeverFails(t *testing.T) {
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 20})
	const n = 12
	var wg sync.WaitGroup
	labs := make([]*sessions.Lab, n)
	preparing := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprintf("joiner-%d", i)
			deadline := time.Now().Add(2 * time.Minute)
			for time.Now().Before(deadline) {
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				l, err := m.Create(ctx, owner)
				cancel()
				if err == nil {
					labs[i] = l
					return
				}
				if rlslab.ErrorCode(err) != rlslab.EPREPARING {
					t.Errorf("%s: %v (want a lab or 'being prepared')", owner, err)
					return
				}
				preparing[i]++
			}
			t.Errorf("%s: no lab in 2 minutes", owner)
		}()
	}
	wg.Wait()
	told := 0
	seen := map[string]bool{}
	for i, l := range labs {
		if l == nil {
			continue
		}
		if seen[l.ID] {
			t.Errorf("lab %s handed out twice", l.ID)
		}
		seen[l.ID] = true
		if preparing[i] > 0 {
			told++
		}
	}
	if len(seen) != n {
		t.Fatalf("%d of %d joiners got a lab", len(seen), n)
	}
	if told == 0 {
		t.Error("no joiner was ever told its lab was being prepared: the test did not exercise the line")
	}
	if got := len(m.Labs()); got != n {
		t.Errorf("%d labs open, want %d", got, n)
	}
}

// TestPrepareBuildsForAWorkshop: a reservation raises the sandboxes kept
// ready, bounded by the labs that may still open; dropping it lowers the
// target again.
func TestPrepareBuildsForAWorkshop(t *testing.T) {
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 5})
	m.Prepare("workshop-1", 50)
	if r := m.Readiness(); r.Target != 5 {
		t.Fatalf("target %d after preparing for 50 with 5 labs allowed, want 5", r.Target)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for m.Readiness().Ready < 5 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if r := m.Readiness(); r.Ready != 5 {
		t.Fatalf("%d sandboxes ready, want 5", r.Ready)
	}
	start := time.Now()
	l, err := m.Create(context.Background(), "participant")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a prepared lab took %s", time.Since(start))
	if l == nil {
		t.Fatal("no lab")
	}
	m.Arrived("workshop-1")
	if r := m.Readiness(); r.Target != 4 {
		t.Errorf("target %d after one participant arrived, want 4", r.Target)
	}
	m.Prepare("workshop-1", 0)
	if r := m.Readiness(); r.Target != 0 {
		t.Errorf("target %d after the reservation was dropped, want 0", r.Target)
	}
}
