// Package live fans a lab's live state out to the browsers watching it: one
// hub per watched lab renders frames, at most one per FrameInterval and only
// when the state changed, into each watcher's one-frame mailbox.
package live

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// FrameInterval is the shortest time between two frames of one lab (at most
// 20 frames a second).
const FrameInterval = 50 * time.Millisecond

// serverCountsEvery is how often a watched lab's server-side counts are
// read again.
const serverCountsEvery = 250 * time.Millisecond

// Renderer turns a lab's state into one frame.
type Renderer interface {
	Frame(engine.State) []byte
}

// Lab is what a hub needs of a lab.
type Lab interface {
	Tracker() *engine.Tracker
	// Done is closed when the lab closes.
	Done() <-chan struct{}
	// RefreshServer reads the lab's server-side counts into its state.
	RefreshServer(ctx context.Context) error
}

// Hubs holds the hub of every watched lab. Nothing runs for a lab nobody
// watches.
type Hubs struct {
	render Renderer
	log    *slog.Logger

	mu   sync.Mutex
	hubs map[Lab]*hub
}

// NewHubs returns an empty set of hubs rendering with r.
func NewHubs(r Renderer, log *slog.Logger) *Hubs {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hubs{render: r, log: log, hubs: map[Lab]*hub{}}
}

// Watch subscribes to lab's frames; the first frame is the full current
// state. Close the watcher when done.
func (hs *Hubs) Watch(lab Lab) *Watcher {
	w := &Watcher{c: make(chan []byte, 1), done: make(chan struct{})}
	hs.mu.Lock()
	h := hs.hubs[lab]
	if h == nil {
		h = &hub{hubs: hs, lab: lab, subs: map[*Watcher]struct{}{}, stop: make(chan struct{})}
		hs.hubs[lab] = h
		h.wg.Add(1)
		go h.run()
	}
	h.subs[w] = struct{}{}
	w.hub = h
	hs.mu.Unlock()
	deliver(w, h.frame(true))
	return w
}

// Watchers returns how many browsers watch lab.
func (hs *Hubs) Watchers(lab Lab) int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if h := hs.hubs[lab]; h != nil {
		return len(h.subs)
	}
	return 0
}

// Close stops every hub and tells every watcher.
func (hs *Hubs) Close() {
	hs.mu.Lock()
	hubs := hs.hubs
	hs.hubs = map[Lab]*hub{}
	hs.mu.Unlock()
	for _, h := range hubs {
		h.shutdown()
	}
}

// hub renders one lab's frames while anyone watches it.
type hub struct {
	hubs *Hubs
	lab  Lab
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	mu      sync.Mutex // guards last and version; subs is guarded by hubs.mu
	subs    map[*Watcher]struct{}
	last    []byte
	version uint64
}

// Watcher is one watching browser's mailbox: it holds only the latest
// frame, so a slow browser skips frames and the lab never waits for it.
type Watcher struct {
	c    chan []byte
	hub  *hub
	done chan struct{}
	once sync.Once
}

// Frames returns the channel the frames arrive on.
func (w *Watcher) Frames() <-chan []byte { return w.c }

// Done is closed when the lab closes (or the hubs shut down).
func (w *Watcher) Done() <-chan struct{} { return w.done }

// Close unsubscribes the watcher; the last one to leave stops the hub.
func (w *Watcher) Close() {
	w.once.Do(func() { close(w.done) })
	hs := w.hub.hubs
	hs.mu.Lock()
	delete(w.hub.subs, w)
	last := len(w.hub.subs) == 0 && hs.hubs[w.hub.lab] == w.hub
	if last {
		delete(hs.hubs, w.hub.lab)
	}
	hs.mu.Unlock()
	if last {
		w.hub.shutdown()
	}
}

// shutdown stops the hub's goroutine and tells its watchers.
func (h *hub) shutdown() {
	h.once.Do(func() { close(h.stop) })
	h.wg.Wait()
	h.hubs.mu.Lock()
	subs := h.subs
	h.subs = map[*Watcher]struct{}{}
	if h.hubs.hubs[h.lab] == h {
		delete(h.hubs.hubs, h.lab)
	}
	h.hubs.mu.Unlock()
	for w := range subs {
		w.once.Do(func() { close(w.done) })
	}
}

// frame renders the current state; unless force, it returns nil when the
// state has not changed since the last frame.
func (h *hub) frame(force bool) []byte {
	st := h.lab.Tracker().Snapshot()
	h.mu.Lock()
	if !force && st.Version == h.version && h.last != nil {
		h.mu.Unlock()
		return nil
	}
	h.mu.Unlock()
	f := h.hubs.render.Frame(st)
	if f == nil {
		return nil
	}
	h.mu.Lock()
	if st.Version >= h.version {
		h.last, h.version = f, st.Version
	}
	h.mu.Unlock()
	return f
}

// run pushes frames until the hub stops or the lab closes: on each state
// change, no sooner than FrameInterval after the previous frame; it also
// refreshes the server-side counts a few times a second.
func (h *hub) run() {
	defer h.wg.Done()
	changes, unsubscribe := h.lab.Tracker().Subscribe()
	defer unsubscribe()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-h.stop:
		case <-h.lab.Done():
			go h.shutdown()
		}
		cancel()
	}()
	tick := time.NewTicker(serverCountsEvery)
	defer tick.Stop()
	var lastServer time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-changes:
		case <-tick.C:
		}
		// The frame goes out first; the server counts are read after it,
		// inside the pause before the next frame, which shows them. A
		// read that waits for the admin pool never holds a frame back.
		if f := h.frame(false); f != nil {
			h.hubs.mu.Lock()
			for w := range h.subs {
				deliver(w, f)
			}
			h.hubs.mu.Unlock()
		}
		next := time.Now().Add(FrameInterval)
		if time.Since(lastServer) >= serverCountsEvery {
			lastServer = time.Now()
			sctx, scancel := context.WithTimeout(ctx, time.Second)
			_ = h.lab.RefreshServer(sctx) // an outage shows in the state itself
			scancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
	}
}

// deliver puts frame in w's mailbox, replacing a frame not yet taken.
func deliver(w *Watcher, frame []byte) {
	if frame == nil {
		return
	}
	select {
	case <-w.c:
	default:
	}
	select {
	case w.c <- frame:
	default:
	}
}
