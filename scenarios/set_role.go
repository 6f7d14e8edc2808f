package scenarios

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Patterns of set-role (see the glossary).
const (
	PatternRole      = "role"       // SET ROLE <tenant role>: lasts for the Postgres session
	PatternLocalRole = "local-role" // SET LOCAL ROLE <tenant role> inside BEGIN ... COMMIT
)

// Variants of set-role (stable names: tools and lessons rely on them).
const (
	SetRoleSession   = "set-role"
	SetRoleLocal     = "set-local-role"
	SetRoleInjection = "injection"
)

// SetRole returns the set-role scenario: per-tenant roles that the app role
// may SET ROLE to. SET ROLE lasts for the Postgres session and leaks to the
// next request on the backend like SET does; SET LOCAL ROLE ends with the
// transaction. And neither a role nor a setting stops SQL injection: the
// injected text runs as the app, which may RESET ROLE and set_config any
// tenant.
func SetRole() *engine.Scenario {
	// One pool of one connection, and the lab's superuser connection that
	// drops the roles while the pool is still open.
	return &engine.Scenario{
		ID:     "set-role",
		Pacing: engine.PacingReplay,
		Title:  "SET ROLE per tenant: the next request on the connection, and SQL injection",
		Variants: []engine.Variant{
			{Name: SetRoleSession, Conns: engine.Fixed(2),
				Summary: "Scope with SET ROLE to the tenant's role; a later request on that backend forgets to scope.",
				Run: func(ctx context.Context, env *engine.Env) error {
					ts := env.Sandbox.Tenants
					return runSetRole(ctx, env, roleStep{ts[0], PatternRole, "", false}, roleStep{ts[1], engine.PatternForgot, "", false})
				}},
			{Name: SetRoleLocal, Conns: engine.Fixed(2),
				Summary: "Scope with SET LOCAL ROLE inside a transaction; a later request on that backend forgets to scope.",
				Run: func(ctx context.Context, env *engine.Env) error {
					ts := env.Sandbox.Tenants
					return runSetRole(ctx, env, roleStep{ts[0], PatternLocalRole, "", false}, roleStep{ts[1], engine.PatternForgot, "", false}, roleStep{ts[1], PatternLocalRole, "", false})
				}},
			{Name: SetRoleInjection, Conns: engine.Fixed(3),
				Summary: "A search term concatenated into the SQL of Acme's request; the term calls set_config and RESET ROLE.",
				Run: func(ctx context.Context, env *engine.Env) error {
					ts := env.Sandbox.Tenants
					// The second request runs on a second, fresh connection
					// (fresh: true), so that the first request's leftover
					// setting cannot be mistaken for the injection's effect.
					return runSetRole(ctx, env,
						roleStep{ts[0], engine.PatternTxLocal, "'; SELECT set_config('app.current_tenant','" + ts[1].Setting() + "',false); --", false},
						roleStep{ts[0], PatternLocalRole, "'; RESET ROLE; SELECT set_config('app.current_tenant','" + ts[2].Setting() + "',false); --", true})
				}},
		},
		MinTenants: 3,
	}
}

// roleStep is one request of a set-role variant: its tenant and pattern,
// the search term it sends to the vulnerable search ("" for none), and
// whether it runs on a pool of its own.
type roleStep struct {
	tenant  engine.Tenant
	pattern string
	term    string
	fresh   bool
}

func runSetRole(ctx context.Context, env *engine.Env, steps ...roleStep) (err error) {
	if err := env.MakeTenantRoles(ctx); err != nil {
		return err
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
		defer cancel()
		if uerr := env.DropTenantRoles(uctx); uerr != nil {
			env.Logger().Error("drop set-role roles", "err", uerr)
			if err == nil {
				err = uerr
			}
		}
	}()
	names := engine.TenantRoleNames(env.Sandbox)
	if err := env.Step(ctx, fmt.Sprintf("Roles %s (NOLOGIN) are granted to the app role %s, which may SET ROLE to any of them; a policy %s gives each the rows of its tenant.", strings.Join(names, ", "), env.Sandbox.AppRole, engine.TenantRolePolicy)); err != nil {
		return err
	}
	var pool *engine.Pool
	for i, s := range steps {
		if pool == nil || s.fresh {
			name := "app"
			if i > 0 {
				name = fmt.Sprintf("app-%d", i+1)
			}
			if pool, err = env.OpenPool(ctx, engine.PoolOptions{Name: name, MaxConns: 1, MinConns: 1}); err != nil {
				return err
			}
		}
		if err := roleRequest(ctx, env, pool.NewRequest(s.tenant, s.pattern), s.term); err != nil {
			return err
		}
	}
	env.NoteRequests(nil)
	for _, c := range env.Tracker().Connections() {
		env.Tracker().Note(fmt.Sprintf("After the run, backend %d (%s) was released as role %s with setting %s.", c.PID, c.Pool, c.Role, sqlValue(c.Tenant)))
	}
	return env.Conclude(ctx, "The role column is current_user as each query's own backend reported it.")
}

