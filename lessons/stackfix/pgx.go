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
