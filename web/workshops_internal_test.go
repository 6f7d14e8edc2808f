package web

import (
	"fmt"
	"testing"
	"time"

	"github.com/rlslab/rlslab/sessions"
)

func TestJoinLimiterWindow(t *testing.T) {
	l := newJoinLimiter()
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	for i := range joinFailures {
		if l.blocked("10.0.0.1", t0) {
			t.Fatalf("blocked after %d failures", i)
		}
		l.fail("10.0.0.1", t0.Add(time.Duration(i)*time.Second))
	}
	if !l.blocked("10.0.0.1", t0.Add(30*time.Second)) {
		t.Error("not blocked after joinFailures failures in the window")
	}
	if l.blocked("10.0.0.2", t0.Add(30*time.Second)) {
		t.Error("another address is blocked")
	}
	if l.blocked("10.0.0.1", t0.Add(joinWindow)) {
		t.Error("still blocked once the window is over")
	}
	l.fail("10.0.0.1", t0.Add(joinWindow))
	if l.blocked("10.0.0.1", t0.Add(joinWindow+time.Second)) {
		t.Error("one failure in a new window blocks")
	}
}

// TestJoinLimiterNotSwitchedOffByVolume fails once from each of
// joinClients addresses: a new address is then refused at once (all
// addresses together have used up their failures), and, with that bucket
// out of the way, a new address is still counted and blocked after
// joinFailures (the oldest address is forgotten instead).
func TestJoinLimiterNotSwitchedOffByVolume(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	addr := func(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255) }

	l := newJoinLimiter()
	for i := range joinClients {
		l.fail(addr(i), t0)
	}
	if !l.blocked("192.0.2.1", t0) {
		t.Error("a new address may guess after wrong codes from 10,000 addresses")
	}
	if l.blocked("192.0.2.1", t0.Add(joinWindow)) {
		t.Error("still blocked a minute later")
	}

	l = newJoinLimiter()
	l.burst, l.tokens = 1e9, 1e9 // only the per-address table counts
	for i := range joinClients {
		l.fail(addr(i), t0.Add(time.Duration(i)*time.Microsecond))
	}
	now := t0.Add(time.Second)
	for i := range joinFailures {
		if l.blocked("192.0.2.1", now) {
			t.Fatalf("the new address is blocked after %d failures", i)
		}
		l.fail("192.0.2.1", now)
	}
	if !l.blocked("192.0.2.1", now) {
		t.Error("a new address is not counted once 10,000 addresses are remembered")
	}
	if n := l.order.Len(); n != joinClients || len(l.clients) != joinClients {
		t.Errorf("remembers %d addresses (%d in order), want at most %d", len(l.clients), n, joinClients)
	}
	if _, ok := l.clients[addr(0)]; ok {
		t.Error("the address with the oldest window is still remembered")
	}
}

func TestRecordingCacheKeepsTheNewest(t *testing.T) {
	c := newRecordingCache()
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		c.put(recordingWithID(id))
	}
	if _, ok := c.get("a"); ok {
		t.Error("the oldest recording is still cached")
	}
	if _, ok := c.get("b"); !ok { // b becomes the newest
		t.Fatal("b is not cached")
	}
	c.put(recordingWithID("f"))
	for id, want := range map[string]bool{"b": true, "c": false, "d": true, "e": true, "f": true} {
		if _, ok := c.get(id); ok != want {
			t.Errorf("%s cached: %t, want %t", id, ok, want)
		}
	}
}

func recordingWithID(id string) sessions.Recording { return sessions.Recording{ID: id} }