// roleRequest plays one request of set-role: acquire, scope as its pattern
// says, optionally run the vulnerable search with term, query, release.
func roleRequest(ctx context.Context, env *engine.Env, r *engine.Request, term string) error {
	// Release even when Acquire's frame was cut short: the connection may
	// already be held.
	defer r.ReleaseQuiet(context.WithoutCancel(ctx))
	if err := r.Acquire(ctx); err != nil {
		return err
	}
	role := pgx.Identifier{engine.TenantRole(env.Sandbox, r.Tenant)}.Sanitize()
	var q engine.Querier = r.Conn()
	var err error
	say := "sets no role and no tenant."
	switch r.Pattern {
	case PatternRole:
		_, err = r.Conn().Exec(ctx, "SET ROLE "+role)
		say = "runs SET ROLE " + role + ": a session-level setting, like SET."
	case PatternLocalRole:
		if q, err = r.Begin(ctx); err == nil {
			_, err = q.(pgx.Tx).Exec(ctx, "SET LOCAL ROLE "+role)
		}
		say = "runs BEGIN; SET LOCAL ROLE " + role + ": local to this transaction."
	case engine.PatternTxLocal:
		if q, err = r.Begin(ctx); err == nil {
			_, err = q.(pgx.Tx).Exec(ctx, engine.SetLocalSQL, r.Tenant.Setting())
		}
		say = fmt.Sprintf("runs BEGIN; set_config('app.current_tenant', '%s', true): local to this transaction.", r.Tenant.Setting())
	}
	if err != nil {
		r.Fail(err)
		return err
	}
	if err := env.Step(ctx, r.Label()+" "+say); err != nil {
		return err
	}
	if term != "" {
		// The vulnerable app: the search term is pasted into the SQL text and
		// sent with the simple protocol, which runs every statement in it.
		sql := "SELECT id, customer FROM invoices WHERE customer ILIKE '%" + term + "%'"
		results, err := r.Conn().Conn().PgConn().Exec(ctx, sql).ReadAll()
		if err != nil {
			r.Fail(err)
			return err
		}
		found := 0
		if len(results) > 0 {
			found = len(results[0].Rows)
		}
		if err := env.Step(ctx, fmt.Sprintf("%s searches for the term %q; the app pastes it into its SQL: %s. The server ran %d statements; the search itself found %d rows.", r.Label(), term, sql, len(results), found)); err != nil {
			return err
		}
	}
	if err := r.Observe(ctx, q); err != nil {
		r.Fail(err)
		return err
	}
	r.Update(func(row *engine.RequestRow) { row.Why = roleWhy(env.Sandbox, r, *row, term); row.Phase = "queried" })
	row := r.Row()
	if err := env.Step(ctx, fmt.Sprintf("%s on backend %d: %s", r.Label(), row.PID, row.Why)); err != nil {
		return err
	}
	if err := r.Commit(ctx); err != nil {
		return err
	}
	return r.Release(ctx)
}

// roleWhy explains what one set-role request saw.
func roleWhy(sb engine.Sandbox, r *engine.Request, row engine.RequestRow, term string) string {
	switch {
	case row.Leak && term != "":
		return fmt.Sprintf("LEAK: the injected text ran as the app (now role %s, setting %s): %d rows, %d of another tenant. The request's own scoping did not stop it.",
			row.Role, sqlValue(row.SeenTenant), row.Rows, row.ForeignRows)
	case row.Leak && row.Role != sb.AppRole:
		return fmt.Sprintf("LEAK: the backend still runs as %s, set by an earlier request with SET ROLE: %d rows of another tenant came back to %s.", row.Role, row.ForeignRows, r.Tenant.Name)
	case row.Leak:
		return fmt.Sprintf("LEAK: %d rows of another tenant (role %s, setting %s).", row.ForeignRows, row.Role, sqlValue(row.SeenTenant))
	case row.Rows == 0:
		return fmt.Sprintf("0 rows: role %s, setting %s; no policy matches, so it fails closed.", row.Role, sqlValue(row.SeenTenant))
	}
	return fmt.Sprintf("%d rows, all %s's own, as role %s.", row.Rows, r.Tenant.Name, row.Role)
}
