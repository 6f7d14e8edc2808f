package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// TenantRolePolicy is the policy that tenant roles bring: a tenant role
// sees the invoices of the tenant whose id ends its name (lab_<id>_t1 sees
// tenant 1's).
const TenantRolePolicy = "tenant_by_role"

// TenantRole returns the name of t's role in the sandbox's lab.
func TenantRole(sb Sandbox, t Tenant) string {
	return fmt.Sprintf("lab_%s_t%d", sb.Lab, t.ID)
}

// TenantRoleNames returns the names of every tenant's role, in tenant order.
func TenantRoleNames(sb Sandbox) []string {
	names := make([]string, len(sb.Tenants))
	for i, t := range sb.Tenants {
		names[i] = TenantRole(sb, t)
	}
	return names
}

// MakeTenantRoles removes whatever tenant roles and policy a crashed run
// left, then creates one NOLOGIN role per tenant, grants them to the app
// role (which may then SET ROLE to any of them) and adds TenantRolePolicy,
// in one transaction on the lab's superuser connection. The policy is shown
// on the live view.
func (e *Env) MakeTenantRoles(ctx context.Context) error {
	var quoted []string
	for _, name := range TenantRoleNames(e.Sandbox) {
		quoted = append(quoted, pgx.Identifier{name}.Sanitize())
	}
	list := strings.Join(quoted, ", ")
	var stmts []string
	for _, q := range quoted {
		stmts = append(stmts, "CREATE ROLE "+q+" NOLOGIN NOSUPERUSER NOBYPASSRLS")
	}
	stmts = append(stmts,
		"GRANT USAGE ON SCHEMA public TO "+list,
		"GRANT SELECT ON invoices, tenants TO "+list,
		"GRANT "+list+" TO "+pgx.Identifier{e.Sandbox.AppRole}.Sanitize(),
		"CREATE POLICY "+TenantRolePolicy+" ON invoices TO "+list+
			` USING (tenant_id = (regexp_match(current_user::text, '_t([0-9]+)$'))[1]::int)`,
	)
	return e.AdminTx(ctx, func(tx pgx.Tx) error {
		if err := dropTenantRoles(ctx, e.Sandbox, tx); err != nil {
			return err
		}
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("tenant roles: %s: %w", s, err)
			}
		}
		return e.ShowPolicy(ctx, tx, "invoices")
	})
}

// DropTenantRoles drops TenantRolePolicy and the tenant roles (with their
// privileges and memberships), whichever of them exist.
func (e *Env) DropTenantRoles(ctx context.Context) error {
	return e.AdminTx(ctx, func(tx pgx.Tx) error { return dropTenantRoles(ctx, e.Sandbox, tx) })
}

// dropTenantRoles is DropTenantRoles in tx.
func dropTenantRoles(ctx context.Context, sb Sandbox, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '5s'"); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "DROP POLICY IF EXISTS "+TenantRolePolicy+" ON invoices"); err != nil {
		return fmt.Errorf("drop policy %s: %w", TenantRolePolicy, err)
	}
	for _, name := range TenantRoleNames(sb) {
		var n int
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", name).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			continue
		}
		q := pgx.Identifier{name}.Sanitize()
		for _, s := range []string{"DROP OWNED BY " + q, "DROP ROLE " + q} {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("drop tenant roles: %s: %w", s, err)
			}
		}
	}
	return nil
}
