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

// Variants of rls-bypass.
const (
	bypassOwner       = "owner"
	bypassOwnerForced = "owner-forced"
	bypassSuperuser   = "superuser"
	bypassRole        = "bypassrls"
	bypassAppRole     = "app-role"
	bypassRowSecOff   = "row-security-off"
	bypassInsert      = "insert-foreign"
)

// privPool is the name under which the lab's superuser connection appears in
// the live view and on request rows that ran on it.
const privPool = "admin"

// undoTimeout bounds the statements that undo a scenario's schema
// changes, which run even when the run was cancelled.
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
	return &engine.Scenario{
		ID:    "rls-bypass",
		Title: "Who RLS does not apply to: the owner, superusers, BYPASSRLS",
		Variants: withRun(runRLSBypass, []engine.Variant{
			{Name: bypassOwner, Summary: "The table owner with RLS enabled but not forced: the policy is skipped and every tenant's rows come back."},
			{Name: bypassOwnerForced, Summary: "The same owner after ALTER TABLE ... FORCE ROW LEVEL SECURITY: the policy applies to the owner too."},
			{Name: bypassSuperuser, Summary: "A superuser: RLS never applies to it, FORCE or not."},
			{Name: bypassRole, Summary: "A role created WITH BYPASSRLS: RLS never applies to it either."},
			{Name: bypassAppRole, Summary: "The app's own login role (not the owner, NOSUPERUSER, NOBYPASSRLS): only the tenant in the setting."},
			{Name: bypassRowSecOff, Summary: "The app role with SET LOCAL row_security = off: not unfiltered rows but an error (42501)."},
			{Name: bypassInsert, Summary: "The app role scoped to Acme inserts a Globex invoice: the policy rejects the new row (42501)."},
		}),
	}
}

func runRLSBypass(ctx context.Context, env *engine.Env, variant string) error {
	if len(env.Sandbox.Tenants) < 2 {
		return errors.New("rls-bypass needs two tenants in the sandbox")
	}
	switch variant {
	case bypassOwner, bypassOwnerForced, bypassSuperuser, bypassRole:
		return runPrivileged(ctx, env, variant)
	case bypassAppRole:
		return runBypassAppRole(ctx, env)
	case bypassRowSecOff:
		return runRowSecurityOff(ctx, env)
	case bypassInsert:
		return runInsertForeign(ctx, env)
	}
	return fmt.Errorf("rls-bypass: unknown variant %q", variant)
}

