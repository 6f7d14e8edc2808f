package sessions

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/rlslab/rlslab"
)

// TestGuardWaitsForASlowAnswer runs a query that takes a second on a
// server that answers: the guard probes, finds the server alive and waits
// for the answer instead of calling it an outage.
func TestGuardWaitsForASlowAnswer(t *testing.T) {
	t.Parallel()
	pool := mustOpenAdmin(t)
	g := guard{p: newProber(pool), log: slog.New(slog.DiscardHandler)}
	start := time.Now()
	err := g.do(t.Context(), "sleep", func(ctx context.Context) error {
		_, err := pool.Exec(ctx, "SELECT pg_sleep(1)")
		return err
	})
	if err != nil || time.Since(start) < time.Second {
		t.Errorf("a slow answer of a live server: %v after %s", err, time.Since(start))
	}
}

// TestProbesAreShared asks for a probe from many goroutines while one is
// going: they all get its answer, and no other probe starts (the prober
// has no pool, so a probe of its own would panic).
func TestProbesAreShared(t *testing.T) {
	p := newProber(nil)
	going := &probeCall{done: make(chan struct{}), err: errors.New("the probe's answer")}
	p.cur = going
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- p.probe(context.Background())
		}()
	}
	close(going.done)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != going.err {
			t.Errorf("probe answered %v, want the going probe's answer", err)
		}
	}
}

// TestGuardCallsATimeoutOnALiveServerBusy runs a query that outlasts its
// deadline on a server that answers: the guard says the database answers
// slowly, not that it does not answer (a room joining at once on a loaded
// machine was told the database was down).
func TestGuardCallsATimeoutOnALiveServerBusy(t *testing.T) {
	t.Parallel()
	pool := mustOpenAdmin(t)
	g := guard{p: newProber(pool), log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	err := g.do(ctx, "sleep", func(ctx context.Context) error {
		_, err := pool.Exec(ctx, "SELECT pg_sleep(1)")
		return err
	})
	if rlslab.ErrorCode(err) != rlslab.EUNAVAILABLE || rlslab.ErrorMessage(err) != ErrDatabaseBusy {
		t.Errorf("a timed-out call on a live server: %v (%s), want EUNAVAILABLE saying %q", err, rlslab.ErrorCode(err), ErrDatabaseBusy)
	}
}
