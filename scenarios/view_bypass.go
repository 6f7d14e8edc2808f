package scenarios

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Variants of view-bypass (stable names: tools and lessons rely on them).
const (
	ViewBypassOwnerView       = "owner-view"
	ViewBypassDefinerFunction = "definer-function"
	ViewBypassInvokerView     = "invoker-view"
	ViewBypassInvokerFunction = "invoker-function"
)

// The objects view-bypass adds to the lab for the length of a run.
const (
	reportView = "invoice_report"
	reportFunc = "invoice_list"
)

// ViewBypass returns the view-bypass scenario: a view and a function that
// read invoices, created the way a migration run by a superuser creates
// them. A plain view runs with its owner's rights, and a SECURITY DEFINER
// function runs as its owner, so the app role, scoped to Acme, reads every
// tenant's invoices through them; a view with security_invoker = true and a
// SECURITY INVOKER function run as the app role and are filtered.
func ViewBypass() *engine.Scenario {
	v := func(name, summary, create, from, object string) engine.Variant {
		return engine.Variant{Name: name, Summary: summary, Conns: adminAndPool, Run: func(ctx context.Context, env *engine.Env) error {
			return runViewBypass(ctx, env, create, from, object)
		}}
	}
	return &engine.Scenario{
		ID:     "view-bypass",
		Pacing: engine.PacingReplay,
		Title:  "Views and functions in front of an RLS table",
		Variants: []engine.Variant{
			v(ViewBypassOwnerView, "A plain view over invoices, created by the superuser that runs the migrations, read by the app role scoped to Acme.",
				"CREATE VIEW "+reportView+" AS SELECT id, tenant_id, customer, amount FROM invoices",
				"SELECT tenant_id FROM "+reportView, "the view "+reportView),
			v(ViewBypassDefinerFunction, "A SECURITY DEFINER function owned by that superuser, returning SELECT * FROM invoices, called by the app role scoped to Acme.",
				"CREATE FUNCTION "+reportFunc+"() RETURNS SETOF invoices LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS 'SELECT * FROM invoices'",
				"SELECT tenant_id FROM "+reportFunc+"()", "the function "+reportFunc+"()"),
			v(ViewBypassInvokerView, "The same view WITH (security_invoker = true) (PostgreSQL 15+).",
				"CREATE VIEW "+reportView+" WITH (security_invoker = true) AS SELECT id, tenant_id, customer, amount FROM invoices",
				"SELECT tenant_id FROM "+reportView, "the view "+reportView),
			v(ViewBypassInvokerFunction, "The same function as SECURITY INVOKER (the default).",
				"CREATE FUNCTION "+reportFunc+"() RETURNS SETOF invoices LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public AS 'SELECT * FROM invoices'",
				"SELECT tenant_id FROM "+reportFunc+"()", "the function "+reportFunc+"()"),
		},
		MinTenants: 2,
	}
}

// runViewBypass creates the object with create (as the superuser), lets the
// app role, scoped to Acme, read tenant ids through it with from, and drops
// the object again, also when the run is cancelled.
func runViewBypass(ctx context.Context, env *engine.Env, create, from, object string) (err error) {
	sb := env.Sandbox
	acme := sb.Tenants[0]
	defer undoDDL(ctx, env, &err, "DROP VIEW IF EXISTS "+reportView, "DROP FUNCTION IF EXISTS "+reportFunc+"()")
	// A view needs a grant; a function is executable by PUBLIC by default.
	grant := "GRANT SELECT ON " + reportView + " TO " + quote(sb.AppRole)
	if strings.HasPrefix(create, "CREATE FUNCTION") {
		grant = "GRANT EXECUTE ON FUNCTION " + reportFunc + "() TO " + quote(sb.AppRole)
	}
	if err := labDDL(ctx, env, false, create, grant); err != nil {
		return err
	}
	var owner, options string
	var definer bool
	if err := env.AdminTx(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT coalesce((SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = $1),
			(SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = $2)),
			coalesce((SELECT array_to_string(reloptions, ', ') FROM pg_class WHERE relname = $1), ''),
			coalesce((SELECT prosecdef FROM pg_proc WHERE proname = $2), false)`, reportView, reportFunc).Scan(&owner, &options, &definer); err != nil {
			return err
		}
		// The table's policy stays in force, forced: the object steps
		// around it.
		return env.ShowPolicy(ctx, tx, "invoices")
	}); err != nil {
		return err
	}
	desc := fmt.Sprintf("%s is created by %s, as a migration run by a superuser would create it", object, owner)
	switch {
	case options != "":
		desc += fmt.Sprintf(", with (%s)", options)
	case definer:
		desc += ", SECURITY DEFINER"
	}
	if err := env.Step(ctx, desc+". The app role may read it."); err != nil {
		return err
	}
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 1, MinConns: 1})
	if err != nil {
		return err
	}
	r := pool.NewRequest(acme, engine.PatternTxLocal)
	defer r.ReleaseQuiet(context.WithoutCancel(ctx))
	tx, err := scopedTx(ctx, r, acme.Setting())
	if err != nil {
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("%s: BEGIN; set_config('app.current_tenant', '%s', true), exactly as for the invoices table.", r.Label(), acme.Setting())); err != nil {
		return err
	}
	if err := observeFrom(ctx, r, tx, from); err != nil {
		r.Fail(err)
		return err
	}
	if err := r.Commit(ctx); err != nil {
		return err
	}
	row := r.Row()
	var why string
	if row.Leak {
		why = fmt.Sprintf("LEAK: %s returned %d rows, %d of other tenants, to the app role %s scoped to %s: %s runs with the rights of %s, who bypasses RLS.", object, row.Rows, row.ForeignRows, row.Role, acme.Name, object, owner)
	} else {
		why = fmt.Sprintf("%s returned %d rows, all %s's: it reads invoices as the app role %s, so the policy applies.", object, row.Rows, acme.Name, row.Role)
	}
	r.Update(func(rr *engine.RequestRow) { rr.Why = why })
	env.Tracker().Note(fmt.Sprintf("%s (owner %s): %s", from, owner, why))
	if err := env.Step(ctx, fmt.Sprintf("%s on backend %d: %s", r.Label(), row.PID, why)); err != nil {
		return err
	}
	if err := r.Release(ctx); err != nil {
		return err
	}
	direct := pool.NewRequest(acme, engine.PatternTxLocal)
	if err := direct.Do(ctx); err != nil {
		return err
	}
	if row.Leak {
		env.Tracker().Note(fmt.Sprintf("The same tenant reading invoices directly got %d rows: the table's policy is fine, the object in front of it is not.", direct.Row().Rows))
	} else {
		env.Tracker().Note(fmt.Sprintf("The same tenant reading invoices directly got %d rows: the object and the table agree.", direct.Row().Rows))
	}
	return env.Conclude(ctx, "The view or function is dropped again.")
}
