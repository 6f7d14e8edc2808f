package sessions

import (
	"context"
	"sync"

	"github.com/rlslab/rlslab"
)

// admission admits runs against the connection budget, first come first
// served: a run that does not fit waits in the queue, and every waiting run
// is told its place whenever the queue moves.
type admission struct {
	mu    sync.Mutex
	limit int
	used  int
	queue []*ticket
}

// ticket is one run waiting to be admitted.
type ticket struct {
	need  int
	ready chan struct{}
	// place is told how many runs wait ahead; it must not block.
	place func(ahead int)
}

func newAdmission(limit int) *admission { return &admission{limit: limit} }

// acquire waits until need connections of the budget are free and no run
// that came earlier still waits, then takes them. place is called with the
// number of runs ahead whenever that changes while the run waits (and not
// at all if it is admitted at once). It fails when ctx ends, or at once when
// need is more than the whole budget.
func (a *admission) acquire(ctx context.Context, need int, place func(ahead int)) error {
	a.mu.Lock()
	if need > a.limit {
		a.mu.Unlock()
		return rlslab.Errorf(rlslab.EUNAVAILABLE, "this run needs %d connections but rlslab's whole budget for runs is %d", need, a.limit)
	}
	if len(a.queue) == 0 && a.used+need <= a.limit {
		a.used += need
		a.mu.Unlock()
		return nil
	}
	t := &ticket{need: need, ready: make(chan struct{}), place: place}
	a.queue = append(a.queue, t)
	ahead := len(a.queue) - 1
	a.mu.Unlock()
	place(ahead)
	select {
	case <-t.ready:
		return nil
	case <-ctx.Done():
		a.mu.Lock()
		select {
		case <-t.ready: // admitted meanwhile: give the connections back
			a.used -= need
		default:
			for i, q := range a.queue {
				if q == t {
					a.queue = append(a.queue[:i:i], a.queue[i+1:]...)
					break
				}
			}
		}
		moved := a.admitLocked()
		a.mu.Unlock()
		tell(moved)
		return ctx.Err()
	}
}

// release gives need connections back and admits whoever now fits.
func (a *admission) release(need int) {
	a.mu.Lock()
	a.used -= need
	moved := a.admitLocked()
	a.mu.Unlock()
	tell(moved)
}

// admitLocked admits waiting runs from the head of the queue while they fit
// and returns the ones still waiting, to be told their new place.
func (a *admission) admitLocked() []*ticket {
	admitted := 0
	for len(a.queue) > 0 && a.used+a.queue[0].need <= a.limit {
		t := a.queue[0]
		a.queue = a.queue[1:]
		a.used += t.need
		close(t.ready)
		admitted++
	}
	if admitted == 0 {
		return nil
	}
	return append([]*ticket(nil), a.queue...)
}

// tell tells each waiting run its place.
func tell(waiting []*ticket) {
	for i, t := range waiting {
		t.place(i)
	}
}

// usage returns the connections held by admitted runs and the runs waiting.
func (a *admission) usage() (used, queued int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.used, len(a.queue)
}
