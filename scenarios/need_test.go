package scenarios_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// peakBackends samples the number of backends in the lab's database every
// few milliseconds until stop is called, which returns the most it saw.
func peakBackends(t *testing.T, m *sessions.Manager, lab *sessions.Lab) (stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var peak int
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			var n int
			err := m.Admin().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1`, lab.Sandbox.Database).Scan(&n)
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

// TestEveryVariantStaysWithinItsConnectionNeed runs every variant of the
// catalog at its default parameters while sampling pg_stat_activity, and
// checks the lab's database never held more backends than the variant's
// declared need: what the lab manager admits the run with.
func TestEveryVariantStaysWithinItsConnectionNeed(t *testing.T) {
	t.Parallel()
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 3})
	labs := make(chan *sessions.Lab, 3)
	for range cap(labs) {
		labs <- sessionstest.MustCreateLab(t, m, "owner")
	}
	for _, sc := range scenarios.DefaultCatalog().All() {
		t.Run(sc.ID, func(t *testing.T) {
			t.Parallel()
			lab := <-labs
			defer func() { labs <- lab }()
			for _, v := range sc.VariantNames() {
				need := sc.Need(v, nil, lab.Sandbox)
				if need <= 0 {
					t.Errorf("%s: declares a need of %d connections", v, need)
				}
				waitNoBackends(t, m, lab)
				stop := peakBackends(t, m, lab)
				st, err := playToEnd(t, lab, sc.ID, v, nil)
				peak := stop()
				if err != nil || st.Status != engine.StatusDone {
					t.Fatalf("%s: %v (status %s)", v, err, st.Status)
				}
				if peak > need {
					t.Errorf("%s: %d backends at the peak, declared need %d", v, peak, need)
				}
				// The last narration line states the outcome, derived from
				// the run's own request log.
				if want := engine.Conclusion(st.Requests, lab.Sandbox.TenantName); !strings.HasPrefix(st.Narration, want) {
					t.Errorf("%s: the last narration is %q, want it to start with the outcome %q", v, st.Narration, want)
				}
				t.Logf("%s: peak %d of %d", v, peak, need)
			}
			waitNoBackends(t, m, lab)
		})
	}
}

// TestNeedFollowsParamsAndSandbox checks Need applies defaults, reads the
// parameters and the sandbox's CONNECTION LIMIT, and knows no unknown
// variant.
func TestNeedFollowsParamsAndSandbox(t *testing.T) {
	cat := scenarios.DefaultCatalog()
	sb := engine.Sandbox{ConnLimit: 12, Tenants: make([]engine.Tenant, 3)}
	cases := []struct {
		scenario, variant string
		params            engine.Params
		want              int
	}{
		{"set-leak", engine.PatternSessionSet, nil, 2},
		{"set-leak", engine.PatternSessionSet, engine.Params{"pool": 3}, 3},
		{"shared-pool", scenarios.SharedPoolShared, nil, 11},                                     // pool 10 + admin for the extra tenants
		{"shared-pool", scenarios.SharedPoolShared, engine.Params{"pool": 50, "tenants": 3}, 12}, // capped at the limit, no admin
		{"shared-pool", scenarios.SharedPoolConnPerUser, nil, 12 + 2 + 1},
		{"wrong-scope", scenarios.WrongScopeConnPerUser, engine.Params{"pool": 8}, 8},
		{"pgbouncer-tx", scenarios.PgBouncerTxFanIn, engine.Params{"pool_size": 20}, 12},
		{"pgbouncer-tx", scenarios.PgBouncerTxResetAlways, nil, 3},
		{"rls-bypass", scenarios.RLSBypassOwner, nil, 1},
		{"set-leak", "no-such-variant", nil, 0},
	}
	for _, c := range cases {
		sc, err := cat.Lookup(c.scenario)
		if err != nil {
			t.Fatal(err)
		}
		if got := sc.Need(c.variant, c.params, sb); got != c.want {
			t.Errorf("%s/%s %v: need %d, want %d", c.scenario, c.variant, c.params, got, c.want)
		}
	}
}
