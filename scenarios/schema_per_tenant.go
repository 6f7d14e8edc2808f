package scenarios

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Variants of schema-per-tenant (stable names: tools and lessons rely on
// them).
const (
	SchemaPerTenantSession      = "session-search-path"
	SchemaPerTenantLocal        = "local-search-path"
	SchemaPerTenantDefiner      = "definer-unqualified"
	SchemaPerTenantDefinerFixed = "definer-qualified"
	SchemaPerTenantBouncer      = "pgbouncer-session-path"
	SchemaPerTenantBouncerLocal = "pgbouncer-local-path"
)

// The objects schema-per-tenant adds to the lab for the length of a run:
// one schema per tenant, each with a tickets table and, in the definer
// variants, a function open_tickets() and a role of its own.
const (
	ticketsTable     = "tickets"
	ticketsFunc      = "open_tickets"
	ticketsPerTenant = 3
)

// How a schema-per-tenant request points its connection at its tenant.
const (
	schemaSession = "session-search-path" // SET search_path = tenant_x, public
	schemaLocal   = "local-search-path"   // set_config('search_path', 'tenant_x, public', true) in a transaction
	schemaForgot  = "forgot"              // nothing: whatever the backend holds
)

// tenantSchema is the schema that holds t's tables.
func tenantSchema(t engine.Tenant) string { return "tenant_" + strings.ToLower(t.Name) }

// schemaRole is the role of t in the definer variants.
func schemaRole(sb engine.Sandbox, t engine.Tenant) string {
	return "lab_" + sb.Lab + "_" + tenantSchema(t)
}

// searchPathFor is the search_path that points at t's schema, then the
// shared public schema, as django-tenants and apartment set it. The tenant
// names are fixed lower-case words, so the schema name needs no quotes.
func searchPathFor(t engine.Tenant) string { return tenantSchema(t) + ", public" }

// SchemaPerTenant returns the schema-per-tenant scenario: each tenant has a
// schema of its own with the same tables, and a request picks its tenant by
// setting search_path. A session-level SET search_path outlives the request
// on its pooled backend, so the next request there that does not set it
// reads the previous tenant's schema; set_config('search_path', ..., true)
// ends with the transaction. A SECURITY DEFINER function whose body names
// its tables without a schema resolves them through the caller's
// search_path, with its owner's rights; schema-qualified names and a SET
// search_path on the function pin it to its own schema. Behind PgBouncer in
// transaction mode a SET search_path is a transaction of its own, and
// another client's SET can land on the server connection before the query
// that should have used it.
func SchemaPerTenant() *engine.Scenario {
	v := func(name, summary string, run func(context.Context, *engine.Env) error) engine.Variant {
		return engine.Variant{Name: name, Summary: summary, Conns: adminAndPool, Run: run}
	}
	return &engine.Scenario{
		ID:     "schema-per-tenant",
		Pacing: engine.PacingReplay,
		Title:  "Schema per tenant: search_path on a pooled connection",
		Variants: []engine.Variant{
			v(SchemaPerTenantSession, "Acme's request runs SET search_path = tenant_acme, public; Globex's next request on that backend sets nothing and reads tenant_acme.tickets.",
				func(ctx context.Context, env *engine.Env) error { return runSchemaPerTenant(ctx, env, schemaSession) }),
			v(SchemaPerTenantLocal, "The same requests with set_config('search_path', ..., true) inside a transaction: the path ends with it, and the request that sets nothing finds no tickets table.",
				func(ctx context.Context, env *engine.Env) error { return runSchemaPerTenant(ctx, env, schemaLocal) }),
			v(SchemaPerTenantDefiner, "Each tenant has a role that may read only its own schema, and a SECURITY DEFINER function whose body says 'FROM tickets': Globex's call, on a backend left at tenant_acme, returns Acme's tickets.",
				func(ctx context.Context, env *engine.Env) error { return runSchemaDefiner(ctx, env, false) }),
			v(SchemaPerTenantDefinerFixed, "The same function with 'FROM tenant_globex.tickets' and SET search_path = tenant_globex, pg_temp on it: Globex's call returns Globex's tickets whatever the backend's path.",
				func(ctx context.Context, env *engine.Env) error { return runSchemaDefiner(ctx, env, true) }),
			// The lab's superuser connection (and the one just closed) for
			// the schemas, and PgBouncer's one server connection.
			{Name: SchemaPerTenantBouncer, Conns: engine.Fixed(3),
				Summary: "Two app instances behind PgBouncer in transaction mode (default_pool_size = 1), each running SET search_path, then its query: Acme's SET is its own transaction, Globex's SET lands on the same server connection before Acme's query does.",
				Run:     func(ctx context.Context, env *engine.Env) error { return runSchemaBouncer(ctx, env, false) }},
			{Name: SchemaPerTenantBouncerLocal, Conns: engine.Fixed(3),
				Summary: "The same two instances, each choosing its schema with set_config('search_path', ..., true) in the transaction that runs its query.",
				Run:     func(ctx context.Context, env *engine.Env) error { return runSchemaBouncer(ctx, env, true) }},
		},
		MinTenants: 2,
	}
}

// runSchemaBouncer plays Acme's request on app-1 and Globex's on app-2
// through a PgBouncer in transaction mode with one server connection. With
// session-level SETs, each SET is a transaction of its own, so the order
// is: Acme's SET, Globex's SET, Acme's query, Globex's query. With local
// ones, each request is one transaction, which holds the server connection
// until it ends, so they run one after the other.
func runSchemaBouncer(ctx context.Context, env *engine.Env, local bool) (err error) {
	sb := env.Sandbox
	acme, globex := sb.Tenants[0], sb.Tenants[1]
	defer undoDDL(ctx, env, &err, dropTenantSchemas(sb)...)
	if err := createTenantSchemas(ctx, env); err != nil {
		return err
	}
	return runBouncer(ctx, env, 1, false, func(rb *bouncerRun, ctx context.Context) error {
		mode := pgx.QueryExecModeExec // PgBouncer 1.18 keeps no prepared statements
		app1, err := rb.openClient(ctx, "app-1", 1, &mode)
		if err != nil {
			return err
		}
		app2, err := rb.openClient(ctx, "app-2", 1, &mode)
		if err != nil {
			return err
		}
		if local {
			for _, x := range []struct {
				pool *engine.Pool
				t    engine.Tenant
			}{{app1, acme}, {app2, globex}} {
				if err := schemaRead(ctx, env, x.pool, x.t, schemaLocal, "", "SELECT tenant_id FROM "+ticketsTable); err != nil {
					return err
				}
			}
			return env.Conclude(ctx, "Each request chose its schema in the transaction that ran its query. The schemas are dropped again.")
		}
		a, b := app1.NewRequest(acme, schemaSession), app2.NewRequest(globex, schemaSession)
		defer a.ReleaseQuiet(context.WithoutCancel(ctx))
		defer b.ReleaseQuiet(context.WithoutCancel(ctx))
		for _, r := range []*engine.Request{a, b} {
			if err := r.Acquire(ctx); err != nil {
				return err
			}
			set := "SET search_path = " + searchPathFor(r.Tenant)
			if _, err := r.Conn().Exec(ctx, set); err != nil {
				r.Fail(err)
				return fmt.Errorf("%s: %w", set, err)
			}
			if err := env.Step(ctx, fmt.Sprintf("%s runs %s: a transaction of its own, after which PgBouncer gives the server connection back to its pool.", r.Label(), set)); err != nil {
				return err
			}
		}
		for _, r := range []*engine.Request{a, b} {
			var path string
			if err := r.Conn().QueryRow(ctx, "SELECT current_setting('search_path')").Scan(&path); err != nil {
				r.Fail(err)
				return err
			}
			from := "SELECT tenant_id FROM " + ticketsTable
			if err := observeFrom(ctx, r, r.Conn(), from); err != nil {
				r.Fail(err)
				return err
			}
			row := r.Row()
			why := fmt.Sprintf("%s under search_path %s returned %d rows, all %s's.", from, path, row.Rows, r.Tenant.Name)
			if row.Leak {
				why = fmt.Sprintf("LEAK: %s under search_path %s returned %d rows, %d of them another tenant's, to %s, which had set its own path one statement before.", from, path, row.Rows, row.ForeignRows, r.Tenant.Name)
			}
			r.Update(func(rr *engine.RequestRow) { rr.Why = why })
			env.Tracker().Note(fmt.Sprintf("Request #%d (%s) on server backend %d: %s", r.Seq, r.Tenant.Name, row.PID, why))
			if err := env.Step(ctx, fmt.Sprintf("%s on server backend %d: %s", r.Label(), row.PID, why)); err != nil {
				return err
			}
		}
		for _, r := range []*engine.Request{a, b} {
			if err := r.Release(ctx); err != nil {
				return err
			}
		}
		return env.Conclude(ctx, "Both SETs ran on PgBouncer's one server connection, Globex's last. The schemas are dropped again.")
	})
}

// createTenantSchemas creates, as the lab's owner, one schema per tenant
// with a tickets table of 3 rows, readable by the app role, and undoes
// nothing: the caller's undoDDL drops the schemas. Each row carries its
// tenant's id only so that the run can tell whose rows came back.
func createTenantSchemas(ctx context.Context, env *engine.Env) error {
	sb := env.Sandbox
	app := quote(sb.AppRole)
	var stmts []string
	for _, t := range sb.Tenants {
		s := quote(tenantSchema(t))
		stmts = append(stmts,
			"CREATE SCHEMA "+s,
			"CREATE TABLE "+s+"."+ticketsTable+" (id serial PRIMARY KEY, tenant_id int NOT NULL, subject text NOT NULL)",
			fmt.Sprintf("INSERT INTO %s.%s (tenant_id, subject) SELECT %d, '%s ticket ' || i FROM generate_series(1, %d) i", s, ticketsTable, t.ID, t.Name, ticketsPerTenant),
			"GRANT USAGE ON SCHEMA "+s+" TO "+app,
			"GRANT SELECT ON "+s+"."+ticketsTable+" TO "+app)
	}
	return labDDL(ctx, env, true, stmts...)
}

// dropTenantSchemas returns the statements that remove the tenant schemas.
func dropTenantSchemas(sb engine.Sandbox) []string {
	var out []string
	for _, t := range sb.Tenants {
		out = append(out, "DROP SCHEMA IF EXISTS "+quote(tenantSchema(t))+" CASCADE")
	}
	return out
}

// runSchemaPerTenant plays three requests on a pool of one connection: Acme
// points its connection at tenant_acme the way mode says and reads
// tickets; Globex forgets to; Globex points at tenant_globex the same way.
func runSchemaPerTenant(ctx context.Context, env *engine.Env, mode string) (err error) {
	sb := env.Sandbox
	acme, globex := sb.Tenants[0], sb.Tenants[1]
	defer undoDDL(ctx, env, &err, dropTenantSchemas(sb)...)
	if err := createTenantSchemas(ctx, env); err != nil {
		return err
	}
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 1, MinConns: 1})
	if err != nil {
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("Created as the lab's owner: one schema per tenant (%s), each with a tickets table of %d rows; the app role may read all of them, as one database user serves every tenant. A pool of one connection, so every request gets the same backend.", strings.Join(schemaNames(sb), ", "), ticketsPerTenant)); err != nil {
		return err
	}
	for _, step := range []struct {
		t    engine.Tenant
		mode string
	}{{acme, mode}, {globex, schemaForgot}, {globex, mode}} {
		if err := schemaRead(ctx, env, pool, step.t, step.mode, "", "SELECT tenant_id FROM "+ticketsTable); err != nil {
			return err
		}
	}
	detail := "The schemas are dropped again."
	if mode == schemaSession {
		detail = "The backend kept Acme's search_path after Acme's request ended. " + detail
	}
	return env.Conclude(ctx, detail)
}

