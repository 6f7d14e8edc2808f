// Package live fans a watched thing's frames out to the browsers watching
// it: one hub per watched thing (a lab, a workshop's dashboard) renders its
// frames in one goroutine, at most one per interval and only when the thing
// changed, and hands the same frame value to each watcher's one-frame
// mailbox. Nothing runs for a thing nobody watches.
package live

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// FrameInterval is the shortest time between two frames of one hub by
// default (at most 20 frames a second).
const FrameInterval = 50 * time.Millisecond

// refreshTimeout bounds one Refresh of a source.
const refreshTimeout = time.Second

// Source is one watched thing as its hub sees it. The hub calls Frame from
// its own goroutine only, and Refresh from one other goroutine, never two
// at once; a source lives as long as its hub.
type Source[F any] interface {
	// Changes returns a channel that receives when the thing may have
	// changed, and a function that stops it. A nil channel is allowed:
	// the hub then looks for changes every Poll.
	Changes() (<-chan struct{}, func())
	// Done is closed when the thing ends; the hub stops and its watchers
	// are told. A nil channel is allowed: the thing never ends.
	Done() <-chan struct{}
	// Frame returns the thing's current frame, and false when nothing a
	// frame shows changed since the frame it returned last (its first call
	// returns true). A frame is handed to every watcher as it is: it must
	// not change afterwards.
	Frame(ctx context.Context) (F, bool)
	// Refresh reads what the thing cannot signal by itself (a lab's
	// server-side counts); the hub calls it every Poll, outside its own
	// goroutine, so that a slow read never holds a frame or a new watcher
	// back. What it reads shows through Changes or the next Poll.
	Refresh(ctx context.Context)
}

// Options tune a set of hubs.
type Options struct {
	// Interval is the shortest time between two frames (FrameInterval
	// when zero).
	Interval time.Duration
	// Poll is how often a hub calls its source's Refresh and asks it for a
	// frame even without a change (never when zero).
	Poll time.Duration
}

// Hubs holds the hub of every watched thing, by key; Open makes the source
// of a thing whose first watcher arrives.
type Hubs[K comparable, F any] struct {
	open func(K) Source[F]
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	hubs   map[K]*hub[K, F]
	closed bool
}

// NewHubs returns an empty set of hubs whose sources open makes.
func NewHubs[K comparable, F any](open func(K) Source[F], opts Options, log *slog.Logger) *Hubs[K, F] {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Interval <= 0 {
		opts.Interval = FrameInterval
	}
	return &Hubs[K, F]{open: open, opts: opts, log: log, hubs: map[K]*hub[K, F]{}}
}

// hub renders one thing's frames while anyone watches it. Its goroutine
// owns the watchers' set and the last frame: a watcher is registered there,
// and gets the frame every other watcher got last, never an older one.
type hub[K comparable, F any] struct {
	hubs *Hubs[K, F]
	key  K
	src  Source[F]
	n    int // watchers, guarded by hubs.mu

	register   chan *Watcher[F]
	unregister chan *Watcher[F]
	stop       chan struct{}
	stopOnce   sync.Once
	exited     chan struct{}
}

// Watcher is one watching browser's mailbox: it holds only the latest
// frame, so a slow browser skips frames and the hub never waits for it.
type Watcher[F any] struct {
	c     chan F
	done  chan struct{}
	end   sync.Once
	leave sync.Once
	hub   interface{ leave(*Watcher[F]) }
}

// Frames returns the channel the frames arrive on; the first is the
// thing's current frame.
func (w *Watcher[F]) Frames() <-chan F { return w.c }

// Done is closed when the thing ends, the hubs close, or the watcher
// leaves.
func (w *Watcher[F]) Done() <-chan struct{} { return w.done }

// Close unsubscribes the watcher; the last one to leave stops the hub.
func (w *Watcher[F]) Close() {
	w.leave.Do(func() {
		w.finish()
		if w.hub != nil {
			w.hub.leave(w)
		}
	})
}

// finish closes the watcher's done channel once.
func (w *Watcher[F]) finish() { w.end.Do(func() { close(w.done) }) }

// deliver puts frame in w's mailbox, replacing a frame not yet taken. Only
// the hub's goroutine sends, so the send after the drain never blocks.
func (w *Watcher[F]) deliver(frame F) {
	select {
	case <-w.c:
	default:
	}
	w.c <- frame
}

