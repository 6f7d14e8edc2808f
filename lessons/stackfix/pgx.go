// Package stackfix holds the fixes the lessons show for Go with pgx, as
// code that compiles and that its tests run against a lab. Each fix sits
// between a "// snippet: NAME" line and a "// end snippet" line; the
// lessons quote that text verbatim, and a test checks that they still do.
package stackfix

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// snippet: tenant-tx

// InTenantTx runs fn in one transaction on one pooled connection, scoped
// to tenant with a transaction-local setting that ends at COMMIT or
// ROLLBACK.
func InTenantTx(ctx context.Context, pool *pgxpool.Pool, tenant string, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('app.current_tenant', $1, true)`, tenant); err != nil {
			return err
		}
		return fn(tx)
	})
}

// end snippet

// snippet: tenant-batch

// TenantBatch queues the transaction-local set_config before the queries
// of b: pgx sends a batch as one implicit transaction on one connection.
func TenantBatch(tenant string, queue func(b *pgx.Batch)) *pgx.Batch {
	b := &pgx.Batch{}
	b.Queue(`SELECT set_config('app.current_tenant', $1, true)`, tenant)
	queue(b)
	return b
}

// end snippet

// snippet: pgbouncer-config

// BouncerPoolConfig parses url for a pool that talks to PgBouncer in
// transaction mode: no named prepared statements, which belong to one
// server connection.
func BouncerPoolConfig(url string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	return cfg, nil
}

// end snippet

// snippet: guards

// ResetOnRelease makes the pool clear the tenant setting of every
// connection that comes back; a connection the reset fails on is closed.
func ResetOnRelease(cfg *pgxpool.Config) {
	cfg.AfterRelease = func(c *pgx.Conn) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Exec(ctx, "RESET app.current_tenant")
		return err == nil
	}
}

// CheckBeforeUse makes the pool refuse (close) a connection that still
// holds a tenant when a request acquires it, and hand out another.
func CheckBeforeUse(cfg *pgxpool.Config) {
	cfg.PrepareConn = func(ctx context.Context, c *pgx.Conn) (bool, error) {
		var v *string
		if err := c.QueryRow(ctx, `SELECT current_setting('app.current_tenant', true)`).Scan(&v); err != nil {
			return false, nil
		}
		return v == nil || *v == "", nil
	}
}

// end snippet

// snippet: tenant-role

// InTenantRole runs fn in one transaction as role, switched with SET
// LOCAL ROLE so that the backend is back to the pool's role at COMMIT.
// role is one of the application's own role names, never user input.
func InTenantRole(ctx context.Context, pool *pgxpool.Pool, role string, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+pgx.Identifier{role}.Sanitize()); err != nil {
			return err
		}
		return fn(tx)
	})
}

// end snippet

// snippet: tenant-context

// ErrNoTenant is returned for a request whose context carries no tenant:
// the request fails instead of running unscoped.
var ErrNoTenant = errors.New("no tenant in the request's context")

type tenantKey struct{}

// WithTenant returns a copy of ctx that carries the request's tenant; the
// middleware calls it once per request.
func WithTenant(ctx context.Context, tenant string) context.Context {
	return context.WithValue(ctx, tenantKey{}, tenant)
}

// TenantFrom returns the tenant ctx carries, and false when it carries
// none.
func TenantFrom(ctx context.Context) (string, bool) {
	tenant, ok := ctx.Value(tenantKey{}).(string)
	return tenant, ok && tenant != ""
}

// InRequestTenantTx runs fn in InTenantTx for the tenant ctx carries.
func InRequestTenantTx(ctx context.Context, pool *pgxpool.Pool, fn func(pgx.Tx) error) error {
	tenant, ok := TenantFrom(ctx)
	if !ok {
		return ErrNoTenant
	}
	return InTenantTx(ctx, pool, tenant, fn)
}

// end snippet

// snippet: background-work

// StartForRequest runs work in a goroutine that outlives the request: it
// keeps the request's values, its tenant among them, and drops its
// cancellation, so the work is not cut off when the response is sent.
func StartForRequest(ctx context.Context, work func(context.Context) error) <-chan error {
	done := make(chan error, 1)
	go func(ctx context.Context) { done <- work(ctx) }(context.WithoutCancel(ctx))
	return done
}

// end snippet

// snippet: check-forced-rls

// UnprotectedTablesSQL lists every table and partition in schema public
// that has a tenant_id column and does not have row-level security both
// enabled and forced.
const UnprotectedTablesSQL = `SELECT c.oid::regclass::text
FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p') AND c.relnamespace = 'public'::regnamespace
  AND NOT (c.relrowsecurity AND c.relforcerowsecurity)
ORDER BY 1`

// CheckForcedRLS returns an error that names every table
// UnprotectedTablesSQL finds; a test runs it after the migrations.
func CheckForcedRLS(ctx context.Context, db *pgxpool.Pool) error {
	rows, err := db.Query(ctx, UnprotectedTablesSQL)
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	if len(names) > 0 {
		return fmt.Errorf("tables with a tenant_id column and no forced RLS: %s", strings.Join(names, ", "))
	}
	return nil
}

// end snippet

// snippet: discard-on-release

// DiscardOnRelease makes the pool run DISCARD ALL on every connection that
// comes back (settings, role, prepared statements, LISTEN, temporary
// tables, advisory locks), and sends statements without naming them, so that
// DISCARD ALL drops no statement pgx still counts on; a connection the
// reset fails on is closed.
func DiscardOnRelease(cfg *pgxpool.Config) {
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	cfg.AfterRelease = func(c *pgx.Conn) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Exec(ctx, "DISCARD ALL")
		return err == nil
	}
}

// end snippet

// snippet: catalog-check

// CatalogCheck runs query, a catalog query that returns one name per row,
// and returns an error that lists the names after what when it finds any;
// a test runs it after the migrations, as the app's own role.
func CatalogCheck(ctx context.Context, db *pgxpool.Pool, what, query string) error {
	rows, _ := db.Query(ctx, query)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	if len(names) > 0 {
		return fmt.Errorf("%s: %s", what, strings.Join(names, ", "))
	}
	return nil
}

// end snippet

// snippet: check-owner-rights

// OwnerRightsSQL lists what the current role may read in schema public
// with its owner's rights instead of its own: views without
// security_invoker, materialized views, and SECURITY DEFINER functions.
const OwnerRightsSQL = `SELECT c.oid::regclass::text AS name
FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND has_table_privilege(c.oid, 'SELECT')
  AND (c.relkind = 'm' OR (c.relkind = 'v' AND NOT EXISTS (
    SELECT FROM pg_options_to_table(c.reloptions) o
    WHERE o.option_name = 'security_invoker' AND o.option_value::bool)))
UNION ALL
SELECT p.oid::regprocedure::text
FROM pg_proc p
WHERE p.pronamespace = 'public'::regnamespace AND p.prosecdef
  AND has_function_privilege(p.oid, 'EXECUTE')
ORDER BY 1`

// end snippet

// snippet: search-param

// SearchInvoices returns the ids of the invoices, in the request's
// transaction tx, whose customer contains term. The term is sent as a
// parameter, apart from the SQL text: the server compares it as a string
// and never runs any of it.
func SearchInvoices(ctx context.Context, tx pgx.Tx, term string) ([]int32, error) {
	rows, _ := tx.Query(ctx, `SELECT id FROM invoices WHERE strpos(customer, $1) > 0 ORDER BY id`, term)
	return pgx.CollectRows(rows, pgx.RowTo[int32])
}

// end snippet

// snippet: not-member

// CheckNotMember returns an error when the pool's login role is a member
// of role, directly or through other roles: any SQL it runs could SET ROLE
// to it, and if it inherits, every policy TO role applies to its queries
// at once. The tenant API runs it at start-up with the role of the admin
// policies.
func CheckNotMember(ctx context.Context, pool *pgxpool.Pool, role string) error {
	var user string
	var member bool
	err := pool.QueryRow(ctx, `SELECT current_user::text, pg_has_role($1::name, 'MEMBER')`, role).Scan(&user, &member)
	if err != nil {
		return err
	}
	if member {
		return fmt.Errorf("%s is a member of %s, whose policies it can reach", user, role)
	}
	return nil
}

// end snippet

// snippet: check-tenant-keys

// TenantKeysSQL lists, in schema public, the unique indexes of tables with
// a tenant_id column that leave tenant_id out (primary keys aside), and the
// TRUNCATE, REFERENCES and TRIGGER privileges the current role holds on
// such tables.
const TenantKeysSQL = `SELECT name FROM (
  SELECT i.indexrelid::regclass::text AS name
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indrelid
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
  WHERE c.relnamespace = 'public'::regnamespace AND i.indisunique AND NOT i.indisprimary
    AND NOT a.attnum = ANY (i.indkey)
  UNION ALL
  SELECT format('%s on %s', p.priv, c.oid::regclass)
  FROM pg_class c
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
  CROSS JOIN unnest(ARRAY['TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p(priv)
  WHERE c.relkind IN ('r', 'p') AND c.relnamespace = 'public'::regnamespace
    AND has_table_privilege(c.oid, p.priv)
) found
ORDER BY name COLLATE "C"`

// end snippet

// snippet: check-tenant-indexes

// UnindexedTenantTablesSQL lists the tables in schema public with
// row-level security and a tenant_id column that have no index starting
// with tenant_id.
const UnindexedTenantTablesSQL = `SELECT c.oid::regclass::text AS name
FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p') AND c.relnamespace = 'public'::regnamespace AND c.relrowsecurity
  AND NOT EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum)
ORDER BY 1`

// end snippet

// snippet: explain-as-tenant

// ExplainAsTenant returns the plan of query as the pool's role gets it,
// scoped to tenant: the plan with the policies in it, which a superuser's
// EXPLAIN never shows. It does not run the query.
func ExplainAsTenant(ctx context.Context, pool *pgxpool.Pool, tenant, query string) (plan string, err error) {
	err = InTenantTx(ctx, pool, tenant, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, "EXPLAIN "+query)
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		plan = strings.Join(lines, "\n")
		return err
	})
	return plan, err
}

// end snippet

// snippet: check-immutable-readers

// ImmutableSettingReadersSQL lists the functions outside the system
// schemas that are declared IMMUTABLE and read a setting: the planner may
// fold their result into a plan that later requests reuse.
const ImmutableSettingReadersSQL = `SELECT p.oid::regprocedure::text AS name
FROM pg_proc p
WHERE p.provolatile = 'i' AND p.prosrc ILIKE '%current_setting%'
  AND p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
ORDER BY 1`

// end snippet

// snippet: check-tenant-fks

// ForeignKeysWithoutTenantSQL lists the foreign keys in schema public
// between two tables with a tenant_id column that leave tenant_id out: the
// key's check reads the parent without row-level security, so such a key
// accepts another tenant's row.
const ForeignKeysWithoutTenantSQL = `SELECT con.conname::text AS name
FROM pg_constraint con
WHERE con.contype = 'f' AND con.connamespace = 'public'::regnamespace
  AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = con.conrelid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
  AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = con.confrelid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
  AND NOT EXISTS (SELECT FROM pg_attribute a
                  WHERE a.attrelid = con.conrelid AND a.attnum = ANY (con.conkey) AND a.attname = 'tenant_id')
ORDER BY 1`

// end snippet