// schemaNames lists the tenant schemas of sb.
func schemaNames(sb engine.Sandbox) []string {
	out := make([]string, len(sb.Tenants))
	for i, t := range sb.Tenants {
		out[i] = tenantSchema(t)
	}
	return out
}

// schemaRead runs one request for t on pool: it points the connection at
// t's schema the way mode says (as role, when role is not ""), runs from,
// a query with a tenant_id column, and says what came back and under which
// search_path. A server error is the request's outcome, not the run's.
func schemaRead(ctx context.Context, env *engine.Env, pool *engine.Pool, t engine.Tenant, mode, role, from string) error {
	r := pool.NewRequest(t, mode)
	defer r.ReleaseQuiet(context.WithoutCancel(ctx))
	if err := r.Acquire(ctx); err != nil {
		return err
	}
	// q is where the request's statements run: its transaction, or the
	// connection itself when it has none.
	var q interface {
		Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
		engine.Querier
	} = r.Conn()
	var did []string
	if mode == schemaLocal || role != "" {
		tx, err := r.Begin(ctx)
		if err != nil {
			return err
		}
		q = tx
		did = append(did, "BEGIN")
	}
	if role != "" {
		s := "SET LOCAL ROLE " + quote(role)
		if _, err := q.Exec(ctx, s); err != nil {
			r.Fail(err)
			return fmt.Errorf("%s: %w", s, err)
		}
		did = append(did, s)
	}
	switch mode {
	case schemaSession:
		s := "SET search_path = " + searchPathFor(t)
		if _, err := q.Exec(ctx, s); err != nil {
			r.Fail(err)
			return fmt.Errorf("%s: %w", s, err)
		}
		did = append(did, s)
	case schemaLocal:
		if _, err := q.Exec(ctx, "SELECT set_config('search_path', $1, true)", searchPathFor(t)); err != nil {
			r.Fail(err)
			return err
		}
		did = append(did, fmt.Sprintf("SELECT set_config('search_path', '%s', true)", searchPathFor(t)))
	default:
		did = append(did, "nothing to pick its schema")
	}
	var path string
	if err := q.QueryRow(ctx, "SELECT current_setting('search_path')").Scan(&path); err != nil {
		r.Fail(err)
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("%s on backend %d runs %s; search_path is now %s.", r.Label(), r.PID(), strings.Join(did, "; "), path)); err != nil {
		return err
	}
	var why string
	if qerr := observeFrom(ctx, r, q, from); qerr != nil {
		var pe *pgconn.PgError
		if !errors.As(qerr, &pe) {
			r.Fail(qerr)
			return qerr
		}
		r.Fail(qerr)
		why = fmt.Sprintf("%s failed under search_path %s: %s (SQLSTATE %s).", from, path, pe.Message, pe.Code)
	} else {
		if err := r.Commit(ctx); err != nil {
			return err
		}
		row := r.Row()
		switch {
		case row.Leak:
			why = fmt.Sprintf("LEAK: %s under search_path %s returned %d rows, %d of them another tenant's, to %s.", from, path, row.Rows, row.ForeignRows, t.Name)
		default:
			why = fmt.Sprintf("%s under search_path %s returned %d rows, all %s's.", from, path, row.Rows, t.Name)
		}
	}
	r.Update(func(rr *engine.RequestRow) { rr.Why = why })
	env.Tracker().Note(fmt.Sprintf("Request #%d (%s): %s", r.Seq, t.Name, why))
	if err := env.Step(ctx, fmt.Sprintf("%s on backend %d: %s", r.Label(), r.PID(), why)); err != nil {
		return err
	}
	return r.Release(ctx)
}

