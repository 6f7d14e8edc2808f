package sessions

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// Recording limits: a run keeps at most maxRecordedFrames frames, taken no
// more often than recordEvery (the live view's own cadence is faster only
// for crowds, whose frames are alike).
const (
	maxRecordedFrames = 1500
	maxRecordedBytes  = 6 << 20
	recordEvery       = 50 * time.Millisecond
)

// RecordedFrame is one frame of a finished run: the lab's state at AtMS
// milliseconds after the run began, as a StateDoc in JSON (RecordingFormat)
// made when it is asked for (JSON): a frame that shows another lab's crowd
// (a follower's, see shared.go) keeps the crowd's state that every follower
// shares, not a copy.
type RecordedFrame struct {
	AtMS int64
	doc  json.RawMessage // the frame's JSON, or nil
	kept *engine.State   // when doc is nil: the state, sharing a capture's slices (engine.State.Kept)
}

// JSON returns the frame's state as a StateDoc in JSON. A frame that keeps
// a shared crowd's state is converted now, each time it is asked for.
func (f RecordedFrame) JSON() (json.RawMessage, error) {
	if f.kept == nil {
		return f.doc, nil
	}
	return json.Marshal(StateDocOf(*f.kept))
}

// RunRecord is a finished run as the manager's subscribers receive it
// (Config.Subscribers). Final and Frames may share their slices with
// other labs' states (a shared crowd's, engine.State.Kept): a subscriber
// reads them and never changes them.
type RunRecord struct {
	Lab      *Lab
	Scenario string
	Variant  string
	Params   engine.Params
	Started  time.Time
	Ended    time.Time // zero: when the record is saved
	Final    engine.State
	Frames   []RecordedFrame
}

// recorder keeps the frames of one run: every change of the lab's state,
// at most one per recordEvery, the last one always. A state as a capture
// kept it (a follower's, engine.State.Kept) is kept as it is, sharing its
// slices with every other lab that shows it; any other state is converted
// to its JSON at once.
type recorder struct {
	tracker *engine.Tracker
	started time.Time
	unhook  func() // takes the recorder's frame hook off the tracker

	mu      sync.Mutex
	frames  []RecordedFrame
	sizes   []int // of the frames' JSON (as the capture measured it, for a kept state)
	bytes   int   // the sum of sizes
	version uint64
	stop    context.CancelFunc
	done    chan struct{}
}

// record starts recording the tracker's states until the recorder is
// finished.
func record(t *engine.Tracker) *recorder {
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{tracker: t, started: time.Now(), stop: cancel, done: make(chan struct{})}
	changes, unsubscribe := t.Subscribe()
	// Every paced frame is kept, even at full speed; changes between them
	// (a crowd's requests) at most every recordEvery.
	r.unhook = t.AddFrameHook(func(st engine.State) { r.add(st) })
	go func() {
		defer close(r.done)
		defer unsubscribe()
		r.take()
		for {
			select {
			case <-ctx.Done():
				return
			case <-changes:
			}
			r.take()
			select {
			case <-ctx.Done():
				return
			case <-time.After(recordEvery):
			}
		}
	}()
	return r
}

// take adds the current state as a frame if it changed.
func (r *recorder) take() { r.add(r.tracker.View()) }

// add adds st as a frame unless it is the last one again or older than
// it: the frame hook and the recording goroutine both take
// snapshots, and the older one may arrive second (a replay then went from
// version 38 back to 36).
func (r *recorder) add(st engine.State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st.Version <= r.version && len(r.frames) > 0 {
		return
	}
	r.version = st.Version
	f := RecordedFrame{AtMS: time.Since(r.started).Milliseconds()}
	size, ok := st.Kept()
	if ok && size > 0 {
		// A shared crowd's state: kept as it is, converted when saved.
		f.kept = &st
	} else {
		// The state is converted to the recording's own document once, here.
		b, err := json.Marshal(StateDocOf(st))
		if err != nil {
			return
		}
		f.doc, size = b, len(b)
	}
	r.bytes += size
	for len(r.frames) >= maxRecordedFrames || r.bytes > maxRecordedBytes && len(r.frames) > 2 {
		// Thin out: keep every other frame, so a long run still spans its
		// whole length.
		frames, sizes := r.frames[:0], r.sizes[:0]
		for i, f := range r.frames {
			if i%2 == 0 || i == len(r.frames)-1 {
				frames, sizes = append(frames, f), append(sizes, r.sizes[i])
			} else {
				r.bytes -= r.sizes[i]
			}
		}
		clear(r.frames[len(frames):])
		r.frames, r.sizes = frames, sizes
	}
	r.frames = append(r.frames, f)
	r.sizes = append(r.sizes, size)
}

// finish stops recording, takes the final state, and returns the frames.
func (r *recorder) finish() []RecordedFrame {
	r.unhook()
	r.stop()
	<-r.done
	r.take()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.frames
}
