package web

import (
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
