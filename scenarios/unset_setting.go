package scenarios

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Variants of unset-setting (stable names: tools and lessons rely on them).
const (
	UnsetSettingFresh       = "fresh"
	UnsetSettingAfterReset  = "after-reset"
	UnsetSettingNoMissingOK = "no-missing-ok"
	UnsetSettingNaiveCast   = "naive-cast"
	UnsetSettingFailOpen    = "fail-open"
	UnsetSettingNullif      = "nullif"
)

// PatternReset labels a request that runs RESET app.current_tenant and then
// its query, with no scoping of its own.
const PatternReset = "reset"

// labPolicyUsing is the USING expression of the sandbox's tenant_isolation
// policy; scenarios that swap the policy put this one back.
const labPolicyUsing = `tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::int`

// unsetCase is one variant of unset-setting: the policy it runs under, its
// pool and its requests, and what the policy makes of an unscoped request.
type unsetCase struct {
	name, summary string
	using         string // the policy's USING clause; "" keeps the lab's
	pool          int32
	// play runs the variant's requests on pool.
	play func(ctx context.Context, env *engine.Env, u unsetCase, pool *engine.Pool) error
	// why explains an unscoped request that got no error under this policy;
	// "" keeps the usual explanation.
	why func(row engine.RequestRow, setting string) string
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
	cases := []unsetCase{
		{name: UnsetSettingFresh, pool: 2, play: playFresh,
			summary: "A fresh connection that never set the tenant runs the query."},
		{name: UnsetSettingAfterReset, pool: 1, play: playAfterReset,
			summary: "The same connection after a committed SET LOCAL, and after RESET, queries without scoping."},
		{name: UnsetSettingNoMissingOK, pool: 1, play: playThree,
			using:   `tenant_id = NULLIF(current_setting('app.current_tenant'), '')::int`,
			summary: "A policy calling current_setting('app.current_tenant') without missing_ok; a fresh connection and a used one query.",
			why: func(row engine.RequestRow, v string) string {
				if row.Rows != 0 || row.SeenTenant == nil {
					return ""
				}
				return fmt.Sprintf("0 rows, no error: this backend has set the tenant before, so the setting exists (%s) and current_setting without missing_ok no longer raises; NULLIF turns '' into NULL.", v)
			}},
		{name: UnsetSettingNaiveCast, pool: 1, play: playThree,
			using:   `tenant_id = current_setting('app.current_tenant', true)::int`,
			summary: "A policy casting the setting straight to int; requests query with the setting NULL and ''.",
			why: func(row engine.RequestRow, v string) string {
				if row.Rows != 0 || row.SeenTenant != nil {
					return ""
				}
				return "0 rows: the setting is NULL (never set on this backend); NULL::int is NULL and tenant_id = NULL matches nothing. It fails closed only because the value is NULL, not ''."
			}},
		{name: UnsetSettingFailOpen, pool: 1, play: playThree,
			using:   `CASE WHEN coalesce(current_setting('app.current_tenant', true), '') = '' THEN true ELSE tenant_id = current_setting('app.current_tenant', true)::int END`,
			summary: "A policy that treats an empty setting as \"all tenants\"; requests without a tenant query.",
			why: func(row engine.RequestRow, v string) string {
				if !row.Leak {
					return ""
				}
				return fmt.Sprintf("LEAK: the setting is %s and this policy reads an empty setting as \"all tenants\": %d rows, %d of other tenants.", v, row.Rows, row.ForeignRows)
			}},
		{name: UnsetSettingNullif, pool: 1, play: playThree,
			summary: "The lab's policy, NULLIF(current_setting(..., true), '')::int; requests query with the setting NULL and ''."},
	}
	sc := &engine.Scenario{
		ID:         "unset-setting",
		Pacing:     engine.PacingReplay,
		Title:      "An unset tenant setting: NULL, '' and what the policy makes of them",
		MinTenants: 3,
	}
	for _, u := range cases {
		// The lab's superuser connection reads (and may swap) the policy
		// before the pool opens, and swaps it back while the pool is open.
		need := int(u.pool) + 1
		sc.Variants = append(sc.Variants, engine.Variant{Name: u.name, Summary: u.summary, Conns: engine.Fixed(need),
			Run: func(ctx context.Context, env *engine.Env) error { return runUnsetSetting(ctx, env, u) }})
	}
	return sc
}

func runUnsetSetting(ctx context.Context, env *engine.Env, u unsetCase) (err error) {
	policy := labPolicyUsing
	if u.using == "" {
		// The lab's policy stays: show it as the catalog has it.
		if err := env.AdminTx(ctx, func(tx pgx.Tx) error { return env.ShowPolicy(ctx, tx, "invoices") }); err != nil {
			return err
		}
	} else {
		policy = u.using
		if err := unsetAlterPolicy(ctx, env, u.using, true); err != nil {
			return err
		}
		defer func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
			defer cancel()
			if rerr := unsetAlterPolicy(rctx, env, labPolicyUsing, false); rerr != nil {
				env.Logger().Error("restore tenant_isolation policy", "err", rerr)
				if err == nil {
					err = fmt.Errorf("restore the lab's policy: %w", rerr)
				}
			}
		}()
	}
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: u.pool, MinConns: u.pool})
	if err != nil {
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("The pool has opened %d connection(s); each box shows the tenant setting its own backend reports. The policy is: USING (%s).", u.pool, policy)); err != nil {
		return err
	}
	if err := u.play(ctx, env, u, pool); err != nil {
		return err
	}
	env.NoteRequests(nil)
	return env.Conclude(ctx, "The ran under column is the value each request's backend held; the outcome column says what the policy made of it.")
}

