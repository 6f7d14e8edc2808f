package live_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rlslab/rlslab/web/live"
)

// counter is a watched thing whose state is a version number; its frames
// are the version. It checks that the hub never renders two frames at once
// and never runs two refreshes at once.
type counter struct {
	t *testing.T

	mu      sync.Mutex
	version int
	subs    map[chan struct{}]bool
	subbed  int // Changes calls not yet stopped

	framed    int // the version Frame returned last; -1 before the first
	inFrame   atomic.Int32
	inRefresh atomic.Int32
	refreshes atomic.Int32
	refresh   chan struct{} // when set, Refresh waits for it
	entered   chan struct{} // when set, Refresh tells it has begun
	// gate, when set (under mu), holds Frame until it is closed, after
	// Frame tells rendering.
	gate      chan struct{}
	rendering chan struct{}
	done      chan struct{}
}

func newCounter(t *testing.T) *counter {
	return &counter{t: t, subs: map[chan struct{}]bool{}, framed: -1, done: make(chan struct{})}
}

// bump changes the state and signals the change.
func (c *counter) bump() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.version++
	for ch := range c.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	return c.version
}

func (c *counter) Changes() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	c.subs[ch] = true
	c.subbed++
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.subs, ch)
		c.subbed--
		c.mu.Unlock()
	}
}

func (c *counter) Done() <-chan struct{} { return c.done }

func (c *counter) Frame(context.Context) (int, bool) {
	if c.inFrame.Add(1) != 1 {
		c.t.Error("two frames rendered at once")
	}
	defer c.inFrame.Add(-1)
	c.mu.Lock()
	v, gate := c.version, c.gate
	c.mu.Unlock()
	if gate != nil {
		c.rendering <- struct{}{}
		<-gate
	}
	if v == c.framed {
		return 0, false
	}
	c.framed = v
	return v, true
}

func (c *counter) Refresh(ctx context.Context) {
	if c.inRefresh.Add(1) != 1 {
		c.t.Error("two refreshes at once")
	}
	defer c.inRefresh.Add(-1)
	c.refreshes.Add(1)
	if c.entered != nil {
		select {
		case c.entered <- struct{}{}:
		default:
		}
	}
	if c.refresh != nil {
		select {
		case <-c.refresh:
		case <-ctx.Done():
		}
	}
}

func (c *counter) subscribed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.subbed
}

// hubsOf returns hubs over the one thing c, closed when the test ends.
func hubsOf(t *testing.T, c *counter, opts live.Options) *live.Hubs[string, int] {
	hs := live.NewHubs(func(string) live.Source[int] { return c }, opts, nil)
	t.Cleanup(hs.Close)
	return hs
}

// next returns w's next frame; the test fails when none comes within 10 s
// or the watcher is done.
func next(t *testing.T, w *live.Watcher[int]) int {
	t.Helper()
	select {
	case v := <-w.Frames():
		return v
	case <-w.Done():
		t.Fatal("watcher done while waiting for a frame")
	case <-time.After(10 * time.Second):
		t.Fatal("no frame within 10 s")
	}
	return 0
}

// until reads w's frames until one is at least version want, checking
// that versions never go back; it returns the frames read.
func until(t *testing.T, w *live.Watcher[int], prev, want int) int {
	t.Helper()
	n := 0
	for prev < want {
		v := next(t, w)
		if v < prev {
			t.Fatalf("frame %d after frame %d", v, prev)
		}
		prev = v
		n++
	}
	return n
}

func TestFirstFrameIsTheCurrentState(t *testing.T) {
	c := newCounter(t)
	c.version = 7
	hs := hubsOf(t, c, live.Options{})
	w := hs.Watch("lab")
	defer w.Close()
	if v := next(t, w); v != 7 {
		t.Fatalf("first frame %d, want 7", v)
	}
	c.bump()
	if v := next(t, w); v != 8 {
		t.Fatalf("frame after a change %d, want 8", v)
	}
}

