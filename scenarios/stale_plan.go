package scenarios

import (
	"context"
	"fmt"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// Variants of stale-plan (stable names: tools and lessons rely on them).
const (
	StalePlanImmutable = "immutable-wrapper"
	StalePlanStable    = "stable-wrapper"
)

// The objects stale-plan adds to the lab for the length of a run: a copy of
// the invoices whose policy calls a wrapper function around the setting.
const (
	stalePlanTable = "plan_invoices"
	stalePlanFunc  = "current_tenant_id"
)

// StalePlan returns the stale-plan scenario: the policy reads the tenant
// through a SQL function current_tenant_id(). Declared IMMUTABLE, the
// planner folds its value into the plan, and pgx's cached prepared
// statement keeps the first tenant's plan: the next tenant's request on
// that connection gets the first tenant's rows. Declared STABLE, it is
// called when the query runs.
func StalePlan() *engine.Scenario {
	v := func(name, volatility, summary string) engine.Variant {
		return engine.Variant{Name: name, Summary: summary, Conns: adminAndPool, Run: func(ctx context.Context, env *engine.Env) error {
			return runStalePlan(ctx, env, volatility)
		}}
	}
	return &engine.Scenario{
		ID:     "stale-plan",
		Pacing: engine.PacingReplay,
		Title:  "A tenant helper function in a policy, and cached plans",
		Variants: []engine.Variant{
			v(StalePlanImmutable, "IMMUTABLE", "The policy calls current_tenant_id(), declared IMMUTABLE; three tenants query in turn on one pooled connection."),
			v(StalePlanStable, "STABLE", "The same function declared STABLE."),
		},
		MinTenants: 3,
	}
}

func runStalePlan(ctx context.Context, env *engine.Env, volatility string) (err error) {
	sb := env.Sandbox
	defer undoDDL(ctx, env, &err, "DROP TABLE IF EXISTS "+stalePlanTable, "DROP FUNCTION IF EXISTS "+stalePlanFunc+"()")
	fn := "CREATE FUNCTION " + stalePlanFunc + "() RETURNS int LANGUAGE sql " + volatility +
		" AS $$ SELECT NULLIF(current_setting('app.current_tenant', true), '')::int $$"
	policy := "CREATE POLICY tenant_isolation ON " + stalePlanTable + " USING (tenant_id = " + stalePlanFunc + "())"
	if err := labDDLShowing(ctx, env, true, stalePlanTable,
		fn,
		"CREATE TABLE "+stalePlanTable+" (id int PRIMARY KEY, tenant_id int NOT NULL)",
		"ALTER TABLE "+stalePlanTable+" ENABLE ROW LEVEL SECURITY",
		"ALTER TABLE "+stalePlanTable+" FORCE ROW LEVEL SECURITY",
		policy,
		"GRANT SELECT ON "+stalePlanTable+" TO "+quote(sb.AppRole)); err != nil {
		return err
	}
	// The superuser copies the rows: RLS would show the owner none of them.
	if err := labDDL(ctx, env, false, "INSERT INTO "+stalePlanTable+" SELECT id, tenant_id FROM invoices"); err != nil {
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("%s; a copy of the invoices, %s, with %s.", fn, stalePlanTable, policy)); err != nil {
		return err
	}
	// pgx's default: each statement is prepared once per connection and the
	// prepared statement is reused.
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 1, MinConns: 1})
	if err != nil {
		return err
	}
	query := "SELECT tenant_id FROM " + stalePlanTable
	for _, t := range sb.Tenants {
		r := pool.NewRequest(t, engine.PatternTxLocal)
		if err := staleRequest(ctx, env, r, query); err != nil {
			r.ReleaseQuiet(context.WithoutCancel(ctx))
			return err
		}
	}
	env.NoteRequests(nil)
	return env.Conclude(ctx, "The table and the function are dropped again.")
}

// staleRequest runs one request of stale-plan: scoped to its tenant in a
// transaction, it reads tenant ids with query through pgx's statement
// cache.
func staleRequest(ctx context.Context, env *engine.Env, r *engine.Request, query string) error {
	tx, err := scopedTx(ctx, r, r.Tenant.Setting())
	if err != nil {
		return err
	}
	if err := observeFrom(ctx, r, tx, query); err != nil {
		r.Fail(err)
		return err
	}
	if err := r.Commit(ctx); err != nil {
		return err
	}
	row := r.Row()
	if row.Leak {
		r.Update(func(rr *engine.RequestRow) {
			rr.Why = fmt.Sprintf("LEAK: the setting is '%s', but the cached plan compares tenant_id with the value folded in when it was planned: %d rows of another tenant.", deref(row.SeenTenant), row.ForeignRows)
		})
	}
	if err := env.Step(ctx, fmt.Sprintf("%s on backend %d, setting '%s': %s", r.Label(), row.PID, deref(row.SeenTenant), r.Row().Why)); err != nil {
		return err
	}
	return r.Release(ctx)
}
