package sessions

import (
	"context"
	"sync"
	"time"

	"github.com/rlslab/rlslab"
)

// starveAfter is how long the oldest waiting run may be passed over by
// runs that fit in the free connections; after that nothing passes it, so
// every run eventually starts.
const starveAfter = 20 * time.Second

// admission admits runs against the connection budget. It is fair in two
// ways. A run that fits in the free connections starts at once even when a
// larger run waits ahead of it (until that larger run has waited
// starveAfter; then the connections are kept for it, except from the runs
// of clients that hold fewer runs than its own). And among waiting
// runs, the client that holds the fewest admitted runs goes first, so one
// client with many labs cannot starve another; between clients holding as
// many, the earlier run goes first. Every waiting run is told its place
// whenever the queue moves.
type admission struct {
	mu      sync.Mutex
	limit   int
	used    int
	queue   []*ticket      // in arrival order
	running map[string]int // admitted runs per client
	now     func() time.Time
	shared  leased // the server's budget shared with other instances (lease.go); zero: not shared
}

// ticket is one run waiting to be admitted.
type ticket struct {
	need   int
	client string
	since  time.Time
	ready  chan struct{}
	// place is told how many runs wait ahead; it must not block.
	place func(ahead int)
	// mu orders place against admission: once admitted, the run is told no
	// place, so a late tell cannot show an admitted run as queued.
	mu       sync.Mutex
	admitted bool
	// fresh marks a run that has not yet been put to the shared budget
	// (lease.go): it is told no place until it has. elsewhere counts the
	// runs waiting at other instances since before this one.
	fresh     bool
	elsewhere int
}

func newAdmission(limit int) *admission {
	return &admission{limit: limit, running: make(map[string]int), now: time.Now}
}

// acquire waits until need connections of the budget are free and it is
// this run's turn (see admission), then takes them for client (the learner
// who asked; "" is one anonymous client). place is called with the number
// of runs ahead whenever that changes while the run waits (and not at all
// if it is admitted at once). It fails when ctx ends, or at once when need
// is more than the whole budget.
func (a *admission) acquire(ctx context.Context, client string, need int, place func(ahead int)) error {
	a.mu.Lock()
	if need > a.limit {
		a.mu.Unlock()
		return rlslab.Errorf(rlslab.EUNAVAILABLE, "this run needs %d connections but rlslab's whole budget for runs is %d", need, a.limit)
	}
	t := &ticket{need: need, client: client, since: a.now(), ready: make(chan struct{}), place: place, fresh: a.shared.on}
	a.queue = append(a.queue, t)
	waiting := a.admitLocked()
	a.mu.Unlock()
	tell(waiting)
	a.shared.poke()
	select {
	case <-t.ready:
		return nil
	case <-ctx.Done():
		a.mu.Lock()
		select {
		case <-t.ready: // admitted meanwhile: give the connections back
			a.used -= need
			a.doneLocked(client)
		default:
			for i, q := range a.queue {
				if q == t {
					a.queue = append(a.queue[:i:i], a.queue[i+1:]...)
					break
				}
			}
		}
		waiting := a.admitLocked()
		a.mu.Unlock()
		tell(waiting)
		a.shared.poke()
		return ctx.Err()
	}
}

// release gives an admitted run's need connections back and admits
// whoever now fits.
func (a *admission) release(client string, need int) {
	a.mu.Lock()
	a.used -= need
	a.doneLocked(client)
	waiting := a.admitLocked()
	a.mu.Unlock()
	tell(waiting)
	a.shared.poke()
}

// doneLocked counts one admitted run of client less.
func (a *admission) doneLocked(client string) {
	if a.running[client] <= 1 {
		delete(a.running, client)
		return
	}
	a.running[client]--
}

// order returns the waiting tickets in the order they are to be admitted:
// fewest admitted runs of the same client first, then arrival.
func (a *admission) order() []*ticket {
	out := append([]*ticket(nil), a.queue...)
	// Insertion sort: stable, and queues are short.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && a.running[out[j].client] < a.running[out[j-1].client]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// admitLocked admits waiting runs in turn while connections are free and
// returns the ones still waiting, in turn order, to be told their place.
func (a *admission) admitLocked() []*ticket {
	for {
		order := a.order()
		if len(order) == 0 {
			return nil
		}
		// The oldest waiting run, once it has waited starveAfter, is not
		// passed by any run that comes after it in turn: the connections
		// that free up are kept for it. Runs of clients that hold fewer
		// runs than its own come before it in turn and may still start in
		// the free connections, so that one client's waiting crowds cannot
		// hold back another learner; its own client's runs end, so its turn
		// comes.
		oldest := a.queue[0]
		strict := a.now().Sub(oldest.since) >= starveAfter
		var next *ticket
		for _, t := range order {
			if a.used+t.need <= a.capLocked() {
				next = t
				break
			}
			if strict && t == oldest {
				break
			}
		}
		if next == nil {
			a.countElsewhereLocked(order)
			return order
		}
		for i, q := range a.queue {
			if q == next {
				a.queue = append(a.queue[:i:i], a.queue[i+1:]...)
				break
			}
		}
		a.used += next.need
		a.running[next.client]++
		next.mu.Lock()
		next.admitted = true
		next.mu.Unlock()
		close(next.ready)
	}
}

// tell tells each run still waiting its place; a run admitted since the
// list was made is skipped.
func tell(waiting []*ticket) {
	for i, t := range waiting {
		t.mu.Lock()
		if !t.admitted && !t.fresh {
			t.place(i + t.elsewhere)
		}
		t.mu.Unlock()
	}
}

// wouldWait reports whether a run that needs need connections would have to
// wait for them now: the runs admitted and those already waiting leave less
// than need of the budget (with a shared budget, of what the other
// instances leave; the lease itself grows on demand within it).
func (a *admission) wouldWait(need int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	capacity := a.limit
	if a.shared.on {
		capacity = min(a.limit, a.shared.room)
	}
	taken := a.used
	for _, t := range a.queue {
		taken += t.need
	}
	return taken+need > capacity
}

// usage returns the connections held by admitted runs and the runs waiting.
func (a *admission) usage() (used, queued int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.used, len(a.queue)
}
