package sessions

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// backoff is the pause between tries of a retry loop: it starts at min,
// doubles after every failure up to max, and starts over after a success.
type backoff struct {
	min, max time.Duration
	next     time.Duration
}

// wait pauses for the current delay (or until ctx ends, then it reports
// false) and doubles the next one.
func (b *backoff) wait(ctx context.Context) bool {
	if b.next < b.min {
		b.next = b.min
	}
	t := time.NewTimer(b.next)
	defer t.Stop()
	b.next = min(b.next*2, b.max)
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// delay returns the pause the next wait takes.
func (b *backoff) delay() time.Duration { return max(b.next, b.min) }

// reset makes the next wait the shortest again.
func (b *backoff) reset() { b.next = b.min }

// failLogEvery is how often a recurring failure is logged.
const failLogEvery = 10 * time.Second

// failureLog logs a recurring failure at most once per interval (by its
// message), with how often it happened since the last line: an outage
// costs a few lines a minute, not one per try.
type failureLog struct {
	log   *slog.Logger
	every time.Duration

	mu     sync.Mutex
	last   map[string]time.Time
	missed map[string]int
}

// newFailureLog returns a failure log on log, one line per message at
// most every interval.
func newFailureLog(log *slog.Logger, every time.Duration) *failureLog {
	return &failureLog{log: log, every: every, last: map[string]time.Time{}, missed: map[string]int{}}
}

// Warn logs msg with args at warning level, unless msg was logged less
// than an interval ago: then it only counts it.
func (f *failureLog) Warn(msg string, args ...any) {
	now := time.Now()
	f.mu.Lock()
	if at, ok := f.last[msg]; ok && now.Sub(at) < f.every {
		f.missed[msg]++
		f.mu.Unlock()
		return
	}
	n := f.missed[msg]
	f.last[msg], f.missed[msg] = now, 0
	f.mu.Unlock()
	if n > 0 {
		args = append(args, "repeated_since_last_logged", n)
	}
	f.log.Warn(msg, args...)
}
