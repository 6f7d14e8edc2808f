package scenarios

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// The helpers in this file serve the scenarios that add objects of their own
// to the lab (views, functions, policies, roles, tables) and must take them
// away again, and the requests that read tenant ids from something other
// than the invoices table.

// quote returns name as a quoted SQL identifier.
func quote(name string) string { return pgx.Identifier{name}.Sanitize() }

// labDDL runs stmts in one transaction on the lab's superuser connection and
// commits them. With asOwner the transaction first switches to the lab's
// owner role (SET LOCAL ROLE), so what it creates belongs to the owner.
func labDDL(ctx context.Context, env *engine.Env, asOwner bool, stmts ...string) error {
	return labDDLShowing(ctx, env, asOwner, "", stmts...)
}

// labDDLShowing is labDDL that, when table is not "", ends its transaction
// by reading the row-level security on table from the catalog and showing
// it as the policy in force (see engine.ReadPolicy).
func labDDLShowing(ctx context.Context, env *engine.Env, asOwner bool, table string, stmts ...string) error {
	return env.AdminTx(ctx, func(tx pgx.Tx) error {
		if asOwner {
			if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+quote(env.Sandbox.OwnerRole)); err != nil {
				return err
			}
		}
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		if table == "" {
			return nil
		}
		return env.ShowPolicy(ctx, tx, table)
	})
}

// undoDDL runs stmts as the superuser to remove what a scenario added,
// also when the run was cancelled (bounded by undoTimeout). A failure is
// logged and joined to *errp. Each statement must be safe to run when the
// object is already gone (IF EXISTS).
func undoDDL(ctx context.Context, env *engine.Env, errp *error, stmts ...string) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	if err := labDDL(uctx, env, false, stmts...); err != nil {
		env.Logger().Error("undo the scenario's objects", "err", err)
		*errp = errors.Join(*errp, err)
	}
}

// dropRole returns the statements that remove role name from the lab: its
// grants in the lab's database, then the role.
func dropRole(name string) []string {
	return []string{
		`DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = ` + quoteLiteral(name) + `) THEN EXECUTE 'DROP OWNED BY ` + doubleQuotes(quote(name)) + `'; END IF; END $$`,
		"DROP ROLE IF EXISTS " + quote(name),
	}
}

// quoteLiteral returns s as a SQL string literal.
func quoteLiteral(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}

// doubleQuotes doubles the single quotes of s, for SQL text inside a
// literal.
func doubleQuotes(s string) string {
	l := quoteLiteral(s)
	return l[1 : len(l)-1]
}

// observeFrom runs from, a query with a tenant_id column, on q and records
// on r what came back: how many rows, how many of another tenant than r's,
// and the backend's PID, tenant setting and role at that moment. It is the
// counterpart of Request.Observe for views, functions and other tables.
func observeFrom(ctx context.Context, r *engine.Request, q engine.Querier, from string, args ...any) error {
	sql := `SELECT pg_backend_pid(), current_setting('app.current_tenant', true), current_user::text,
       coalesce(array_agg(tenant_id ORDER BY tenant_id), '{}') FROM (` + from + `) AS s`
	var (
		pid     int32
		seen    *string
		role    string
		tenants []int32
	)
	if err := q.QueryRow(ctx, sql, args...).Scan(&pid, &seen, &role, &tenants); err != nil {
		return err
	}
	foreign := 0
	for _, t := range tenants {
		if int(t) != r.Tenant.ID {
			foreign++
		}
	}
	r.Update(func(row *engine.RequestRow) {
		row.PID, row.SeenTenant, row.Role = uint32(pid), seen, role
		row.Rows, row.ForeignRows, row.Leak = len(tenants), foreign, foreign > 0
		row.Phase, row.FinishedAt = "queried", time.Now().UnixMilli()
		if foreign > 0 {
			row.Why = fmt.Sprintf("LEAK: %d rows, %d of them another tenant's.", len(tenants), foreign)
		} else {
			row.Why = fmt.Sprintf("%d rows, all %s's own.", len(tenants), r.Tenant.Name)
		}
	})
	return nil
}

// scopedTx acquires a connection for r, begins a transaction and scopes it
// with set_config('app.current_tenant', setting, true). The caller releases
// r (ReleaseQuiet in a defer covers the error paths).
func scopedTx(ctx context.Context, r *engine.Request, setting string) (pgx.Tx, error) {
	if err := r.Acquire(ctx); err != nil {
		return nil, err
	}
	tx, err := r.Begin(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, engine.SetLocalSQL, setting); err != nil {
		r.Fail(err)
		return nil, err
	}
	return tx, nil
}

// adminAndPool is the connection need of a variant that changes the lab on
// its superuser connection, runs requests on a pool of one connection, and
// undoes its changes on the superuser connection while the pool is still
// open: one pool connection and the superuser connection, plus the
// superuser connection the run closed a moment before, whose backend may
// not have left the server yet.
var adminAndPool = engine.Fixed(3)