// Watch subscribes to the frames of the thing with key k; the first frame
// is its current state. Close the watcher when done.
func (hs *Hubs[K, F]) Watch(k K) *Watcher[F] {
	w := &Watcher[F]{c: make(chan F, 1), done: make(chan struct{})}
	hs.mu.Lock()
	if hs.closed {
		hs.mu.Unlock()
		w.finish()
		return w
	}
	h := hs.hubs[k]
	if h == nil {
		h = &hub[K, F]{hubs: hs, key: k, src: hs.open(k),
			register: make(chan *Watcher[F]), unregister: make(chan *Watcher[F]),
			stop: make(chan struct{}), exited: make(chan struct{})}
		hs.hubs[k] = h
		go h.run()
	}
	h.n++
	w.hub = h
	hs.mu.Unlock()
	select {
	case h.register <- w:
	case <-h.exited: // the thing ended meanwhile
		w.finish()
	}
	return w
}

// Watchers returns how many watchers the thing with key k has.
func (hs *Hubs[K, F]) Watchers(k K) int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if h := hs.hubs[k]; h != nil {
		return h.n
	}
	return 0
}

// Close stops every hub and tells every watcher; Watch then returns
// watchers that are done at once.
func (hs *Hubs[K, F]) Close() {
	hs.mu.Lock()
	hubs := hs.hubs
	hs.hubs = map[K]*hub[K, F]{}
	hs.closed = true
	hs.mu.Unlock()
	for _, h := range hubs {
		h.shutdown()
	}
}

// leave unregisters w; when it was the last watcher, the hub stops.
func (h *hub[K, F]) leave(w *Watcher[F]) {
	hs := h.hubs
	hs.mu.Lock()
	h.n--
	last := h.n == 0 && hs.hubs[h.key] == h
	if last {
		delete(hs.hubs, h.key)
	}
	hs.mu.Unlock()
	if last {
		h.shutdown()
		return
	}
	select {
	case h.unregister <- w:
	case <-h.exited:
	}
}

// shutdown stops the hub's goroutine and waits for it.
func (h *hub[K, F]) shutdown() {
	h.stopOnce.Do(func() { close(h.stop) })
	<-h.exited
}

// run is the hub's goroutine: it registers and unregisters watchers and
// renders a frame on each change, no sooner than the interval after the
// previous one, until the hub stops or the thing ends.
func (h *hub[K, F]) run() {
	ctx, cancel := context.WithCancel(context.Background())
	subs := map[*Watcher[F]]struct{}{}
	var refreshing chan struct{} // open while a Refresh runs
	defer func() {
		cancel()
		if refreshing != nil {
			<-refreshing
		}
		hs := h.hubs
		hs.mu.Lock()
		if hs.hubs[h.key] == h {
			delete(hs.hubs, h.key)
		}
		hs.mu.Unlock()
		close(h.exited)
		for w := range subs {
			w.finish()
		}
	}()
	changes, unsubscribe := h.src.Changes()
	defer unsubscribe()
	last, _ := h.src.Frame(ctx)
	lastAt := time.Now()
	var poll <-chan time.Time
	if h.hubs.opts.Poll > 0 {
		t := time.NewTicker(h.hubs.opts.Poll)
		defer t.Stop()
		poll = t.C
	}
	pace := time.NewTimer(time.Hour)
	pace.Stop()
	defer pace.Stop()
	var paced <-chan time.Time // set while a change waits for the interval
	dirty := false
	for {
		select {
		case <-h.stop:
			return
		case <-h.src.Done():
			return
		case w := <-h.register:
			subs[w] = struct{}{}
			w.deliver(last)
			continue
		case w := <-h.unregister:
			delete(subs, w)
			continue
		case <-changes:
			dirty = true
		case <-poll:
			dirty = true
			if refreshing == nil {
				refreshing = make(chan struct{})
				go func(done chan struct{}) {
					defer close(done)
					rctx, rcancel := context.WithTimeout(ctx, refreshTimeout)
					defer rcancel()
					h.src.Refresh(rctx)
				}(refreshing)
			}
		case <-refreshing:
			refreshing = nil
			dirty = true
		case <-paced:
			paced = nil
		}
		if !dirty || paced != nil {
			continue
		}
		if wait := time.Until(lastAt.Add(h.hubs.opts.Interval)); wait > 0 {
			pace.Reset(wait)
			paced = pace.C
			continue
		}
		dirty = false
		f, changed := h.src.Frame(ctx)
		if !changed {
			continue
		}
		last, lastAt = f, time.Now()
		for w := range subs {
			w.deliver(f)
		}
	}
}
