package sessions

import (
	"context"
	"time"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// spares keeps sandboxes built in advance, so that a new lab is ready at
// once; a background goroutine refills it, several sandboxes at a time.
type spares struct {
	m     *Manager
	ready chan engine.Sandbox
	taken chan struct{} // a value after each take: time to refill
}

func newSpares(m *Manager, n int) *spares {
	return &spares{m: m, ready: make(chan engine.Sandbox, n), taken: make(chan struct{}, 1)}
}

// take returns a ready sandbox, if there is one.
func (s *spares) take() (engine.Sandbox, bool) {
	select {
	case sb := <-s.ready:
		select {
		case s.taken <- struct{}{}:
		default:
		}
		return sb, true
	default:
		return engine.Sandbox{}, false
	}
}

// count returns how many sandboxes are ready.
func (s *spares) count() int { return len(s.ready) }

// refill keeps the spares full until ctx ends, building up to MaintConns
// sandboxes at once. A failure (the database down) backs off, up to
// refillMaxBackoff between tries, and is logged once per failLogEvery.
func (s *spares) refill(ctx context.Context) {
	if cap(s.ready) == 0 {
		return
	}
	b := backoff{min: refillMinBackoff, max: refillMaxBackoff}
	for ctx.Err() == nil {
		missing := min(cap(s.ready)-len(s.ready), MaintConns)
		if missing == 0 {
			select {
			case <-ctx.Done():
				return
			case <-s.taken:
			}
			continue
		}
		s.m.log.Debug("building spare sandboxes", "count", missing, "ready", len(s.ready), "want", cap(s.ready))
		// At most MaintConns at once: each needs a maintenance
		// connection, and the loop comes back for the rest.
		built := make(chan error, missing)
		for range missing {
			go func() {
				// A build is never cut off half-way (it has a deadline of
				// its own); a closing manager drains it.
				sb, err := s.m.newSandbox(context.WithoutCancel(ctx))
				if err == nil {
					select {
					case s.ready <- sb:
					default: // full meanwhile
						s.m.dropQuietly(sb.Lab)
					}
				}
				built <- err
			}()
		}
		var failed error
		for range missing {
			if err := <-built; err != nil && failed == nil {
				failed = err
			}
		}
		if failed == nil {
			b.reset()
			continue
		}
		if ctx.Err() != nil {
			return
		}
		s.m.fails.Warn("spare sandboxes: build failed; retrying", "err", failed, "in", b.delay())
		if !b.wait(ctx) {
			return
		}
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
	var ids []string
	for {
		select {
		case sb := <-s.ready:
			ids = append(ids, sb.Lab)
		default:
			return ids
		}
	}
}
