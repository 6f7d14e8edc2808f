package scenarios

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// SetLeak returns the set-leak scenario: a session-level SET survives the
// pool's release, and the next request on that backend that forgot to scope
// sees another tenant's rows.
//
// The order is controlled so that the leak happens on every run: the pool is
// filled to its size, tenant A's request and (pool size - 1) requests of
// tenant C hold every connection, A releases first, and so the forgetful
// request of tenant B can only get the backend A scoped.
func SetLeak() *engine.Scenario {
	return &engine.Scenario{
		ID:    "set-leak",
		Title: "Why SET leaks across pooled connections",
		Variants: withRun(runSetLeak, []engine.Variant{
			{Name: engine.PatternSessionSet, Summary: "Scope with set_config(..., false), a session-level SET: it outlives the request and the next request on that backend inherits it."},
			{Name: engine.PatternTxLocal, Summary: "Scope with set_config(..., true) inside BEGIN ... COMMIT: the setting ends with the transaction."},
			{Name: engine.PatternBatchLocal, Summary: "The same transaction-local set_config queued with the query in one pgx.Batch: one round trip."},
		}),
		Params: []engine.Param{{Name: "pool", Summary: "connections in the pool", Min: 2, Max: 3, Default: 2}},
	}
}

func runSetLeak(ctx context.Context, env *engine.Env, variant string) error {
	tenants := env.Sandbox.Tenants
	if len(tenants) < 3 {
		return errors.New("set-leak needs three tenants in the sandbox")
	}
	size := env.Params.Get("pool")
	if size == 0 {
		size = 2
	}
	a, b, c := tenants[0], tenants[1], tenants[2]
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: int32(size), MinConns: int32(size)})
	if err != nil {
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("The pool has opened its %d connections. Each box shows what its own backend reports: PID, tenant setting, role.", size)); err != nil {
		return err
	}
	first := pool.NewRequest(a, variant)
	if err := first.Acquire(ctx); err != nil {
		return err
	}
	// Tenant C's slow requests hold every other connection, so that the
	// forgetful request below can only get the backend tenant A used.
	holders := make([]*engine.Request, size-1)
	for i := range holders {
		holders[i] = pool.NewRequest(c, variant)
		if err := holders[i].Acquire(ctx); err != nil {
			return err
		}
	}
	for _, step := range []func(context.Context) error{first.Scope, first.Query, first.Release} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	forgot := pool.NewRequest(b, engine.PatternForgot)
	if err := forgot.Do(ctx); err != nil {
		return err
	}
	for _, h := range holders {
		for _, step := range []func(context.Context) error{h.Scope, h.Query, h.Release} {
			if err := step(ctx); err != nil {
				return err
			}
		}
	}
	summarize(env)
	return env.Step(ctx, "Done. The request log says, request by request, which backend served it, which tenant setting it ran under and whose rows came back.")
}

// summarize turns the observed request log into notes: every leak and every
// request that failed closed, with the backend and setting it ran under.
func summarize(env *engine.Env) {
	st := env.Tracker().Snapshot()
	for _, r := range st.Requests {
		tenant := ""
		if r.Tenant != nil {
			tenant = env.Sandbox.TenantName(*r.Tenant)
		}
		switch {
		case r.Leak:
			env.Tracker().Note(fmt.Sprintf("LEAK: request #%d for %s (%s) ran on backend %d, which %s, and got %d rows of another tenant.",
				r.Seq, tenant, r.Pattern, r.PID, engine.DescribeSetting(env.Sandbox, r.SeenTenant, "held"), r.ForeignRows))
		case r.Error != "":
			code := ""
			if r.SQLState != "" && !strings.Contains(r.Error, r.SQLState) {
				code = " [SQLSTATE " + r.SQLState + "]"
			}
			env.Tracker().Note(fmt.Sprintf("Request #%d for %s (%s) on backend %d failed: %s%s", r.Seq, tenant, r.Pattern, r.PID, r.Error, code))
		case r.Rows == 0 && r.Phase != "waiting":
			env.Tracker().Note(fmt.Sprintf("Request #%d for %s (%s) ran on backend %d, which %s: 0 rows, it failed closed.",
				r.Seq, tenant, r.Pattern, r.PID, engine.DescribeSetting(env.Sandbox, r.SeenTenant, "held")))
		}
	}
}
