package scenarios

import (
	"context"
	"fmt"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// Variants of trusted-flag (stable names: tools and lessons rely on them).
const (
	TrustedFlagSettable  = "settable-flag"
	TrustedFlagAdminRole = "admin-role"
)

// adminPolicy is the second, permissive policy trusted-flag adds to
// invoices for the length of a run.
const adminPolicy = "admin_override"

// flagTerm is the search term an attacker sends: pasted into the app's
// search, it turns the flag on for the rest of the transaction.
const flagTerm = "no-such-customer' OR set_config('app.is_admin', 'on', true) IS NULL OR customer LIKE '"

// TrustedFlag returns the trusted-flag scenario: a policy that lets admins
// see every tenant by trusting a setting, OR current_setting('app.is_admin')
// = 'on'. Any SQL the app role runs may set that setting, so one injected
// expression in a search makes a tenant's request admin. The fix gives the
// admin policy to a role the app role is not a member of.
func TrustedFlag() *engine.Scenario {
	return &engine.Scenario{
		ID:     "trusted-flag",
		Pacing: engine.PacingReplay,
		Title:  "An admin override in a policy: a setting or a role",
		Variants: []engine.Variant{
			{Name: TrustedFlagSettable, Conns: adminAndPool,
				Summary: "Admins are recognised by the setting app.is_admin = 'on'; Acme's search term calls set_config.",
				Run: func(ctx context.Context, env *engine.Env) error {
					return runTrustedFlag(ctx, env, false)
				}},
			{Name: TrustedFlagAdminRole, Conns: adminAndPool,
				Summary: "The admin policy is granted TO a role the app role cannot become; Acme sends the same search term.",
				Run: func(ctx context.Context, env *engine.Env) error {
					return runTrustedFlag(ctx, env, true)
				}},
		},
		MinTenants: 2,
	}
}

// adminRole is the role that admin-role's policy is for.
func adminRole(sb engine.Sandbox) string { return "lab_" + sb.Lab + "_admin" }

func runTrustedFlag(ctx context.Context, env *engine.Env, byRole bool) (err error) {
	sb := env.Sandbox
	acme := sb.Tenants[0]
	defer undoDDL(ctx, env, &err, append([]string{"DROP POLICY IF EXISTS " + adminPolicy + " ON invoices"}, dropRole(adminRole(sb))...)...)
	policy := "CREATE POLICY " + adminPolicy + " ON invoices USING (current_setting('app.is_admin', true) = 'on')"
	stmts := []string{policy}
	if byRole {
		admin := quote(adminRole(sb))
		policy = "CREATE POLICY " + adminPolicy + " ON invoices TO " + admin + " USING (true)"
		stmts = []string{"CREATE ROLE " + admin + " NOLOGIN", "GRANT USAGE ON SCHEMA public TO " + admin, "GRANT SELECT ON invoices TO " + admin, policy}
	}
	if err := labDDLShowing(ctx, env, false, "invoices", stmts...); err != nil {
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("A second policy on invoices for the admin screens: %s. Policies are permissive: a row is visible if any of them allows it.", policy)); err != nil {
		return err
	}
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 1, MinConns: 1})
	if err != nil {
		return err
	}
	plain := pool.NewRequest(acme, engine.PatternTxLocal)
	if err := plain.Do(ctx); err != nil {
		return err
	}
	r := pool.NewRequest(acme, engine.PatternTxLocal)
	defer r.ReleaseQuiet(context.WithoutCancel(ctx))
	tx, err := scopedTx(ctx, r, acme.Setting())
	if err != nil {
		return err
	}
	search := "SELECT count(*) FROM invoices WHERE customer LIKE '%" + flagTerm + "%'"
	var found int
	if err := tx.QueryRow(ctx, search).Scan(&found); err != nil {
		r.Fail(err)
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("%s, scoped to %s, searches for a term the app pastes into its SQL: %s (%d matches).", r.Label(), acme.Name, search, found)); err != nil {
		return err
	}
	if err := r.Observe(ctx, tx); err != nil {
		r.Fail(err)
		return err
	}
	var flag *string
	if err := tx.QueryRow(ctx, "SELECT current_setting('app.is_admin', true)").Scan(&flag); err != nil {
		r.Fail(err)
		return err
	}
	if err := r.Commit(ctx); err != nil {
		return err
	}
	row := r.Row()
	on := 0.0
	if flag != nil && *flag == "on" {
		on = 1
	}
	env.Tracker().SetMetric("admin_flag_set", fmt.Sprint(on == 1), on)
	why := fmt.Sprintf("app.is_admin is '%s' and the tenant setting still '%s', as %s: %d rows, all %s's. The admin policy is for %s, and the app role is not a member.", deref(flag), acme.Setting(), row.Role, row.Rows, acme.Name, adminRole(sb))
	if row.Leak {
		why = fmt.Sprintf("LEAK: the injected set_config turned app.is_admin '%s' for the rest of the transaction; the same query scoped to %s then returned %d rows, %d of other tenants.", deref(flag), acme.Name, row.Rows, row.ForeignRows)
	}
	r.Update(func(rr *engine.RequestRow) { rr.Why = why })
	env.Tracker().Note(fmt.Sprintf("Request #%d: %s", r.Seq, why))
	if err := env.Step(ctx, fmt.Sprintf("%s on backend %d: %s", r.Label(), row.PID, why)); err != nil {
		return err
	}
	if err := r.Release(ctx); err != nil {
		return err
	}
	return env.Conclude(ctx, "The admin policy is dropped again.")
}

// deref returns *s, or "NULL".
func deref(s *string) string {
	if s == nil {
		return "NULL"
	}
	return *s
}
