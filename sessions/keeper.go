package sessions

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions/store"
)

// Keeper stores finished runs as recordings in rlslab's own tables: it is
// a subscriber of the manager's run ends (Config.Subscribers).
type Keeper struct {
	log       *slog.Logger
	st        *store.Store
	pgVersion string
	saving    context.Context // the saves' context; cutOff ends it
	cutOff    context.CancelFunc
	slots     chan struct{} // one per save under way (savesAtOnce)
	wg        sync.WaitGroup
	mu        sync.Mutex // guards end against wg.Add racing Close's Wait
	end       bool
}

// savesAtOnce is how many recordings a keeper writes at once. A
// recording's frames become JSON only when it is written, a few MB for a
// crowd, made again by the store as it checks them and by the driver as it
// sends them: a room whose 200 runs end together waits its turn, with its
// frames still shared, instead of holding 200 of those copies at once.
const savesAtOnce = 2

// saveTimeout bounds writing one recording, once its turn came.
const saveTimeout = 30 * time.Second

// NewKeeper returns a keeper that saves into st, noting pgVersion (the
// server's version) on every recording, and logs to log.
func NewKeeper(st *store.Store, pgVersion string, log *slog.Logger) *Keeper {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	saving, cutOff := context.WithCancel(context.Background())
	return &Keeper{log: log, st: st, pgVersion: pgVersion, saving: saving, cutOff: cutOff, slots: make(chan struct{}, savesAtOnce)}
}

// RunEnded saves r in the background (see Keep).
func (k *Keeper) RunEnded(r RunRecord) { k.Keep(r) }

// Keep saves r in the background, until the keeper is closed.
func (k *Keeper) Keep(r RunRecord) {
	k.mu.Lock()
	if k.end {
		k.mu.Unlock()
		return
	}
	k.wg.Add(1)
	k.mu.Unlock()
	go func() {
		defer k.wg.Done()
		// The time limit starts with the save's turn.
		_, err := k.save(k.saving, r, saveTimeout)
		if err != nil {
			k.log.Warn("recording not saved", "lab", r.Lab.ID, "scenario", r.Scenario, "variant", r.Variant, "err", err)
		}
	}()
}

// Save writes the recording of r now (once fewer than savesAtOnce other
// saves are under way) and returns its id.
func (k *Keeper) Save(ctx context.Context, r RunRecord) (string, error) {
	return k.save(ctx, r, 0)
}

// save waits for a turn (see savesAtOnce), then writes the recording of r
// within limit (0: ctx's) and returns its id.
func (k *Keeper) save(ctx context.Context, r RunRecord, limit time.Duration) (string, error) {
	select {
	case k.slots <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-k.slots }()
	if limit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	rec, err := recordingOf(r, learnerOf(ctx, k.st, r), k.pgVersion)
	if err != nil {
		return "", err
	}
	id, err := k.st.SaveRecording(ctx, rec)
	if err != nil {
		return "", err
	}
	k.log.Info("run recorded", "lab", r.Lab.ID, "recording", id, "frames", len(r.Frames))
	return id, nil
}

// Close waits until every run handed over is saved, or until ctx ends:
// then the saves still under way are cut off. Runs handed over after Close
// are not kept.
func (k *Keeper) Close(ctx context.Context) {
	k.mu.Lock()
	k.end = true
	k.mu.Unlock()
	done := make(chan struct{})
	go func() { k.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		k.cutOff()
		<-done
	}
}

// learnerOf returns the id of the learner who owns r's lab (storing the
// learner if this is its first run), or "" when the owner is not a learner
// token.
func learnerOf(ctx context.Context, st *store.Store, r RunRecord) string {
	if r.Lab == nil {
		return ""
	}
	l, err := st.EnsureLearner(ctx, r.Lab.Owner())
	if err != nil {
		return ""
	}
	return l.ID
}

// recordingOf returns the recording of the finished run r, owned by learner
// (may be "") on a server of version pgVersion; its frames become JSON
// here (RecordedFrame.JSON).
func recordingOf(r RunRecord, learner, pgVersion string) (store.Recording, error) {
	params, _ := json.Marshal(r.Params)
	out := engine.OutcomeOf(r.Final)
	outcome, _ := json.Marshal(out)
	frames := make([]store.Frame, len(r.Frames))
	for i, f := range r.Frames {
		doc, err := f.JSON()
		if err != nil {
			return store.Recording{}, fmt.Errorf("frame %d: %w", i, err)
		}
		frames[i] = store.Frame{AtMs: f.AtMS, State: doc}
	}
	bouncer := ""
	if r.Final.Pairing != nil {
		bouncer = r.Final.Pairing.Version
	}
	lab := ""
	if r.Lab != nil {
		lab = r.Lab.ID
	}
	ended := r.Ended
	if ended.IsZero() {
		ended = time.Now()
	}
	return store.Recording{
		Format: RecordingFormat, Lab: lab, Learner: learner, Scenario: r.Scenario, Variant: r.Variant, Params: params,
		Status: r.Final.Status, Error: r.Final.Error, Leaks: out.Leaks, Errors: out.Errors, Outcome: outcome,
		PostgresVersion: pgVersion, BouncerVersion: bouncer, StartedAt: r.Started, FinishedAt: ended, Frames: frames,
	}, nil
}
