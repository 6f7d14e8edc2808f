package scenarios

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Variants of unset-setting.
const (
	unsetFresh       = "fresh"
	unsetAfterReset  = "after-reset"
	unsetNoMissingOK = "no-missing-ok"
	unsetNaiveCast   = "naive-cast"
	unsetFailOpen    = "fail-open"
	unsetNullif      = "nullif"
)

// labPolicyUsing is the USING expression of the sandbox's tenant_isolation
// policy; scenarios that swap the policy put this one back.
const labPolicyUsing = `tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::int`

// unsetPolicies are the policies the policy variants install for their run.
var unsetPolicies = map[string]string{
	unsetNoMissingOK: `tenant_id = NULLIF(current_setting('app.current_tenant'), '')::int`,
	unsetNaiveCast:   `tenant_id = current_setting('app.current_tenant', true)::int`,
	unsetFailOpen:    `CASE WHEN coalesce(current_setting('app.current_tenant', true), '') = '' THEN true ELSE tenant_id = current_setting('app.current_tenant', true)::int END`,
}

// UnsetSetting returns the unset-setting scenario: what the tenant setting
// is on a connection that never set it (NULL), after a committed local set
// or a RESET (”), and what policies written in different ways make of
// those two values: an error without missing_ok (42704), a failed cast on
// ” (22P02), every row under a fail-open policy, nothing under NULLIF.
//
// The policy variants replace the lab's policy with ALTER POLICY (committed:
// the app's connections must see it) and always put the NULLIF policy back
// before the run returns, also when it is cancelled.
func UnsetSetting() *engine.Scenario {
	return &engine.Scenario{
		ID:    "unset-setting",
		Title: "An unset tenant setting: NULL, '' and what the policy makes of them",
		Variants: withRun(runUnsetSetting, []engine.Variant{
			{Name: unsetFresh, Summary: "A fresh connection that never set the tenant: current_setting(..., true) is NULL."},
			{Name: unsetAfterReset, Summary: "After a committed SET LOCAL, or after RESET, the same connection reads '' (empty), not NULL."},
			{Name: unsetNoMissingOK, Summary: "A policy calling current_setting without missing_ok: a fresh connection gets an error (42704), a used one does not."},
			{Name: unsetNaiveCast, Summary: "A policy casting the setting straight to int: NULL filters everything, '' raises 22P02."},
			{Name: unsetFailOpen, Summary: "A policy that treats an empty setting as \"all tenants\": an unscoped request reads everybody's rows."},
			{Name: unsetNullif, Summary: "The lab's policy, NULLIF(current_setting(..., true), '')::int: NULL and '' both match nothing; it fails closed."},
		}),
	}
}

func runUnsetSetting(ctx context.Context, env *engine.Env, variant string) (err error) {
	ts := env.Sandbox.Tenants
	if len(ts) < 3 {
		return errors.New("unset-setting needs three tenants in the sandbox")
	}
	acme, globex, initech := ts[0], ts[1], ts[2]
	policy := labPolicyUsing
	if p, ok := unsetPolicies[variant]; ok {
		policy = p
		restore, err := unsetSwapPolicy(ctx, env, p)
		if err != nil {
			return err
		}
		defer func() {
			if rerr := restore(); rerr != nil && err == nil {
				err = rerr
			}
		}()
	}
	size := int32(1)
	if variant == unsetFresh {
		size = 2
	}
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: size, MinConns: size})
	if err != nil {
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("The pool has opened %d connection(s); each box shows the tenant setting its own backend reports. The policy is: USING (%s).", size, policy)); err != nil {
		return err
	}
	play := func(r *engine.Request) error { return playUnset(ctx, env, r, variant) }
	switch variant {
	case unsetFresh:
		if err := play(pool.NewRequest(globex, engine.PatternForgot)); err != nil {
			return err
		}
	case unsetAfterReset:
		for _, r := range []*engine.Request{pool.NewRequest(acme, engine.PatternTxLocal), pool.NewRequest(globex, engine.PatternForgot), pool.NewRequest(initech, engine.PatternSessionSet)} {
			if err := play(r); err != nil {
				return err
			}
		}
		if err := unsetPlayReset(ctx, env, pool.NewRequest(globex, engine.PatternForgot)); err != nil {
			return err
		}
	default:
		// One connection: an unscoped request on the fresh backend, a
		// scoped one, and an unscoped one on the backend the scoped one
		// used.
		for _, r := range []*engine.Request{pool.NewRequest(globex, engine.PatternForgot), pool.NewRequest(acme, engine.PatternTxLocal), pool.NewRequest(initech, engine.PatternForgot)} {
			if err := play(r); err != nil {
				return err
			}
		}
	}
	unsetNotes(env)
	return env.Step(ctx, "Done. The request log says, per request, which value of the setting its backend held and what the policy made of it.")
}

