package scenarios

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Variants of rls-bypass (stable names: tools and lessons rely on them).
const (
	RLSBypassOwner       = "owner"
	RLSBypassOwnerForced = "owner-forced"
	RLSBypassSuperuser   = "superuser"
	RLSBypassRole        = "bypassrls"
	RLSBypassAppRole     = "app-role"
	RLSBypassRowSecOff   = "row-security-off"
	RLSBypassInsert      = "insert-foreign"
)

// privPool is the name under which the lab's superuser connection appears in
// the live view and on request rows that ran on it.
const privPool = "admin"

// undoTimeout bounds the statements that undo a scenario's changes to the
// lab, which run even when the run was cancelled.
const undoTimeout = 15 * time.Second

// RLSBypass returns the rls-bypass scenario: the same tenant-scoped query run
// as the table owner (with and without FORCE ROW LEVEL SECURITY), as a
// superuser, as a BYPASSRLS role and as the app's own role; plus what
// row_security = off and an INSERT of another tenant's row get from the
// server.
//
// The privileged variants run on the lab's superuser connection, inside one
// transaction that is always rolled back: the owner is reached with SET LOCAL
// ROLE, the NO FORCE of the owner variant and the BYPASSRLS role are DDL in
// that transaction, so the lab is never left unforced and the role never
// outlives the run.
func RLSBypass() *engine.Scenario {
	owner := func(sb engine.Sandbox) string { return pgx.Identifier{sb.OwnerRole}.Sanitize() }
	return &engine.Scenario{
		ID:     "rls-bypass",
		Pacing: engine.PacingReplay,
		Title:  "Which roles RLS filters: the owner, superusers, BYPASSRLS, the app's role",
		Variants: []engine.Variant{
			privileged(RLSBypassOwner, "The query runs as the table's owner; RLS is enabled on the table, not forced.",
				func(sb engine.Sandbox) []privStep {
					return []privStep{
						{sql: "ALTER TABLE invoices NO FORCE ROW LEVEL SECURITY", say: "BEGIN; ALTER TABLE invoices NO FORCE ROW LEVEL SECURITY: inside this transaction RLS is enabled but not forced, the state of a table whose owner never ran FORCE."},
						{sql: "SET LOCAL ROLE " + owner(sb), say: "SET LOCAL ROLE " + sb.OwnerRole + ": from here the transaction runs as the table's owner, the role many apps connect as."},
					}
				}, func(ctx context.Context, conn *pgx.Conn, sb engine.Sandbox) (string, error) {
					var forced bool
					err := conn.QueryRow(ctx, `SELECT relforcerowsecurity FROM pg_class WHERE oid = 'invoices'::regclass`).Scan(&forced)
					return fmt.Sprintf("ROLLBACK: the NO FORCE was part of the transaction; invoices is forced again: relforcerowsecurity = %t.", forced), err
				}),
			privileged(RLSBypassOwnerForced, "The same owner after ALTER TABLE ... FORCE ROW LEVEL SECURITY.",
				func(sb engine.Sandbox) []privStep {
					return []privStep{{sql: "SET LOCAL ROLE " + owner(sb), say: "BEGIN; SET LOCAL ROLE " + sb.OwnerRole + ": the table's owner, with the lab's FORCE ROW LEVEL SECURITY left on."}}
				}, nil),
			// Nothing to change: the connection is already a superuser and
			// the lab's table is forced.
			privileged(RLSBypassSuperuser, "The query runs as a superuser, scoped to Acme.", nil, nil),
			privileged(RLSBypassRole, "The query runs as a role created WITH BYPASSRLS, scoped to Acme.",
				func(sb engine.Sandbox) []privStep {
					name := bypassRole(sb)
					q := pgx.Identifier{name}.Sanitize()
					return []privStep{
						{sql: "CREATE ROLE " + q + " NOLOGIN NOSUPERUSER BYPASSRLS", say: "BEGIN; CREATE ROLE " + name + " NOLOGIN NOSUPERUSER BYPASSRLS: an ordinary role with the one attribute BYPASSRLS (created in this transaction, gone at its rollback)."},
						{sql: "GRANT USAGE ON SCHEMA public TO " + q, say: "GRANT USAGE ON SCHEMA public TO " + name + "."},
						{sql: "GRANT SELECT ON invoices TO " + q, say: "GRANT SELECT ON invoices TO " + name + ": the same privilege the app role has."},
						{sql: "SET LOCAL ROLE " + q, say: "SET LOCAL ROLE " + name + ": the transaction now runs as that role."},
					}
				}, func(ctx context.Context, conn *pgx.Conn, sb engine.Sandbox) (string, error) {
					var n int
					err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname = $1`, bypassRole(sb)).Scan(&n)
					return fmt.Sprintf("ROLLBACK: the role %s was created in the transaction; roles with that name now: %d.", bypassRole(sb), n), err
				}),
			{Name: RLSBypassAppRole, Run: runBypassAppRole, Conns: engine.Fixed(1),
				Summary: "The app's own login role (not the owner, NOSUPERUSER, NOBYPASSRLS), scoped to Acme."},
			{Name: RLSBypassRowSecOff, Run: runRowSecurityOff, Conns: engine.Fixed(1),
				Summary: "The app role runs SET LOCAL row_security = off before its query."},
			{Name: RLSBypassInsert, Run: runInsertForeign, Conns: engine.Fixed(1),
				Summary: "The app role, scoped to Acme, inserts an invoice with Globex's tenant_id."},
		},
		MinTenants: 2,
	}
}

// bypassRole is the name of the BYPASSRLS role the bypassrls variant
// creates in its transaction.
func bypassRole(sb engine.Sandbox) string { return "lab_" + sb.Lab + "_bypass" }

// privStep is one statement of a privileged variant and its narration.
type privStep struct {
	sql, say string
	args     []any
}

// privileged returns a variant that runs the tenant-scoped query on the
// lab's superuser connection after its steps, in a transaction it rolls
// back; after, when set, narrates what the rollback undid.
func privileged(name, summary string, steps func(engine.Sandbox) []privStep, after func(context.Context, *pgx.Conn, engine.Sandbox) (string, error)) engine.Variant {
	return engine.Variant{Name: name, Summary: summary, Conns: engine.Fixed(1), Run: func(ctx context.Context, env *engine.Env) error {
		var s []privStep
		if steps != nil {
			s = steps(env.Sandbox)
		}
		return runPrivileged(ctx, env, name, s, after)
	}}
}

// runPrivileged runs the tenant-scoped query on the lab's superuser
// connection, as the role the steps switch to, in a transaction it rolls
// back.
func runPrivileged(ctx context.Context, env *engine.Env, variant string, steps []privStep, after func(context.Context, *pgx.Conn, engine.Sandbox) (string, error)) error {
	sb := env.Sandbox
	acme := sb.Tenants[0]
	conn, release, err := sb.Admin(ctx)
	if err != nil {
		return err
	}
	defer release()
	id, err := engine.Identify(ctx, conn)
	if err != nil {
		return err
	}
	show := func(id engine.Identity, state string) {
		env.ShowConn(engine.Connection{Pool: privPool, Slot: 1, PID: id.PID, Tenant: id.Tenant, Role: id.Role, State: state})
	}
	show(id, engine.ConnIdle)
	defer env.HideConn(privPool, 1)
	if err := env.Step(ctx, fmt.Sprintf("The lab's superuser connection is open: backend %d, role %s. It never serves the app's requests; here it plays the role under test, inside one transaction that is rolled back at the end.", id.PID, id.Role)); err != nil {
		return err
	}
	r := env.NewRequest(acme, engine.PatternTxLocal, privPool, "acquired")
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	// DDL is transactional: rolling back undoes NO FORCE and CREATE ROLE,
	// also when the run is cancelled (a cancelled query closes the
	// connection, which rolls back too).
	defer tx.Rollback(context.WithoutCancel(ctx))
	show(id, engine.ConnAcquired)
	steps = append(steps, privStep{engine.SetLocalSQL, fmt.Sprintf("set_config('app.current_tenant', '%s', true): the transaction is scoped to %s, exactly as the app scopes a request.", acme.Setting(), acme.Name), []any{acme.Setting()}})
	for _, s := range steps {
		if _, err := tx.Exec(ctx, s.sql, s.args...); err != nil {
			r.Fail(err)
			return fmt.Errorf("%s: %w", s.sql, err)
		}
		if err := env.Step(ctx, s.say); err != nil {
			return err
		}
	}
	// The policy and flags as this transaction sees them, its own NO FORCE
	// included: what the query below runs under.
	if err := env.ShowPolicy(ctx, tx, "invoices"); err != nil {
		return err
	}
	var enabled, forced, super, bypassAttr bool
	err = tx.QueryRow(ctx, `SELECT c.relrowsecurity, c.relforcerowsecurity, r.rolsuper, r.rolbypassrls
		FROM pg_class c, pg_roles r WHERE c.oid = 'invoices'::regclass AND r.rolname = current_user`).Scan(&enabled, &forced, &super, &bypassAttr)
	if err != nil {
		return err
	}
	if err := r.Observe(ctx, tx); err != nil {
		r.Fail(err)
		return err
	}
	row := r.Row()
	show(engine.Identity{PID: row.PID, Tenant: row.SeenTenant, Role: row.Role}, engine.ConnAcquired)
	table := fmt.Sprintf("RLS enabled=%t, forced=%t; role %s: superuser=%t, bypassrls=%t", enabled, forced, row.Role, super, bypassAttr)
	var why string
	switch {
	case row.Leak && (super || bypassAttr):
		kind := "it has BYPASSRLS"
		if super {
			kind = "it is a superuser"
		}
		why = fmt.Sprintf("LEAK: %s returned %d rows, %d of other tenants: %s, so the policy is never applied (%s).", row.Role, row.Rows, row.ForeignRows, kind, table)
	case row.Leak && !forced:
		why = fmt.Sprintf("LEAK: %s owns invoices and RLS is not forced, so the policy is skipped for it: %d rows, %d of other tenants (%s).", row.Role, row.Rows, row.ForeignRows, table)
	case row.Leak:
		why = fmt.Sprintf("LEAK: %d rows, %d of other tenants (%s).", row.Rows, row.ForeignRows, table)
	default:
		why = fmt.Sprintf("%d rows, all %s's own: the policy applied to %s (%s).", row.Rows, acme.Name, row.Role, table)
	}
	r.Update(func(rr *engine.RequestRow) { rr.Why = why; rr.Phase = "queried" })
	env.Tracker().Note(fmt.Sprintf("%s: the query scoped to %s on backend %d as %s returned %d rows, %d of other tenants (%s).",
		variant, acme.Name, row.PID, row.Role, row.Rows, row.ForeignRows, table))
	if err := env.Step(ctx, fmt.Sprintf("Request #%d as %s on backend %d: %s", r.Seq, row.Role, row.PID, why)); err != nil {
		return err
	}
	if err := tx.Rollback(ctx); err != nil {
		return err
	}
	show(id, engine.ConnIdle)
	r.SetPhase("released")
	say := "ROLLBACK: everything this transaction changed is undone."
	if after != nil {
		if say, err = after(ctx, conn, sb); err != nil {
			return err
		}
	}
	return env.Conclude(ctx, say)
}

// runBypassAppRole runs the same query as the app's own login role.
func runBypassAppRole(ctx context.Context, env *engine.Env) error {
	acme, globex := env.Sandbox.Tenants[0], env.Sandbox.Tenants[1]
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 1, MinConns: 1})
	if err != nil {
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("A pool of one connection as the app role %s: not the owner, NOSUPERUSER, NOBYPASSRLS.", env.Sandbox.AppRole)); err != nil {
		return err
	}
	r := pool.NewRequest(acme, engine.PatternTxLocal)
	if err := r.Acquire(ctx); err != nil {
		r.ReleaseQuiet(context.WithoutCancel(ctx))
		return err
	}
	// The app role reads the catalog too: reading it sets nothing on the
	// connection.
	if err := env.ShowPolicy(ctx, r.Conn(), "invoices"); err != nil {
		r.ReleaseQuiet(context.WithoutCancel(ctx))
		return err
	}
	if err := r.Finish(ctx); err != nil {
		return err
	}
	row := r.Row()
	env.Tracker().Note(fmt.Sprintf("app-role: the query scoped to %s on backend %d as %s returned %d rows, %d of other tenants.", acme.Name, row.PID, row.Role, row.Rows, row.ForeignRows))
	f := pool.NewRequest(globex, engine.PatternForgot)
	if err := f.Do(ctx); err != nil {
		return err
	}
	row = f.Row()
	env.Tracker().Note(fmt.Sprintf("app-role: the same query with no tenant set, on backend %d, returned %d rows: the policy fails closed.", row.PID, row.Rows))
	return env.Conclude(ctx, "As the app role, the policy decides what each query sees.")
}

// appRoleTx opens a one-connection pool of the app role, begins a
// transaction for a request of tenant t and scopes it with stmts (each run
// with t's setting when it takes a parameter), then narrates what it did.
// done rolls the transaction back and releases the connection, even when
// the acquire's frame was cut short.
func appRoleTx(ctx context.Context, env *engine.Env, t engine.Tenant, narration string, stmts ...string) (*engine.Request, pgx.Tx, func(), error) {
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 1, MinConns: 1})
	if err != nil {
		return nil, nil, nil, err
	}
	r := pool.NewRequest(t, engine.PatternTxLocal)
	done := func() { r.ReleaseQuiet(context.WithoutCancel(ctx)) }
	err = r.Acquire(ctx)
	var tx pgx.Tx
	if err == nil {
		tx, err = r.Begin(ctx)
	}
	for _, s := range stmts {
		if err == nil {
			if s == engine.SetLocalSQL {
				_, err = tx.Exec(ctx, s, t.Setting())
			} else {
				_, err = tx.Exec(ctx, s)
			}
		}
	}
	if err == nil {
		err = env.ShowPolicy(ctx, tx, "invoices")
	}
	if err == nil {
		err = env.Step(ctx, fmt.Sprintf("Request #%d: %s", r.Seq, narration))
	} else {
		r.Fail(err)
	}
	if err != nil {
		done()
		return nil, nil, nil, err
	}
	return r, tx, done, nil
}

// refused records err on r; when the server refused the statement, it
// also records why and notes it, and the run goes on (nil). Any other error
// is returned.
func refused(env *engine.Env, r *engine.Request, err error, why func(*pgconn.PgError) string, note func(*pgconn.PgError) string) error {
	r.Fail(err)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	pid := r.PID()
	r.Update(func(rr *engine.RequestRow) { rr.PID, rr.Role, rr.Why = pid, env.Sandbox.AppRole, why(pe) })
	env.Tracker().Note(note(pe))
	return nil
}

// finishAppRoleTx narrates r's outcome, rolls its transaction back and
// releases it.
func finishAppRoleTx(ctx context.Context, env *engine.Env, r *engine.Request, tx pgx.Tx, narration string) error {
	if err := env.Step(ctx, narration); err != nil {
		return err
	}
	if err := tx.Rollback(ctx); err != nil && !errors.Is(err, pgx.ErrTxClosed) {
		return err
	}
	return r.Release(ctx)
}

// runRowSecurityOff asks for row_security = off as the app role.
func runRowSecurityOff(ctx context.Context, env *engine.Env) error {
	acme := env.Sandbox.Tenants[0]
	r, tx, done, err := appRoleTx(ctx, env, acme, fmt.Sprintf("BEGIN; SET LOCAL row_security = off; set_config('app.current_tenant', '%s', true). Any role may set row_security; what it does depends on the role.", acme.Setting()),
		"SET LOCAL row_security = off", engine.SetLocalSQL)
	if err != nil {
		return err
	}
	defer done()
	if err := r.Observe(ctx, tx); err != nil {
		err = refused(env, r, err, func(pe *pgconn.PgError) string {
			return fmt.Sprintf("The server refused (SQLSTATE %s): with row_security = off, a query that RLS would filter for a role that does not bypass it is an error, never unfiltered rows.", pe.Code)
		}, func(pe *pgconn.PgError) string {
			return fmt.Sprintf("row-security-off: the app role's query failed with SQLSTATE %s: %s", pe.Code, pe.Message)
		})
		if err != nil {
			return err
		}
	} else {
		row := r.Row()
		env.Tracker().Note(fmt.Sprintf("row-security-off: the query returned %d rows, %d of other tenants.", row.Rows, row.ForeignRows))
	}
	if err := finishAppRoleTx(ctx, env, r, tx, fmt.Sprintf("Request #%d: %s", r.Seq, r.Row().Why)); err != nil {
		return err
	}
	detail := ""
	if r.Row().Error != "" {
		detail = "row_security = off made a query that RLS would filter an error, not a way around the policy."
	}
	return env.Conclude(ctx, detail)
}

// runInsertForeign has the app role, scoped to Acme, insert Globex's row.
func runInsertForeign(ctx context.Context, env *engine.Env) error {
	acme, globex := env.Sandbox.Tenants[0], env.Sandbox.Tenants[1]
	r, tx, done, err := appRoleTx(ctx, env, acme, fmt.Sprintf("BEGIN; set_config('app.current_tenant', '%s', true): scoped to %s.", acme.Setting(), acme.Name), engine.SetLocalSQL)
	if err != nil {
		return err
	}
	defer done()
	_, err = tx.Exec(ctx, `INSERT INTO invoices (tenant_id, customer, amount) VALUES ($1, $2, $3)`, globex.ID, "written by "+acme.Name, 1)
	if err != nil {
		err = refused(env, r, err, func(pe *pgconn.PgError) string {
			return fmt.Sprintf("INSERT of a row with tenant_id %d (%s) while scoped to %s: the USING clause also checks new rows, so the server refused it (SQLSTATE %s).", globex.ID, globex.Name, acme.Name, pe.Code)
		}, func(pe *pgconn.PgError) string {
			return fmt.Sprintf("insert-foreign: the app role scoped to %s inserting a %s invoice got SQLSTATE %s: %s", acme.Name, globex.Name, pe.Code, pe.Message)
		})
		if err != nil {
			return err
		}
	} else {
		env.Tracker().Note(fmt.Sprintf("insert-foreign: the app role scoped to %s inserted a %s invoice without error (rolled back).", acme.Name, globex.Name))
	}
	row := r.Row()
	if err := finishAppRoleTx(ctx, env, r, tx, fmt.Sprintf("Request #%d: %s Server: %s", r.Seq, row.Why, row.Error)); err != nil {
		return err
	}
	g := r.Pool().NewRequest(globex, engine.PatternTxLocal)
	if err := g.Do(ctx); err != nil {
		return err
	}
	row = g.Row()
	env.Tracker().Note(fmt.Sprintf("insert-foreign: %s then saw %d invoices of its own: nothing was written into it.", globex.Name, row.Rows))
	return env.Conclude(ctx, fmt.Sprintf("%s's own request sees %d invoices: the refused row was never written.", globex.Name, row.Rows))
}
