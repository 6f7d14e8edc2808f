package scenarios

import (
	"context"
	"fmt"

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
	v := func(pattern, summary string) engine.Variant {
		return engine.Variant{Name: pattern, Summary: summary, Run: func(ctx context.Context, env *engine.Env) error { return runSetLeak(ctx, env, pattern) }}
	}
	return &engine.Scenario{
		ID:     "set-leak",
		Pacing: engine.PacingReplay,
		Title:  "SET and the next request on a pooled connection",
		Variants: []engine.Variant{
			v(engine.PatternSessionSet, "Scope with set_config(..., false), a session-level SET, then query."),
			v(engine.PatternTxLocal, "Scope with set_config(..., true) inside BEGIN ... COMMIT, then query."),
			v(engine.PatternBatchLocal, "The transaction-local set_config queued with the query in one pgx.Batch: one round trip."),
		},
		Params:     []engine.Param{{Name: "pool", Summary: "connections in the pool", Min: 2, Max: 3, Default: 2}},
		MinTenants: 3,
		Conns:      func(p engine.Params, _ engine.Sandbox) int { return p.Get("pool") },
	}
}

// runSetLeak plays the set-leak order with tenant A scoping the way pattern
// says.
func runSetLeak(ctx context.Context, env *engine.Env, pattern string) error {
	size := env.Params.Get("pool")
	a, b, c := env.Sandbox.Tenants[0], env.Sandbox.Tenants[1], env.Sandbox.Tenants[2]
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: int32(size), MinConns: int32(size)})
	if err != nil {
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("The pool has opened its %d connections. Each box shows what its own backend reports: PID, tenant setting, role.", size)); err != nil {
		return err
	}
	first := pool.NewRequest(a, pattern)
	if err := first.Acquire(ctx); err != nil {
		return err
	}
	// Tenant C's slow requests hold every other connection, so that the
	// forgetful request below can only get the backend tenant A used.
	holders := make([]*engine.Request, size-1)
	for i := range holders {
		holders[i] = pool.NewRequest(c, pattern)
		if err := holders[i].Acquire(ctx); err != nil {
			return err
		}
	}
	if err := first.Finish(ctx); err != nil {
		return err
	}
	if err := pool.NewRequest(b, engine.PatternForgot).Do(ctx); err != nil {
		return err
	}
	for _, h := range holders {
		if err := h.Finish(ctx); err != nil {
			return err
		}
	}
	env.NoteRequests(engine.Notable)
	return env.Conclude(ctx, "The timeline shows the backend each request ran on and the tenant setting that backend held.")
}