// TestNewWatcherNeverGetsAnOlderFrame: while the state changes all the
// time, watchers come and go; each one's frames only go forward, its first
// frame is at least the version every watcher had when it came, and every
// watcher still there ends on the last version.
func TestNewWatcherNeverGetsAnOlderFrame(t *testing.T) {
	c := newCounter(t)
	hs := hubsOf(t, c, live.Options{Interval: time.Millisecond})
	anchor := hs.Watch("lab") // keeps the hub alive throughout
	defer anchor.Close()
	next(t, anchor)

	const changes = 2000
	stop := make(chan struct{})
	go func() {
		defer close(stop)
		for range changes {
			c.bump()
		}
	}()
	var seen atomic.Int64 // the highest version any watcher was handed
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				floor := int(seen.Load())
				w := hs.Watch("lab")
				first := next(t, w)
				if first < floor {
					t.Errorf("a new watcher's first frame is %d, older than %d handed out before it came", first, floor)
				}
				prev := first
				for range 3 {
					select {
					case v := <-w.Frames():
						if v < prev {
							t.Errorf("frame %d after frame %d", v, prev)
						}
						prev = v
					default:
					}
				}
				for {
					s := seen.Load()
					if int64(prev) <= s || seen.CompareAndSwap(s, int64(prev)) {
						break
					}
				}
				w.Close()
			}
		}()
	}
	wg.Wait()
	until(t, anchor, 0, changes)
	late := hs.Watch("lab")
	defer late.Close()
	if v := next(t, late); v != changes {
		t.Errorf("a watcher after the last change got %d, want %d", v, changes)
	}
}

// TestWatchWhileAFrameRenders: a watcher that comes while the hub renders
// a frame waits for that frame and gets it first: nothing renders a frame
// for it outside the hub (where an older frame could land after a newer
// one).
func TestWatchWhileAFrameRenders(t *testing.T) {
	c := newCounter(t)
	hs := hubsOf(t, c, live.Options{})
	w := hs.Watch("lab")
	defer w.Close()
	next(t, w)
	gate := make(chan struct{})
	c.mu.Lock()
	c.gate, c.rendering = gate, make(chan struct{})
	c.mu.Unlock()
	v := c.bump()
	<-c.rendering // the hub is inside Frame for version v
	c.mu.Lock()
	c.gate = nil
	c.mu.Unlock()
	got := make(chan *live.Watcher[int], 1)
	go func() { got <- hs.Watch("lab") }()
	// Give Watch the time to render a frame of its own, if it would; the
	// hub's Frame is still held, so two renders would overlap.
	var late *live.Watcher[int]
	select {
	case late = <-got:
	case <-time.After(100 * time.Millisecond):
	}
	close(gate)
	if late == nil {
		late = <-got
	}
	defer late.Close()
	if f := next(t, late); f != v {
		t.Fatalf("a watcher that came during frame %d got %d first", v, f)
	}
	if f := next(t, w); f != v {
		t.Fatalf("the first watcher got %d, want %d", f, v)
	}
}

// TestSlowWatcherSkipsFrames: a watcher that never takes its frames holds
// the hub back in nothing; when it reads at last it gets the newest frame
// only.
func TestSlowWatcherSkipsFrames(t *testing.T) {
	c := newCounter(t)
	hs := hubsOf(t, c, live.Options{Interval: time.Millisecond})
	slow, fast := hs.Watch("lab"), hs.Watch("lab")
	defer slow.Close()
	defer fast.Close()
	prev := next(t, fast)
	const changes = 500
	for range changes {
		c.bump()
	}
	until(t, fast, prev, changes)
	if v := next(t, slow); v != changes {
		t.Fatalf("the slow watcher's mailbox holds %d, want the newest, %d", v, changes)
	}
	select {
	case v := <-slow.Frames():
		t.Fatalf("a second frame %d waited in a one-frame mailbox", v)
	default:
	}
}