// unsetAlterPolicy replaces the USING clause of the lab's tenant_isolation
// policy on the lab's superuser connection (a committed change, so the
// app's connections see it); with show, it shows the policy as the catalog
// then has it: the policy the run's requests run under (putting the lab's
// policy back after the run does not replace it in the live view).
func unsetAlterPolicy(ctx context.Context, env *engine.Env, using string, show bool) error {
	return env.AdminTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '5s'"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "ALTER POLICY tenant_isolation ON invoices USING ("+using+")"); err != nil {
			return fmt.Errorf("alter policy: %w", err)
		}
		if !show {
			return nil
		}
		return env.ShowPolicy(ctx, tx, "invoices")
	})
}

// playFresh sends one unscoped request on a fresh backend.
func playFresh(ctx context.Context, env *engine.Env, u unsetCase, pool *engine.Pool) error {
	return playUnset(ctx, env, u, pool.NewRequest(env.Sandbox.Tenants[1], engine.PatternForgot))
}

// playThree, on a pool of one: an unscoped request on the fresh backend, a
// scoped one, and an unscoped one on the backend the scoped one used.
func playThree(ctx context.Context, env *engine.Env, u unsetCase, pool *engine.Pool) error {
	ts := env.Sandbox.Tenants
	for _, r := range []*engine.Request{pool.NewRequest(ts[1], engine.PatternForgot), pool.NewRequest(ts[0], engine.PatternTxLocal), pool.NewRequest(ts[2], engine.PatternForgot)} {
		if err := playUnset(ctx, env, u, r); err != nil {
			return err
		}
	}
	return nil
}

// playAfterReset shows ” after a committed local set, a session set over
// it, and ” again after RESET.
func playAfterReset(ctx context.Context, env *engine.Env, u unsetCase, pool *engine.Pool) error {
	ts := env.Sandbox.Tenants
	for _, r := range []*engine.Request{pool.NewRequest(ts[0], engine.PatternTxLocal), pool.NewRequest(ts[1], engine.PatternForgot), pool.NewRequest(ts[2], engine.PatternSessionSet)} {
		if err := playUnset(ctx, env, u, r); err != nil {
			return err
		}
	}
	r := pool.NewRequest(ts[1], PatternReset)
	// Release even when Acquire's frame was cut short: the connection may
	// already be held.
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
	r.Update(func(rr *engine.RequestRow) {
		rr.Why = "After RESET the setting is " + sqlValue(rr.SeenTenant) + ", not NULL: " + rr.Why
	})
	return r.Release(ctx)
}

// playUnset runs r's phases; a server's refusal of the query is recorded
// on the request and the run goes on.
func playUnset(ctx context.Context, env *engine.Env, u unsetCase, r *engine.Request) error {
	// Release even when Acquire's frame was cut short: the connection may
	// already be held.
	defer r.ReleaseQuiet(context.WithoutCancel(ctx))
	if err := r.Acquire(ctx); err != nil {
		return err
	}
	pid, held := r.Held()
	if err := r.Scope(ctx); err != nil {
		return err
	}
	qerr := r.Query(ctx)
	var pe *pgconn.PgError
	if qerr != nil && !errors.As(qerr, &pe) {
		return qerr
	}
	r.Update(func(row *engine.RequestRow) {
		if pe != nil {
			// The query did not return the setting; the request changed
			// nothing since the value was read on this backend, so show
			// that one.
			row.PID, row.SeenTenant = pid, held
		}
		row.Why = unsetWhy(u, r, *row, pe)
	})
	if pe != nil {
		if err := env.Step(ctx, fmt.Sprintf("%s on backend %d: %s", r.Label(), pid, r.Row().Why)); err != nil {
			return err
		}
	}
	if err := r.Release(ctx); err != nil {
		return err
	}
	if pe != nil {
		r.SetPhase("failed")
	}
	return nil
}

// sqlValue shows a setting value as SQL would.
func sqlValue(v *string) string {
	if v == nil {
		return "NULL"
	}
	return "'" + *v + "'"
}

// unsetWhy explains one request's outcome under the variant's policy.
func unsetWhy(u unsetCase, r *engine.Request, row engine.RequestRow, pe *pgconn.PgError) string {
	v := sqlValue(row.SeenTenant)
	switch {
	case pe != nil && pe.Code == "42704":
		return fmt.Sprintf("Refused (SQLSTATE 42704, %s): this backend never set the tenant (NULL with missing_ok), and the policy calls current_setting('app.current_tenant') without missing_ok.", pe.Message)
	case pe != nil && pe.Code == "22P02":
		return fmt.Sprintf("Refused (SQLSTATE 22P02, %s): the backend holds %s, left by an earlier request, and the policy casts it straight to int.", pe.Message, v)
	case pe != nil:
		return fmt.Sprintf("Refused (SQLSTATE %s): %s", pe.Code, pe.Message)
	case r.Pattern == engine.PatternForgot && u.why != nil:
		if why := u.why(row, v); why != "" {
			return why
		}
	}
	return row.Why
}