// runSchemaDefiner gives each tenant a role that may use only its own
// schema and a SECURITY DEFINER function open_tickets() in its schema,
// created as each schema's migration would create it (with search_path at
// that schema); qualified says whether the body names tenant_x.tickets and
// the function carries SET search_path. Acme's request leaves its
// search_path on the backend; Globex's request, as Globex's role, calls
// tenant_globex.open_tickets().
func runSchemaDefiner(ctx context.Context, env *engine.Env, qualified bool) (err error) {
	sb := env.Sandbox
	acme, globex := sb.Tenants[0], sb.Tenants[1]
	undo := dropTenantSchemas(sb)
	for _, t := range sb.Tenants {
		undo = append(undo, dropRole(schemaRole(sb, t))...)
	}
	defer undoDDL(ctx, env, &err, undo...)
	if err := createTenantSchemas(ctx, env); err != nil {
		return err
	}
	var roles, ddl []string
	var body, set string
	for _, t := range sb.Tenants {
		s, role := quote(tenantSchema(t)), quote(schemaRole(sb, t))
		roles = append(roles,
			"CREATE ROLE "+role+" NOLOGIN",
			"GRANT USAGE ON SCHEMA "+s+" TO "+role,
			"GRANT SELECT ON "+s+"."+ticketsTable+" TO "+role,
			"GRANT "+role+" TO "+quote(sb.AppRole))
		body, set = "SELECT tenant_id, subject FROM "+ticketsTable, ""
		if qualified {
			body, set = "SELECT tenant_id, subject FROM "+s+"."+ticketsTable, " SET search_path = "+s+", pg_temp"
		}
		fn := s + "." + ticketsFunc + "()"
		ddl = append(ddl,
			"SET LOCAL search_path = "+searchPathFor(t),
			"CREATE FUNCTION "+fn+" RETURNS TABLE (tenant_id int, subject text) LANGUAGE sql STABLE SECURITY DEFINER"+set+" AS '"+doubleQuotes(body)+"'",
			"REVOKE EXECUTE ON FUNCTION "+fn+" FROM PUBLIC",
			"GRANT EXECUTE ON FUNCTION "+fn+" TO "+quote(schemaRole(sb, t)))
	}
	if err := labDDL(ctx, env, false, roles...); err != nil {
		return err
	}
	if err := labDDL(ctx, env, true, ddl...); err != nil {
		return err
	}
	var reach bool
	if err := env.AdminTx(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, "SELECT has_schema_privilege($1, $2, 'USAGE')", schemaRole(sb, globex), tenantSchema(acme)).Scan(&reach)
	}); err != nil {
		return err
	}
	env.Tracker().Note(fmt.Sprintf("Globex's role %s may use the schema %s: %t.", schemaRole(sb, globex), tenantSchema(acme), reach))
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 1, MinConns: 1})
	if err != nil {
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("Created as the lab's owner: one schema per tenant with a tickets table of %d rows; a role per tenant that may use only its own schema (Globex's role on %s: %t); and in each schema a function %s() SECURITY DEFINER, owned by the lab's owner, whose body is: %s%s.",
		ticketsPerTenant, tenantSchema(acme), reach, ticketsFunc, body, set)); err != nil {
		return err
	}
	if err := schemaRead(ctx, env, pool, acme, schemaSession, schemaRole(sb, acme), "SELECT tenant_id FROM "+ticketsTable); err != nil {
		return err
	}
	call := "SELECT tenant_id FROM " + quote(tenantSchema(globex)) + "." + ticketsFunc + "()"
	if err := schemaRead(ctx, env, pool, globex, schemaForgot, schemaRole(sb, globex), call); err != nil {
		return err
	}
	return env.Conclude(ctx, "The schemas, functions and tenant roles are dropped again.")
}