// runPrivileged runs the tenant-scoped query on the lab's superuser
// connection, as the role the variant names, in a transaction it rolls back.
func runPrivileged(ctx context.Context, env *engine.Env, variant string) error {
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
	privShowConn(env, id, engine.ConnIdle)
	defer privHideConn(env)
	if err := env.Step(ctx, fmt.Sprintf("The lab's superuser connection is open: backend %d, role %s. It never serves the app's requests; here it plays the role under test, inside one transaction that is rolled back at the end.", id.PID, id.Role)); err != nil {
		return err
	}
	r := privRequest(env, acme, engine.PatternTxLocal)
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	// DDL is transactional: rolling back undoes NO FORCE and CREATE ROLE,
	// also when the run is cancelled (a cancelled query closes the
	// connection, which rolls back too).
	defer tx.Rollback(context.WithoutCancel(ctx))
	privShowConn(env, id, engine.ConnAcquired)

	owner := pgx.Identifier{sb.OwnerRole}.Sanitize()
	bypass := "lab_" + sb.Lab + "_bypass"
	var steps []struct{ sql, say string }
	add := func(sql, say string) { steps = append(steps, struct{ sql, say string }{sql, say}) }
	switch variant {
	case bypassOwner:
		add("ALTER TABLE invoices NO FORCE ROW LEVEL SECURITY",
			"BEGIN; ALTER TABLE invoices NO FORCE ROW LEVEL SECURITY: inside this transaction RLS is enabled but not forced, the state of a table whose owner never ran FORCE.")
		add("SET LOCAL ROLE "+owner, "SET LOCAL ROLE "+sb.OwnerRole+": from here the transaction runs as the table's owner, the role many apps connect as.")
	case bypassOwnerForced:
		add("SET LOCAL ROLE "+owner, "BEGIN; SET LOCAL ROLE "+sb.OwnerRole+": the table's owner, with the lab's FORCE ROW LEVEL SECURITY left on.")
	case bypassSuperuser:
		// Nothing to change: the connection is already a superuser and the
		// lab's table is forced.
	case bypassRole:
		q := pgx.Identifier{bypass}.Sanitize()
		add("CREATE ROLE "+q+" NOLOGIN NOSUPERUSER BYPASSRLS", "BEGIN; CREATE ROLE "+bypass+" NOLOGIN NOSUPERUSER BYPASSRLS: an ordinary role with the one attribute BYPASSRLS (created in this transaction, gone at its rollback).")
		add("GRANT USAGE ON SCHEMA public TO "+q, "GRANT USAGE ON SCHEMA public TO "+bypass+".")
		add("GRANT SELECT ON invoices TO "+q, "GRANT SELECT ON invoices TO "+bypass+": the same privilege the app role has.")
		add("SET LOCAL ROLE "+q, "SET LOCAL ROLE "+bypass+": the transaction now runs as that role.")
	}
	for _, s := range steps {
		if _, err := tx.Exec(ctx, s.sql); err != nil {
			r.Fail(err)
			return fmt.Errorf("%s: %w", s.sql, err)
		}
		if err := env.Step(ctx, s.say); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, engine.SetLocalSQL, acme.Setting()); err != nil {
		r.Fail(err)
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("set_config('app.current_tenant', '%s', true): the transaction is scoped to %s, exactly as the app scopes a request.", acme.Setting(), acme.Name)); err != nil {
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
	row := rowBySeq(env, r.Seq)
	privShowConn(env, engine.Identity{PID: row.PID, Tenant: row.SeenTenant, Role: row.Role}, engine.ConnAcquired)
	table := fmt.Sprintf("RLS enabled=%t, forced=%t; role %s: superuser=%t, bypassrls=%t", enabled, forced, row.Role, super, bypassAttr)
	var why string
	switch {
	case row.Leak && (super || bypassAttr):
		why = fmt.Sprintf("LEAK: %s returned %d rows, %d of other tenants: %s, so the policy is never applied (%s).", row.Role, row.Rows, row.ForeignRows, roleKind(super), table)
	case row.Leak && !forced:
		why = fmt.Sprintf("LEAK: %s owns invoices and RLS is not forced, so the policy is skipped for it: %d rows, %d of other tenants (%s).", row.Role, row.Rows, row.ForeignRows, table)
	case row.Leak:
		why = fmt.Sprintf("LEAK: %d rows, %d of other tenants (%s).", row.Rows, row.ForeignRows, table)
	default:
		why = fmt.Sprintf("%d rows, all %s's own: the policy applied to %s (%s).", row.Rows, acme.Name, row.Role, table)
	}
	annotateRow(env, r.Seq, func(rr *engine.RequestRow) { rr.Why = why; rr.Phase = "queried" })
	env.Tracker().Note(fmt.Sprintf("%s: the query scoped to %s on backend %d as %s returned %d rows, %d of other tenants (%s).",
		variant, acme.Name, row.PID, row.Role, row.Rows, row.ForeignRows, table))
	if err := env.Step(ctx, fmt.Sprintf("Request #%d as %s on backend %d: %s", r.Seq, row.Role, row.PID, why)); err != nil {
		return err
	}
	if err := tx.Rollback(ctx); err != nil {
		return err
	}
	privShowConn(env, id, engine.ConnIdle)
	annotateRow(env, r.Seq, func(rr *engine.RequestRow) { rr.Phase = "released" })
	after := "ROLLBACK: everything this transaction changed is undone."
	switch variant {
	case bypassOwner:
		if err := conn.QueryRow(ctx, `SELECT relforcerowsecurity FROM pg_class WHERE oid = 'invoices'::regclass`).Scan(&forced); err != nil {
			return err
		}
		after = fmt.Sprintf("ROLLBACK: the NO FORCE was part of the transaction; invoices is forced again: relforcerowsecurity = %t.", forced)
	case bypassRole:
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname = $1`, bypass).Scan(&n); err != nil {
			return err
		}
		after = fmt.Sprintf("ROLLBACK: the role %s was created in the transaction; roles with that name now: %d.", bypass, n)
	}
	return env.Step(ctx, after)
}

// roleKind says why a role skips RLS.
func roleKind(super bool) string {
	if super {
		return "it is a superuser"
	}
	return "it has BYPASSRLS"
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
	if err := r.Do(ctx); err != nil {
		return err
	}
	row := rowBySeq(env, r.Seq)
	env.Tracker().Note(fmt.Sprintf("app-role: the query scoped to %s on backend %d as %s returned %d rows, %d of other tenants.", acme.Name, row.PID, row.Role, row.Rows, row.ForeignRows))
	f := pool.NewRequest(globex, engine.PatternForgot)
	if err := f.Do(ctx); err != nil {
		return err
	}
	row = rowBySeq(env, f.Seq)
	env.Tracker().Note(fmt.Sprintf("app-role: the same query with no tenant set, on backend %d, returned %d rows: the policy fails closed.", row.PID, row.Rows))
	return env.Step(ctx, "Done: as the app role the policy decides what each query sees.")
}

// appRoleTx opens a one-connection pool of the app role and begins a
// transaction for a request of tenant t. done rolls the transaction back and
// releases the connection, even when the acquire's frame was cut short.
func appRoleTx(ctx context.Context, env *engine.Env, t engine.Tenant) (*engine.Request, pgx.Tx, func(), error) {
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 1, MinConns: 1})
	if err != nil {
		return nil, nil, nil, err
	}
	r := pool.NewRequest(t, engine.PatternTxLocal)
	release := func() { r.ReleaseQuiet(context.WithoutCancel(ctx)) }
	if err := r.Acquire(ctx); err != nil {
		release()
		return nil, nil, nil, err
	}
	tx, err := r.Conn().Begin(ctx)
	if err != nil {
		r.Fail(err)
		release()
		return nil, nil, nil, err
	}
	return r, tx, func() {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		release()
	}, nil
}

// runRowSecurityOff asks for row_security = off as the app role.
func runRowSecurityOff(ctx context.Context, env *engine.Env) error {
	acme := env.Sandbox.Tenants[0]
	r, tx, done, err := appRoleTx(ctx, env, acme)
	if err != nil {
		return err
	}
	defer done()
	for _, s := range []string{"SET LOCAL row_security = off", engine.SetLocalSQL} {
		var args []any
		if s == engine.SetLocalSQL {
			args = append(args, acme.Setting())
		}
		if _, err := tx.Exec(ctx, s, args...); err != nil {
			r.Fail(err)
			return err
		}
	}
	if err := env.Step(ctx, fmt.Sprintf("Request #%d: BEGIN; SET LOCAL row_security = off; set_config('app.current_tenant', '%s', true). Any role may set row_security; what it does depends on the role.", r.Seq, acme.Setting())); err != nil {
		return err
	}
	err = r.Observe(ctx, tx)
	row := rowBySeq(env, r.Seq)
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe):
		r.Fail(err)
		annotateRow(env, r.Seq, func(rr *engine.RequestRow) {
			rr.Role = env.Sandbox.AppRole
			rr.Why = fmt.Sprintf("The server refused (SQLSTATE %s): with row_security = off, a query that RLS would filter for a role that does not bypass it is an error, never unfiltered rows.", pe.Code)
		})
		env.Tracker().Note(fmt.Sprintf("row-security-off: the app role's query failed with SQLSTATE %s: %s", pe.Code, pe.Message))
	case err != nil:
		r.Fail(err)
		return err
	default:
		env.Tracker().Note(fmt.Sprintf("row-security-off: the query returned %d rows, %d of other tenants.", row.Rows, row.ForeignRows))
	}
	row = rowBySeq(env, r.Seq)
	if err := env.Step(ctx, fmt.Sprintf("Request #%d: %s", r.Seq, row.Why)); err != nil {
		return err
	}
	if err := tx.Rollback(ctx); err != nil && !errors.Is(err, pgx.ErrTxClosed) {
		return err
	}
	return r.Release(ctx)
}

// runInsertForeign has the app role, scoped to Acme, insert Globex's row.
func runInsertForeign(ctx context.Context, env *engine.Env) error {
	acme, globex := env.Sandbox.Tenants[0], env.Sandbox.Tenants[1]
	r, tx, done, err := appRoleTx(ctx, env, acme)
	if err != nil {
		return err
	}
	defer done()
	if _, err := tx.Exec(ctx, engine.SetLocalSQL, acme.Setting()); err != nil {
		r.Fail(err)
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("Request #%d: BEGIN; set_config('app.current_tenant', '%s', true): scoped to %s.", r.Seq, acme.Setting(), acme.Name)); err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO invoices (tenant_id, customer, amount) VALUES ($1, $2, $3)`, globex.ID, "written by "+acme.Name, 1)
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe):
		r.Fail(err)
		pid := r.PID()
		annotateRow(env, r.Seq, func(rr *engine.RequestRow) {
			rr.PID, rr.Role = pid, env.Sandbox.AppRole
			rr.Why = fmt.Sprintf("INSERT of a row with tenant_id %d (%s) while scoped to %s: the USING clause also checks new rows, so the server refused it (SQLSTATE %s).", globex.ID, globex.Name, acme.Name, pe.Code)
		})
		env.Tracker().Note(fmt.Sprintf("insert-foreign: the app role scoped to %s inserting a %s invoice got SQLSTATE %s: %s", acme.Name, globex.Name, pe.Code, pe.Message))
	case err != nil:
		r.Fail(err)
		return err
	default:
		env.Tracker().Note(fmt.Sprintf("insert-foreign: the app role scoped to %s inserted a %s invoice without error (rolled back).", acme.Name, globex.Name))
	}
	row := rowBySeq(env, r.Seq)
	if err := env.Step(ctx, fmt.Sprintf("Request #%d: %s Server: %s", r.Seq, row.Why, row.Error)); err != nil {
		return err
	}
	if err := tx.Rollback(ctx); err != nil && !errors.Is(err, pgx.ErrTxClosed) {
		return err
	}
	if err := r.Release(ctx); err != nil {
		return err
	}
	g := r.Pool().NewRequest(globex, engine.PatternTxLocal)
	if err := g.Do(ctx); err != nil {
		return err
	}
	row = rowBySeq(env, g.Seq)
	env.Tracker().Note(fmt.Sprintf("insert-foreign: %s then saw %d invoices of its own: nothing was written into it.", globex.Name, row.Rows))
	return env.Step(ctx, fmt.Sprintf("%s's own request sees %d invoices: the refused row was never written.", globex.Name, row.Rows))
}