// unsetSwapPolicy replaces the USING clause of the lab's tenant_isolation policy
// and returns the function that puts the lab's own back. The restore runs
// without the run's context, so a cancelled run still restores.
func unsetSwapPolicy(ctx context.Context, env *engine.Env, using string) (restore func() error, err error) {
	if err := unsetAlterPolicy(ctx, env, using); err != nil {
		return nil, err
	}
	return func() error {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
		defer cancel()
		if err := unsetAlterPolicy(rctx, env, labPolicyUsing); err != nil {
			env.Logger().Error("restore tenant_isolation policy", "err", err)
			return fmt.Errorf("restore the lab's policy: %w", err)
		}
		return nil
	}, nil
}

// unsetAlterPolicy runs ALTER POLICY tenant_isolation on the lab's superuser
// connection (a committed change, so the app's connections see it).
func unsetAlterPolicy(ctx context.Context, env *engine.Env, using string) error {
	conn, release, err := env.Sandbox.Admin(ctx)
	if err != nil {
		return err
	}
	defer release()
	if _, err := conn.Exec(ctx, "SET lock_timeout = '5s'"); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "ALTER POLICY tenant_isolation ON invoices USING ("+using+")"); err != nil {
		return fmt.Errorf("alter policy: %w", err)
	}
	return nil
}

// unsetHeld returns the tenant setting last read on r's connection.
func unsetHeld(r *engine.Request) (pid uint32, v *string) {
	if r.Conn() == nil {
		return 0, nil
	}
	slot := r.Pool().Slot(r.Conn().Conn())
	st := r.Env().Tracker().Snapshot()
	if i := engine.FindConn(&st, r.Pool().Name(), slot); i >= 0 {
		return st.Connections[i].PID, st.Connections[i].Tenant
	}
	return 0, nil
}

// playUnset runs r's phases; a server's refusal of the query is recorded
// on the request and the run goes on.
func playUnset(ctx context.Context, env *engine.Env, r *engine.Request, variant string) error {
	// Release even when Acquire's frame was cut short: the connection
	// may already be held.
	defer r.ReleaseQuiet(context.WithoutCancel(ctx))
	if err := r.Acquire(ctx); err != nil {
		return err
	}
	pid, held := unsetHeld(r)
	if err := r.Scope(ctx); err != nil {
		return err
	}
	qerr := r.Query(ctx)
	var pe *pgconn.PgError
	if qerr != nil && !errors.As(qerr, &pe) {
		return qerr
	}
	if pe != nil {
		// The query did not return the setting; the request changed nothing
		// since the value was read on this backend, so show that one.
		annotateRow(env, r.Seq, func(rr *engine.RequestRow) { rr.PID, rr.SeenTenant = pid, held })
	}
	row := rowBySeq(env, r.Seq)
	why := unsetWhy(env.Sandbox, variant, r, row, pe)
	annotateRow(env, r.Seq, func(rr *engine.RequestRow) { rr.Why = why })
	if pe != nil {
		if err := env.Step(ctx, fmt.Sprintf("%s on backend %d: %s", r.Label(), pid, why)); err != nil {
			return err
		}
	}
	if err := r.Release(ctx); err != nil {
		return err
	}
	if pe != nil {
		annotateRow(env, r.Seq, func(rr *engine.RequestRow) { rr.Phase = "failed" })
	}
	return nil
}

