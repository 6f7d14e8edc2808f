package web

import (
	"container/list"
	"sync"
	"time"

	"github.com/rlslab/rlslab"
)

// Join code limits. A client (by IP address) may fail joinFailures times in
// joinWindow; then every try is 429 until its window ends. A room often
// shares one public address, so the limit allows a roomful of typos; at 30
// tries a minute the 31^6 codes would still take decades to walk.
//
// Addresses are many, though: the limiter remembers at most joinClients of
// them (a new one replaces the one whose window is oldest), and all
// addresses together may fail at most joinGlobalBurst times at once and
// joinGlobalRate times a second after that. Past that every try is 429,
// however many addresses it comes from.
const (
	joinFailures    = 30
	joinWindow      = time.Minute
	joinClients     = 10000
	joinGlobalBurst = 600
	joinGlobalRate  = 10.0 // failures a second, for all addresses together
)

// joinLimiter counts failed join codes per client in fixed windows, and
// for all clients in a token bucket.
type joinLimiter struct {
	mu      sync.Mutex
	clients map[string]*list.Element // of *joinWindowCount, in order
	order   *list.List               // the clients, oldest window first
	max     int                      // clients remembered at most
	burst   float64                  // failures all clients may make at once
	rate    float64                  // failures a second all clients earn back
	tokens  float64                  // failures all clients may still make
	filled  time.Time                // when tokens was last refilled
}

// joinWindowCount is one client's failures since its window started.
type joinWindowCount struct {
	ip    string
	start time.Time
	fails int
}

// newJoinLimiter returns a limiter that remembers no client yet.
func newJoinLimiter() *joinLimiter {
	return &joinLimiter{clients: map[string]*list.Element{}, order: list.New(), max: joinClients,
		burst: joinGlobalBurst, rate: joinGlobalRate, tokens: joinGlobalBurst}
}

// refill adds the failures earned since the last refill; callers hold mu.
func (l *joinLimiter) refill(now time.Time) {
	if !l.filled.IsZero() && now.After(l.filled) {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.filled).Seconds()*l.rate)
	}
	if l.filled.IsZero() || now.After(l.filled) {
		l.filled = now
	}
}

// check returns ETOOMANY when ip has used up its failures in the current
// window, or all clients together have used up theirs.
func (l *joinLimiter) check(ip string, now time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refill(now)
	if l.tokens < 1 {
		return rlslab.Errorf(rlslab.ETOOMANY, "too many wrong join codes were tried on this server lately: wait a minute and try again")
	}
	if e := l.clients[ip]; e != nil {
		c := e.Value.(*joinWindowCount)
		if now.Sub(c.start) < joinWindow && c.fails >= joinFailures {
			return rlslab.Errorf(rlslab.ETOOMANY, "too many wrong join codes from your address: wait a minute and try again")
		}
	}
	return nil
}

// blocked reports whether check refuses ip.
func (l *joinLimiter) blocked(ip string, now time.Time) bool { return l.check(ip, now) != nil }

// fail counts one failure of ip.
func (l *joinLimiter) fail(ip string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refill(now)
	l.tokens = max(0, l.tokens-1)
	e := l.clients[ip]
	switch {
	case e == nil:
		if l.order.Len() >= l.max {
			oldest := l.order.Front()
			delete(l.clients, oldest.Value.(*joinWindowCount).ip)
			l.order.Remove(oldest)
		}
		e = l.order.PushBack(&joinWindowCount{ip: ip, start: now})
		l.clients[ip] = e
	case now.Sub(e.Value.(*joinWindowCount).start) >= joinWindow:
		c := e.Value.(*joinWindowCount)
		c.start, c.fails = now, 0
		l.order.MoveToBack(e)
	}
	e.Value.(*joinWindowCount).fails++
}
