// Package sessionstest opens labs on a real PostgreSQL for tests.
package sessionstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	"github.com/rlslab/rlslab/internal/bouncer"
	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
)

// MustOpenManager opens a lab manager on the package's shared test server
// (see pgenvtest.Main) and closes it when the test ends. cfg's AdminURL is
// filled in; zero fields take their defaults, except Spares: none unless
// the test asks for them.
func MustOpenManager(tb testing.TB, cfg sessions.Config) *sessions.Manager {
	tb.Helper()
	srv := pgenvtest.MustServer(tb)
	cfg.AdminURL = srv.URL
	if cfg.Catalog == nil {
		cfg.Catalog = scenarios.DefaultCatalog()
	}
	if cfg.Bouncers == nil {
		cfg.Bouncers = Bouncers
	}
	if cfg.Spares == 0 {
		// No spare sandboxes unless a test asks: most tests make one or
		// two labs, and four databases built and dropped behind every
		// test were most of the suite's disk and system time.
		cfg.Spares = -1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := sessions.Open(ctx, cfg)
	if err != nil {
		tb.Fatalf("open lab manager: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		m.Close(ctx)
	})
	return m
}

// MustCreateLab creates a new lab whose owner token is owner plus a unique
// suffix (one browser has one lab, so each call is another browser).
func MustCreateLab(tb testing.TB, m *sessions.Manager, owner string) *sessions.Lab {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	l, err := m.Create(ctx, owner+"-"+hex.EncodeToString(b))
	if err != nil {
		tb.Fatalf("create lab: %v", err)
	}
	return l
}

// MustRun runs scenario/variant in lab at full speed and returns the final
// state; a run error fails the test.
func MustRun(tb testing.TB, l *sessions.Lab, scenario, variant string, params map[string]string) engine.State {
	tb.Helper()
	st, err := Run(l, scenario, variant, params)
	if err != nil {
		tb.Fatalf("run %s/%s: %v", scenario, variant, err)
	}
	return st
}

// Run runs scenario/variant in lab at full speed and returns the final
// state and the run's error.
func Run(l *sessions.Lab, scenario, variant string, params map[string]string) (engine.State, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := l.Start(sessions.RunRequest{Scenario: scenario, Variant: variant, Speed: engine.Speed{Max: true}, Params: params}); err != nil {
		return engine.State{}, err
	}
	runErr := l.Wait(ctx)
	return l.State(ctx), runErr
}

// Bouncers starts a real PgBouncer (local binary, else Docker) for the
// scenarios that need one, the way cmd wires it.
func Bouncers(ctx context.Context, sb engine.Sandbox, o engine.BouncerOptions) (engine.Bouncer, error) {
	b, err := bouncer.ForApp(ctx, bouncer.ModeAuto, sb.AppURL, o.PoolSize, o.ResetQueryAlways, nil, nil)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// PeakBackends samples the number of backends in the lab's database every
// few milliseconds until the returned stop is called, which returns the
// most it saw.
func PeakBackends(m *sessions.Manager, lab *sessions.Lab) (stop func() int) {
	ctx, cancel := context.WithCancel(context.Background())
	var peak int
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			n, err := labBackends(ctx, m, lab)
			if err == nil {
				peak = max(peak, n)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	return func() int {
		cancel()
		wg.Wait()
		return peak
	}
}

// WaitNoBackends waits until no backend is left in the lab's database: a
// closed connection's backend exits a moment after the client let it go,
// and the server tells nobody, so this asks every 5 ms, for at most 5 s.
func WaitNoBackends(tb testing.TB, m *sessions.Manager, lab *sessions.Lab) {
	tb.Helper()
	count := func() int {
		n, err := labBackends(context.Background(), m, lab)
		if err != nil {
			tb.Fatal(err)
		}
		return n
	}
	deadline := time.Now().Add(5 * time.Second)
	for n := count(); n > 0; n = count() {
		if time.Now().After(deadline) {
			tb.Fatalf("%d backends still in %s 5 s after the run closed its connections", n, lab.Sandbox.Database)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// labBackends counts the client backends of any role in the lab's database
// (not autovacuum workers, which a busy shared server sends there too).
func labBackends(ctx context.Context, m *sessions.Manager, lab *sessions.Lab) (int, error) {
	var n int
	err := m.Admin().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'`, lab.Sandbox.Database).Scan(&n)
	return n, err
}