// privRequest adds a request row for a query that runs on the lab's
// superuser connection rather than on an instrumented pool. Observe, Fail
// and the other recording methods work on it; the phases that need a pool
// (Acquire, Scope, Query, Do) do not.
func privRequest(env *engine.Env, t engine.Tenant, pattern string) *engine.Request {
	return env.NewRequest(t, pattern, privPool, "acquired")
}

// privShowConn shows the lab's superuser connection in the live view as last
// read from its backend.
func privShowConn(env *engine.Env, id engine.Identity, state string) {
	env.Refresh(func(s *engine.State) {
		i := engine.FindConn(s, privPool, 1)
		if i < 0 {
			s.Connections = append(s.Connections, engine.Connection{Pool: privPool, Slot: 1})
			i = len(s.Connections) - 1
		}
		c := &s.Connections[i]
		c.PID, c.Tenant, c.Role, c.State = id.PID, id.Tenant, id.Role, state
	})
}

// privHideConn removes the superuser connection from the live view (it is
// closed when the variant ends).
func privHideConn(env *engine.Env) {
	env.Refresh(func(s *engine.State) {
		if i := engine.FindConn(s, privPool, 1); i >= 0 {
			s.Connections = append(s.Connections[:i], s.Connections[i+1:]...)
		}
	})
}

// rowBySeq returns the request row seq as it is now.
func rowBySeq(env *engine.Env, seq int) engine.RequestRow {
	st := env.Tracker().Snapshot()
	for _, r := range st.Requests {
		if r.Seq == seq {
			return r
		}
	}
	return engine.RequestRow{Seq: seq}
}

// annotateRow changes the request row seq.
func annotateRow(env *engine.Env, seq int, f func(*engine.RequestRow)) {
	env.Tracker().UpdateRequest(seq, f)
}
