package sessions

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions/store"
)

// Keeper stores finished runs as recordings in rlslab's own tables. It is
// handed runs from Config.OnRunEnd before the tables are open (the store is
// opened on the manager's admin pool); runs that end before Attach are not
// kept.
type Keeper struct {
	log *slog.Logger
	to  atomic.Pointer[keeperTarget]
	wg  sync.WaitGroup
	mu  sync.Mutex // guards closed against wg.Add racing Close's Wait
	end bool
}

// keeperTarget is where a Keeper saves: the tables and the server's version.
type keeperTarget struct {
	st        *store.Store
	pgVersion string
}

// NewKeeper returns a keeper that logs to log.
func NewKeeper(log *slog.Logger) *Keeper {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Keeper{log: log}
}

// Attach makes the keeper save into st, noting pgVersion (the server's
// version) on every recording.
func (k *Keeper) Attach(st *store.Store, pgVersion string) {
	k.to.Store(&keeperTarget{st: st, pgVersion: pgVersion})
}

// Keep saves r in the background, once the keeper is attached and until it
// is closed.
func (k *Keeper) Keep(r RunRecord) {
	if k.to.Load() == nil {
		return
	}
	k.mu.Lock()
	if k.end {
		k.mu.Unlock()
		return
	}
	k.wg.Add(1)
	k.mu.Unlock()
	go func() {
		defer k.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := k.Save(ctx, r); err != nil {
			k.log.Warn("recording not saved", "lab", r.Lab.ID, "scenario", r.Scenario, "variant", r.Variant, "err", err)
		}
	}()
}

// Save writes the recording of r now and returns its id. It does nothing
// (and returns "") while the keeper is not attached.
func (k *Keeper) Save(ctx context.Context, r RunRecord) (string, error) {
	to := k.to.Load()
	if to == nil {
		return "", nil
	}
	id, err := to.st.SaveRecording(ctx, recordingOf(r, learnerOf(ctx, to.st, r), to.pgVersion))
	if err != nil {
		return "", err
	}
	k.log.Info("run recorded", "lab", r.Lab.ID, "recording", id, "frames", len(r.Frames))
	return id, nil
}

// Close waits until every run handed over is saved; runs handed over after
// Close are not kept.
func (k *Keeper) Close() {
	k.mu.Lock()
	k.end = true
	k.mu.Unlock()
	k.wg.Wait()
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
// (may be "") on a server of version pgVersion.
func recordingOf(r RunRecord, learner, pgVersion string) store.Recording {
	params, _ := json.Marshal(r.Params)
	out := engine.OutcomeOf(r.Final)
	outcome, _ := json.Marshal(out)
	frames := make([]store.Frame, len(r.Frames))
	for i, f := range r.Frames {
		frames[i] = store.Frame{AtMs: f.AtMS, State: f.State}
	}
	bouncer := ""
	if r.Final.Pairing != nil {
		bouncer = r.Final.Pairing.Version
	}
	lab := ""
	if r.Lab != nil {
		lab = r.Lab.ID
	}
	return store.Recording{
		Format: RecordingFormat, Lab: lab, Learner: learner, Scenario: r.Scenario, Variant: r.Variant, Params: params,
		Status: r.Final.Status, Error: r.Final.Error, Leaks: out.Leaks, Errors: out.Errors, Outcome: outcome,
		PostgresVersion: pgVersion, BouncerVersion: bouncer, StartedAt: r.Started, FinishedAt: time.Now(), Frames: frames,
	}
}
