package scenarios_test

import (
	"slices"
	"testing"

	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// wantKinds is what each variant's run shows with the scenario's default
// parameters, as engine.Judge names it from the run's request log and
// findings: the outcome bar, state.json, recordings and predictions say
// the same.
var wantKinds = map[string]string{
	"schema-per-tenant/session-search-path":    engine.KindLeak,
	"schema-per-tenant/local-search-path":      engine.KindFailedClosed,
	"schema-per-tenant/definer-unqualified":    engine.KindLeak,
	"schema-per-tenant/definer-qualified":      engine.KindNone,
	"schema-per-tenant/pgbouncer-session-path": engine.KindLeak,
	"schema-per-tenant/pgbouncer-local-path":   engine.KindNone,
	"pinned-state/temp-table":                  engine.KindLeak,
	"pinned-state/on-commit-drop":              engine.KindNone,
	"pinned-state/session-lock":                engine.KindError,
	"pinned-state/xact-lock":                   engine.KindNone,
	"pinned-state/listen-pgbouncer":            engine.KindMeasurement,
	"pinned-state/listen-direct":               engine.KindMeasurement,
	"orm-transactions/datasource-query":        engine.KindLeak,
	"orm-transactions/runner-autocommit":       engine.KindLeak,
	"orm-transactions/runner-transaction":      engine.KindNone,
	"orm-transactions/request-transaction":     engine.KindMeasurement,
	"orm-transactions/short-transaction":       engine.KindMeasurement,
	"your-app/session-set":                     engine.KindLeak,
	"your-app/tx-local":                        engine.KindFailedClosed,
	"set-leak/session-set":                     engine.KindLeak,
	"set-leak/tx-local":                        engine.KindFailedClosed,
	"set-leak/batch-local":                     engine.KindFailedClosed,
	"split-calls/set-param":                    engine.KindError,
	"split-calls/split":                        engine.KindLeak,
	"split-calls/one-tx":                       engine.KindNone,
	"shared-pool/conn-per-user":                engine.KindMeasurement,
	"shared-pool/shared-pool":                  engine.KindMeasurement,
	"wrong-scope/global":                       engine.KindLeak,
	"wrong-scope/context":                      engine.KindNone,
	"wrong-scope/conn-per-user":                engine.KindMeasurement,
	"rls-bypass/owner":                         engine.KindLeak,
	"rls-bypass/owner-forced":                  engine.KindNone,
	"rls-bypass/superuser":                     engine.KindLeak,
	"rls-bypass/bypassrls":                     engine.KindLeak,
	"rls-bypass/app-role":                      engine.KindFailedClosed,
	"rls-bypass/row-security-off":              engine.KindFailedClosed,
	"rls-bypass/insert-foreign":                engine.KindFailedClosed,
	"unset-setting/fresh":                      engine.KindFailedClosed,
	"unset-setting/after-reset":                engine.KindFailedClosed,
	"unset-setting/no-missing-ok":              engine.KindFailedClosed,
	"unset-setting/naive-cast":                 engine.KindFailedClosed,
	"unset-setting/fail-open":                  engine.KindLeak,
	"unset-setting/nullif":                     engine.KindFailedClosed,
	"reset-on-release/none":                    engine.KindLeak,
	"reset-on-release/reset-after-release":     engine.KindFailedClosed,
	"reset-on-release/reset-all":               engine.KindFailedClosed,
	"reset-on-release/discard-all":             engine.KindError,
	"reset-on-release/check-before-use":        engine.KindFailedClosed,
	"set-role/set-role":                        engine.KindLeak,
	"set-role/set-local-role":                  engine.KindFailedClosed,
	"set-role/injection":                       engine.KindLeak,
	"scoping-cost/measure":                     engine.KindMeasurement,
	"pgbouncer-tx/session-set":                 engine.KindLeak,
	"pgbouncer-tx/tx-local":                    engine.KindFailedClosed,
	"pgbouncer-tx/batch-local":                 engine.KindFailedClosed,
	"pgbouncer-tx/reset-always":                engine.KindFailedClosed,
	"pgbouncer-tx/prepared":                    engine.KindError,
	"pgbouncer-tx/fan-in":                      engine.KindMeasurement,
	"view-bypass/owner-view":                   engine.KindLeak,
	"view-bypass/definer-function":             engine.KindLeak,
	"view-bypass/invoker-view":                 engine.KindNone,
	"view-bypass/invoker-function":             engine.KindNone,
	"reset-scope/reset-setting":                engine.KindMeasurement,
	"reset-scope/reset-all":                    engine.KindMeasurement,
	"reset-scope/reset-role":                   engine.KindLeak,
	"reset-scope/discard-all":                  engine.KindMeasurement,
	"lost-context/background":                  engine.KindFailedClosed,
	"lost-context/worker-reuse":                engine.KindLeak,
	"lost-context/propagated":                  engine.KindNone,
	"trusted-flag/settable-flag":               engine.KindLeak,
	"trusted-flag/admin-role":                  engine.KindNone,
	"side-channels/unique-probe":               engine.KindDisclosure,
	"side-channels/truncate":                   engine.KindBreach,
	"side-channels/tenant-unique":              engine.KindNone,
	"side-channels/no-truncate":                engine.KindFailedClosed,
	"rls-performance/per-row":                  engine.KindMeasurement,
	"rls-performance/not-leakproof":            engine.KindMeasurement,
	"rls-performance/initplan":                 engine.KindMeasurement,
	"rls-performance/indexed":                  engine.KindMeasurement,
	"stale-plan/immutable-wrapper":             engine.KindLeak,
	"stale-plan/stable-wrapper":                engine.KindNone,
	"missing-rls/unprotected-partition":        engine.KindLeak,
	"missing-rls/new-table":                    engine.KindLeak,
	"missing-rls/rls-everywhere":               engine.KindNone,
	"cross-tenant-fk/unchecked-fk":             engine.KindBreach,
	"cross-tenant-fk/composite-fk":             engine.KindFailedClosed,
}

// mustRun runs scenario/variant in lab at full speed, like
// sessionstest.MustRun, and with the default parameters (params nil) also
// checks the kind of the run's outcome against wantKinds, so that every
// scenario test asserts what its variants show.
func mustRun(t *testing.T, lab *sessions.Lab, scenario, variant string, params map[string]string) engine.State {
	t.Helper()
	st := sessionstest.MustRun(t, lab, scenario, variant, params)
	if params != nil {
		return st
	}
	want, ok := wantKinds[scenario+"/"+variant]
	if !ok {
		t.Errorf("%s/%s: no outcome kind in wantKinds", scenario, variant)
		return st
	}
	got, ok := st.Outcome()
	if !ok || got.Kind != want {
		t.Errorf("%s/%s: outcome %q (%q), want kind %q", scenario, variant, got.Kind, got.Headline, want)
	}
	return st
}

// TestWantKindsCoverTheCatalog: every variant of every scenario has its
// expected kind, and the table names no variant that does not exist.
func TestWantKindsCoverTheCatalog(t *testing.T) {
	var names []string
	for _, s := range scenarios.DefaultCatalog().All() {
		for _, v := range s.Variants {
			names = append(names, s.ID+"/"+v.Name)
			if _, ok := wantKinds[s.ID+"/"+v.Name]; !ok {
				t.Errorf("%s/%s has no expected outcome kind", s.ID, v.Name)
			}
		}
	}
	for k := range wantKinds {
		if !slices.Contains(names, k) {
			t.Errorf("wantKinds names %s, which is no variant", k)
		}
	}
}
