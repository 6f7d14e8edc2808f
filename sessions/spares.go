package sessions

import (
	"context"
	"sync"
	"time"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// spares keeps sandboxes built in advance, so that a new lab is ready at
// once. Its target is the configured number plus what workshops have
// reserved for the participants they expect. A lab asked for when none is
// ready waits in line for the next one built, in order of asking; MaintConns
// builders work at once, each building one sandbox after another while the
// line or the target wants more.
type spares struct {
	srv  *labServer
	base int // Config.Spares
	max  int // no more sandboxes than this are kept ready or reserved

	mu       sync.Mutex
	ready    []engine.Sandbox
	waiting  []*sandboxWait // in order of asking
	reserved map[string]int // by workshop (or other key)
	building int
	changed  chan struct{} // closed and replaced whenever there is work
}

// sandboxWait is one lab waiting for a sandbox.
type sandboxWait struct {
	got chan engine.Sandbox // buffered: the builder never blocks on it
}

func newSpares(srv *labServer, base, max int) *spares {
	return &spares{srv: srv, base: base, max: max, reserved: map[string]int{}, changed: make(chan struct{})}
}

// wakeLocked tells the builders that there may be work.
func (s *spares) wakeLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// targetLocked is how many sandboxes should be ready, not counting the
// labs waiting in line.
func (s *spares) targetLocked() int {
	t := s.base
	for _, n := range s.reserved {
		t += n
	}
	return min(t, s.max)
}

// wantLocked is how many more sandboxes to start building.
func (s *spares) wantLocked() int {
	return s.targetLocked() + len(s.waiting) - len(s.ready) - s.building
}

// reserve sets how many sandboxes key wants kept ready (a workshop: the
// participants it still expects); 0 removes the reservation.
func (s *spares) reserve(key string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 {
		delete(s.reserved, key)
	} else {
		s.reserved[key] = n
	}
	s.wakeLocked()
}

// shrink lowers key's reservation by one (one of those it was made for
// has come).
func (s *spares) shrink(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reserved[key] <= 1 {
		delete(s.reserved, key)
		return
	}
	s.reserved[key]--
}

// keys returns the keys that hold reservations.
func (s *spares) keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.reserved))
	for k := range s.reserved {
		out = append(out, k)
	}
	return out
}

// reservedFor returns how many sandboxes key has reserved.
func (s *spares) reservedFor(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reserved[key]
}

// status returns how many sandboxes are ready, how many are wanted ready
// (the target), and how many labs wait in line for one.
func (s *spares) status() (ready, target, waiting int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ready), s.targetLocked(), len(s.waiting)
}

// count returns how many sandboxes are ready.
func (s *spares) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ready)
}

// take returns a ready sandbox at once, or waits in line for the next one
// built (telling place how many labs wait ahead, whenever that changes)
// until ctx ends. ready reports whether it came from the spares without
// waiting.
func (s *spares) take(ctx context.Context, place func(ahead int)) (sb engine.Sandbox, ready bool, err error) {
	s.mu.Lock()
	if len(s.ready) > 0 && len(s.waiting) == 0 {
		sb = s.ready[0]
		s.ready = s.ready[1:]
		s.wakeLocked() // the target may want it replaced
		s.mu.Unlock()
		return sb, true, nil
	}
	w := &sandboxWait{got: make(chan engine.Sandbox, 1)}
	s.waiting = append(s.waiting, w)
	ahead := len(s.waiting) - 1
	s.wakeLocked()
	s.mu.Unlock()
	if place != nil {
		place(ahead)
	}
	select {
	case sb := <-w.got:
		return sb, false, nil
	case <-ctx.Done():
		s.mu.Lock()
		defer s.mu.Unlock()
		select {
		case sb := <-w.got: // handed over meanwhile: keep it for the next
			s.ready = append(s.ready, sb)
		default:
			for i, q := range s.waiting {
				if q == w {
					s.waiting = append(s.waiting[:i:i], s.waiting[i+1:]...)
					break
				}
			}
		}
		return engine.Sandbox{}, false, ctx.Err()
	}
}

// deliver hands a built sandbox to the first lab in line, or keeps it ready;
// beyond the target it reports false (the caller drops it).
func (s *spares) deliver(sb engine.Sandbox) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.waiting) > 0 {
		w := s.waiting[0]
		s.waiting = s.waiting[1:]
		w.got <- sb
		return true
	}
	if len(s.ready) < s.targetLocked() {
		s.ready = append(s.ready, sb)
		return true
	}
	return false
}

// start starts MaintConns builders, counted in wg, that run until ctx
// ends. A failure (the database down) backs off, up to refillMaxBackoff
// between tries, and is logged once per failLogEvery.
func (s *spares) start(ctx context.Context, wg *sync.WaitGroup) {
	bmu := &sync.Mutex{}
	b := &backoff{min: refillMinBackoff, max: refillMaxBackoff}
	for range MaintConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				s.mu.Lock()
				if s.wantLocked() <= 0 {
					changed := s.changed
					s.mu.Unlock()
					select {
					case <-ctx.Done():
						return
					case <-changed:
					}
					continue
				}
				s.building++
				ready, target := len(s.ready), s.targetLocked()
				s.mu.Unlock()
				s.srv.m.log.Debug("building spare sandboxes", "ready", ready, "want", target)
				// A build is never cut off half-way (it has a deadline of
				// its own); a closing manager drops what it made.
				sb, err := s.srv.newSandbox(context.WithoutCancel(ctx))
				s.mu.Lock()
				s.building--
				s.mu.Unlock()
				if err == nil {
					if !s.deliver(sb) {
						s.srv.dropQuietly(sb.Lab)
					}
					bmu.Lock()
					b.reset()
					bmu.Unlock()
					continue
				}
				if ctx.Err() != nil {
					return
				}
				bmu.Lock()
				delay := b.delay()
				b.next = min(delay*2, b.max)
				bmu.Unlock()
				s.srv.m.fails.Warn("spare sandboxes: build failed; retrying", "err", err, "in", delay)
				t := time.NewTimer(delay)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
		}()
	}
}

// Pauses between failed rounds of building spares.
const (
	refillMinBackoff = 500 * time.Millisecond
	refillMaxBackoff = 30 * time.Second
)

// takeAll empties the spares and returns their lab ids (at shutdown, to
// be dropped).
func (s *spares) takeAll() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.ready))
	for _, sb := range s.ready {
		ids = append(ids, sb.Lab)
	}
	s.ready = nil
	return ids
}

// errPreparing is returned by Create while a lab waits in line for a
// sandbox beyond its caller's deadline; the lab is still being made.
func errPreparing(ahead int) error {
	if ahead <= 0 {
		return rlslab.Errorf(rlslab.EPREPARING, "your lab is being prepared; it is next")
	}
	return rlslab.Errorf(rlslab.EPREPARING, "your lab is being prepared: %d ahead of you", ahead)
}
