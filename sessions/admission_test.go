package sessions

import (
	"context"
	"sync"
	"testing"
	"time"
)

// clock is a manual clock for the admission queue.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// queued starts acquire in a goroutine and returns a channel closed when it
// is admitted; it waits until the run is in the queue (told a place) or
// admitted.
func queued(t *testing.T, a *admission, client string, need int) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	placed := make(chan struct{}, 1)
	go func() {
		done <- a.acquire(context.Background(), client, need, func(int) {
			select {
			case placed <- struct{}{}:
			default:
			}
		})
	}()
	select {
	case <-placed:
	case err := <-done:
		done <- err
	case <-time.After(5 * time.Second):
		t.Fatalf("%s's run of %d neither queued nor admitted", client, need)
	}
	return done
}

// admitted reports whether the run has been admitted. Admission is
// decided under the queue's lock by the call that frees room, so a run not
// admitted by then is not admitted; one that is may take a moment to
// return from acquire.
func admitted(ch <-chan error) bool {
	select {
	case err := <-ch:
		return err == nil
	case <-time.After(200 * time.Millisecond):
		return false
	}
}

// TestSmallRunPassesAnotherClientsCrowds: one client queues eight crowd
// runs (17 connections each, 76 in the budget): four run, four wait. A
// learner's 2-connection run starts at once in the free connections
// instead of waiting behind them.
func TestSmallRunPassesAnotherClientsCrowds(t *testing.T) {
	a := newAdmission(76)
	var crowds []<-chan error
	for range 8 {
		crowds = append(crowds, queued(t, a, "script", 17))
	}
	n := 0
	for _, c := range crowds {
		if admitted(c) {
			n++
		}
	}
	if n != 4 {
		t.Fatalf("%d crowd runs admitted, want 4", n)
	}
	small := queued(t, a, "learner", 2)
	if !admitted(small) {
		t.Fatal("a 2-connection run waits behind another client's crowds while 8 connections are free")
	}
}

// TestSmallRunPassesCrowdsThatWaitedLong: another client's crowds that
// have waited starveAfter keep the freed connections from runs that come
// after them in turn, but not from a learner who holds no run: that
// learner's small run still starts at once in the free connections, while
// a later crowd of the same client does not pass the oldest.
func TestSmallRunPassesCrowdsThatWaitedLong(t *testing.T) {
	c := &clock{t: time.Unix(0, 0)}
	a := newAdmission(76)
	a.now = c.now
	var crowds []<-chan error
	for range 8 {
		crowds = append(crowds, queued(t, a, "script", 17))
	}
	running := 0
	for _, ch := range crowds {
		if admitted(ch) {
			running++
		}
	}
	if running != 4 {
		t.Fatalf("%d crowd runs admitted, want 4", running)
	}
	c.add(starveAfter)
	small := queued(t, a, "learner", 2)
	if !admitted(small) {
		t.Fatal("a learner's 2-connection run waits behind another client's crowds that waited starveAfter, while 8 connections are free")
	}
	// The same client's later small run comes after its oldest crowd in
	// turn: it does not pass it.
	late := queued(t, a, "script", 2)
	if admitted(late) {
		t.Fatal("the crowds' own client passed its crowd that has waited starveAfter")
	}
	a.release("script", 17)
	if used, q := a.usage(); used != 4*17+2 || q != 4 {
		t.Fatalf("usage %d used, %d queued; want %d, 4 (the oldest crowd in, the late run still out)", used, q, 4*17+2)
	}
}

// TestClientWithFewestRunsGoesFirst: when connections free up, a client
// that holds no run goes before a client that holds several, whatever the
// arrival order.
func TestClientWithFewestRunsGoesFirst(t *testing.T) {
	a := newAdmission(4)
	first := queued(t, a, "many", 2)
	second := queued(t, a, "many", 2)
	if !admitted(first) || !admitted(second) {
		t.Fatal("the first two runs should fit")
	}
	third := queued(t, a, "many", 2)  // waits, arrived first
	other := queued(t, a, "other", 2) // waits, holds nothing
	a.release("many", 2)
	if admitted(third) {
		t.Fatal("the client holding a run went before the one holding none")
	}
	if !admitted(other) {
		t.Fatal("the client holding no run was not admitted")
	}
	a.release("many", 2)
	if !admitted(third) {
		t.Fatal("the third run never started")
	}
}

// TestLargeRunIsNotStarved: small runs may pass a large waiting run only
// until it has waited starveAfter; then freed connections are kept for it.
func TestLargeRunIsNotStarved(t *testing.T) {
	c := &clock{t: time.Unix(0, 0)}
	a := newAdmission(10)
	a.now = c.now
	hold := queued(t, a, "a", 8)
	if !admitted(hold) {
		t.Fatal("first run should fit")
	}
	large := queued(t, a, "b", 10)
	small := queued(t, a, "c", 2)
	if !admitted(small) {
		t.Fatal("a small run that fits should pass a large one that does not")
	}
	c.add(starveAfter)
	a.release("c", 2)
	late := queued(t, a, "d", 2)
	if admitted(late) {
		t.Fatal("a small run passed a large one that has waited starveAfter")
	}
	a.release("a", 8)
	if !admitted(large) {
		t.Fatal("the large run did not start when the budget freed up")
	}
	if admitted(late) {
		t.Fatal("the small run started while the large one holds the whole budget")
	}
	a.release("b", 10)
	if !admitted(late) {
		t.Fatal("the small run never started")
	}
	if used, q := a.usage(); used != 2 || q != 0 {
		t.Fatalf("usage %d used, %d queued; want 2, 0", used, q)
	}
}

// TestCancelledWaitGivesNothingAway: a run whose context ends while it
// waits leaves the queue, and the budget is intact.
func TestCancelledWaitGivesNothingAway(t *testing.T) {
	a := newAdmission(2)
	if err := a.acquire(context.Background(), "x", 2, func(int) {}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	placed := make(chan struct{})
	errc := make(chan error, 1)
	go func() { errc <- a.acquire(ctx, "y", 1, func(int) { close(placed) }) }()
	<-placed
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("a cancelled wait was admitted")
	}
	a.release("x", 2)
	if used, q := a.usage(); used != 0 || q != 0 {
		t.Fatalf("usage %d used, %d queued; want 0, 0", used, q)
	}
}

// TestWouldWaitCountsTheQueue: a run would wait when the runs admitted and
// those already waiting leave it too little of the budget, even while the
// admitted ones alone leave enough (a burst of clicks: the first ones wait
// for a lease or the CPU, and the next must not count on their room).
func TestWouldWaitCountsTheQueue(t *testing.T) {
	a := newAdmission(4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.acquire(ctx, "first", 3, func(int) {}); err != nil {
		t.Fatal(err)
	}
	if a.wouldWait(1) {
		t.Fatal("with 1 of 4 free and nobody waiting, a run of 1 would wait")
	}
	queued := make(chan struct{})
	go func() {
		_ = a.acquire(ctx, "second", 3, func(int) { close(queued) })
	}()
	<-queued
	if !a.wouldWait(1) {
		t.Error("with 3 of 4 admitted and 3 waiting, a run of 1 would not wait")
	}
}