// TestFramesArePacedAndCoalesced: many changes between two frames make one
// frame, and frames come no faster than the interval.
func TestFramesArePacedAndCoalesced(t *testing.T) {
	c := newCounter(t)
	const interval = 20 * time.Millisecond
	hs := hubsOf(t, c, live.Options{Interval: interval})
	w := hs.Watch("lab")
	defer w.Close()
	prev := next(t, w)
	start := time.Now()
	const changes = 3000
	for range changes {
		c.bump()
	}
	frames := until(t, w, prev, changes)
	if max := int(time.Since(start)/interval) + 2; frames > max {
		t.Errorf("%d frames in %v, want at most %d at one per %v", frames, time.Since(start), max, interval)
	}
	if frames >= changes {
		t.Errorf("%d frames for %d changes: nothing coalesced", frames, changes)
	}
}

// TestSlowRefreshHoldsNothingBack: while the source's Refresh hangs, new
// watchers get their first frame and changes still reach them.
func TestSlowRefreshHoldsNothingBack(t *testing.T) {
	c := newCounter(t)
	c.refresh, c.entered = make(chan struct{}), make(chan struct{}, 1)
	hs := hubsOf(t, c, live.Options{Poll: time.Millisecond})
	w := hs.Watch("lab")
	defer w.Close()
	prev := next(t, w)
	<-c.entered // Refresh hangs from now on
	late := hs.Watch("lab")
	defer late.Close()
	next(t, late)
	v := c.bump()
	until(t, w, prev, v)
	close(c.refresh)
}

// TestLastWatcherStopsTheHub: when the last watcher leaves, the hub stops
// watching its source; a new watcher starts it again.
func TestLastWatcherStopsTheHub(t *testing.T) {
	c := newCounter(t)
	hs := hubsOf(t, c, live.Options{})
	a, b := hs.Watch("lab"), hs.Watch("lab")
	next(t, a)
	next(t, b)
	if n := hs.Watchers("lab"); n != 2 {
		t.Fatalf("%d watchers, want 2", n)
	}
	a.Close()
	a.Close() // twice is fine
	if n := c.subscribed(); n != 1 {
		t.Fatalf("one watcher left: %d subscriptions, want 1", n)
	}
	b.Close()
	if n, s := hs.Watchers("lab"), c.subscribed(); n != 0 || s != 0 {
		t.Fatalf("no watcher left: %d watchers, %d subscriptions; want none", n, s)
	}
	c.framed = -1 // the source lives as long as its hub: a new hub starts over
	again := hs.Watch("lab")
	defer again.Close()
	if v := next(t, again); v != 0 {
		t.Fatalf("first frame of a new hub %d, want 0", v)
	}
}

// TestEndAndCloseTellWatchers: when the thing ends, its watchers are told;
// after Close, every watcher is told and Watch returns a finished watcher.
func TestEndAndCloseTellWatchers(t *testing.T) {
	c := newCounter(t)
	hs := hubsOf(t, c, live.Options{})
	w := hs.Watch("lab")
	defer w.Close()
	next(t, w)
	close(c.done)
	select {
	case <-w.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the thing ended; its watcher was not told")
	}

	other := newCounter(t)
	hs2 := hubsOf(t, other, live.Options{})
	w2 := hs2.Watch("lab")
	next(t, w2)
	hs2.Close()
	select {
	case <-w2.Done():
	default:
		t.Fatal("hubs closed; the watcher was not told")
	}
	w2.Close()
	late := hs2.Watch("lab")
	select {
	case <-late.Done():
	default:
		t.Fatal("a watcher after Close is not done")
	}
	late.Close()
}

// TestWatchersOfDifferentThings: each key has its own hub and source.
func TestWatchersOfDifferentThings(t *testing.T) {
	things := map[string]*counter{"a": newCounter(t), "b": newCounter(t)}
	things["b"].version = 100
	hs := live.NewHubs(func(k string) live.Source[int] { return things[k] }, live.Options{}, nil)
	defer hs.Close()
	a, b := hs.Watch("a"), hs.Watch("b")
	defer a.Close()
	defer b.Close()
	if va, vb := next(t, a), next(t, b); va != 0 || vb != 100 {
		t.Fatalf("first frames %d and %d, want 0 and 100", va, vb)
	}
	things["b"].bump()
	if v := next(t, b); v != 101 {
		t.Fatalf("b's frame %d, want 101", v)
	}
	select {
	case v := <-a.Frames():
		t.Fatalf("a got b's change: %d", v)
	default:
	}
}
