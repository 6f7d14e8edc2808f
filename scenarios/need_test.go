package scenarios_test

import (
	"testing"

	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
)

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
		{"shared-pool", scenarios.SharedPoolConnPerUser, nil, 12 + 4 + 1},
		{"wrong-scope", scenarios.WrongScopeConnPerUser, engine.Params{"pool": 8}, 8},
		{"pgbouncer-tx", scenarios.PgBouncerTxFanIn, engine.Params{"pool_size": 20}, 12},
		{"pgbouncer-tx", scenarios.PgBouncerTxResetAlways, nil, 3},
		{"rls-bypass", scenarios.RLSBypassOwner, nil, 1},
		{"schema-per-tenant", scenarios.SchemaPerTenantDefiner, nil, 3}, // pool 1 + admin, and the admin connection just closed
		{"pinned-state", scenarios.PinnedSessionLock, nil, 2},           // two app instances of one connection
		{"pinned-state", scenarios.PinnedListenDirect, nil, 2},          // PgBouncer's server connection + the direct listener
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
