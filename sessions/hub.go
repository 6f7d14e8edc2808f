package sessions

import (
	"context"
	"sync"
	"time"
)

// FrameInterval is the shortest time between two frames of one lab (at most
// 20 frames a second).
const FrameInterval = 50 * time.Millisecond

// hub renders a lab's state into frames, at most one per FrameInterval and
// only when the state changed, and hands each frame to every watcher's
// mailbox.
type hub struct {
	lab *Lab

	mu      sync.Mutex
	subs    map[*Watcher]struct{}
	last    []byte
	version uint64
	closed  bool
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

// Done is closed when the lab closes.
func (w *Watcher) Done() <-chan struct{} { return w.done }

// Close unsubscribes the watcher.
func (w *Watcher) Close() {
	w.hub.mu.Lock()
	delete(w.hub.subs, w)
	w.hub.mu.Unlock()
	w.once.Do(func() { close(w.done) })
}

func newHub(l *Lab) *hub {
	return &hub{lab: l, subs: map[*Watcher]struct{}{}}
}

// watchers returns the number of watching browsers.
func (h *hub) watchers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// subscribe adds a watcher and gives it the full current state first.
func (h *hub) subscribe() *Watcher {
	w := &Watcher{c: make(chan []byte, 1), hub: h, done: make(chan struct{})}
	frame := h.render(true)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		w.once.Do(func() { close(w.done) })
		return w
	}
	h.subs[w] = struct{}{}
	if frame == nil {
		frame = h.last
	}
	deliver(w, frame)
	h.mu.Unlock()
	return w
}

// render renders the current state; unless force, it returns nil when the
// state has not changed since the last frame.
func (h *hub) render(force bool) []byte {
	st := h.lab.tracker.Snapshot()
	h.mu.Lock()
	if !force && st.Version == h.version && h.last != nil {
		h.mu.Unlock()
		return nil
	}
	h.mu.Unlock()
	var frame []byte
	if r := h.lab.mgr.cfg.Renderer; r != nil {
		frame = r.Frame(st)
	} else {
		frame = []byte{}
	}
	h.mu.Lock()
	if st.Version >= h.version {
		h.last, h.version = frame, st.Version
	}
	h.mu.Unlock()
	return frame
}

// run pushes frames until ctx ends: on each state change, no sooner than
// FrameInterval after the previous frame. While anyone watches, it also
// refreshes the server-side counts a few times a second.
func (h *hub) run(ctx context.Context) {
	tick := time.NewTicker(serverCountsEvery)
	defer tick.Stop()
	var lastServer time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.lab.tracker.Changed():
		case <-tick.C:
			if h.watchers() == 0 {
				continue
			}
		}
		if time.Since(lastServer) >= serverCountsEvery {
			lastServer = time.Now()
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			if err := h.lab.refreshServer(sctx); err != nil && ctx.Err() == nil {
				h.lab.mgr.log.Warn("server counts", "lab", h.lab.ID, "err", err)
			}
			cancel()
		}
		if frame := h.render(false); frame != nil {
			h.mu.Lock()
			for w := range h.subs {
				deliver(w, frame)
			}
			h.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(FrameInterval):
		}
	}
}

// deliver puts frame in w's mailbox, replacing a frame not yet taken.
func deliver(w *Watcher, frame []byte) {
	select {
	case <-w.c:
	default:
	}
	select {
	case w.c <- frame:
	default:
	}
}

// closeAll tells every watcher the lab is gone.
func (h *hub) closeAll() {
	h.mu.Lock()
	subs := h.subs
	h.subs = map[*Watcher]struct{}{}
	h.closed = true
	h.mu.Unlock()
	for w := range subs {
		w.once.Do(func() { close(w.done) })
	}
}