// unsetPlayReset has r run RESET app.current_tenant and then its query.
func unsetPlayReset(ctx context.Context, env *engine.Env, r *engine.Request) error {
	// Release even when Acquire's frame was cut short: the connection
	// may already be held.
	defer r.ReleaseQuiet(context.WithoutCancel(ctx))
	if err := r.Acquire(ctx); err != nil {
		return err
	}
	if _, err := r.Conn().Exec(ctx, "RESET app.current_tenant"); err != nil {
		r.Fail(err)
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("%s runs RESET app.current_tenant, as a pool's reset-on-release would.", r.Label())); err != nil {
		return err
	}
	if err := r.Query(ctx); err != nil {
		return err
	}
	row := rowBySeq(env, r.Seq)
	annotateRow(env, r.Seq, func(rr *engine.RequestRow) {
		rr.Why = "After RESET the setting is " + unsetQuote(row.SeenTenant) + ", not NULL: " + rr.Why
	})
	return r.Release(ctx)
}

// unsetQuote shows a setting value as SQL would.
func unsetQuote(v *string) string {
	if v == nil {
		return "NULL"
	}
	return "'" + *v + "'"
}

// unsetWhy explains one request's outcome under the variant's policy.
func unsetWhy(sb engine.Sandbox, variant string, r *engine.Request, row engine.RequestRow, pe *pgconn.PgError) string {
	v := unsetQuote(row.SeenTenant)
	switch {
	case pe != nil && pe.Code == "42704":
		return fmt.Sprintf("Refused (SQLSTATE 42704, %s): this backend never set the tenant (NULL with missing_ok), and the policy calls current_setting('app.current_tenant') without missing_ok.", pe.Message)
	case pe != nil && pe.Code == "22P02":
		return fmt.Sprintf("Refused (SQLSTATE 22P02, %s): the backend holds %s, left by an earlier request, and the policy casts it straight to int.", pe.Message, v)
	case pe != nil:
		return fmt.Sprintf("Refused (SQLSTATE %s): %s", pe.Code, pe.Message)
	case row.Leak && variant == unsetFailOpen:
		return fmt.Sprintf("LEAK: the setting is %s and this policy reads an empty setting as \"all tenants\": %d rows, %d of other tenants.", v, row.Rows, row.ForeignRows)
	case r.Pattern != engine.PatternForgot:
		return row.Why
	case row.Rows == 0 && variant == unsetNaiveCast && row.SeenTenant == nil:
		return "0 rows: the setting is NULL (never set on this backend); NULL::int is NULL and tenant_id = NULL matches nothing. It fails closed only because the value is NULL, not ''."
	case row.Rows == 0 && variant == unsetNoMissingOK && row.SeenTenant != nil:
		return fmt.Sprintf("0 rows, no error: this backend has set the tenant before, so the setting exists (%s) and current_setting without missing_ok no longer raises; NULLIF turns '' into NULL.", v)
	}
	return row.Why
}

// unsetNotes adds one note per finished request: backend, setting, and
// rows or SQLSTATE.
func unsetNotes(env *engine.Env) {
	st := env.Tracker().Snapshot()
	for _, r := range st.Requests {
		tenant := ""
		if r.Tenant != nil {
			tenant = env.Sandbox.TenantName(*r.Tenant)
		}
		head := fmt.Sprintf("Request #%d (%s, %s) on backend %d, setting %s", r.Seq, tenant, r.Pattern, r.PID, unsetQuote(r.SeenTenant))
		switch {
		case r.Error != "":
			env.Tracker().Note(fmt.Sprintf("%s: failed: %s", head, r.Error))
		case r.Leak:
			env.Tracker().Note(fmt.Sprintf("LEAK: %s: %d rows, %d of other tenants.", head, r.Rows, r.ForeignRows))
		default:
			env.Tracker().Note(fmt.Sprintf("%s: %d rows.", head, r.Rows))
		}
	}
}
