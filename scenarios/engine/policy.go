package engine

import (
	"context"
	"strings"
)

// policyQuery reads a table's row-level security from the catalog: the
// table's relrowsecurity and relforcerowsecurity, and each policy that
// applies to SELECT with its USING expression as the server prints it and
// the roles it is for (pg_policies says {public} for everyone).
const policyQuery = `SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity,
       coalesce(array_agg(p.policyname::text ORDER BY p.policyname) FILTER (WHERE p.policyname IS NOT NULL), '{}'),
       coalesce(array_agg(coalesce(p.qual, 'true') ORDER BY p.policyname) FILTER (WHERE p.policyname IS NOT NULL), '{}'),
       coalesce(array_agg(p.permissive ORDER BY p.policyname) FILTER (WHERE p.policyname IS NOT NULL), '{}'),
       coalesce(array_agg(array_to_string(p.roles, ', ') ORDER BY p.policyname) FILTER (WHERE p.policyname IS NOT NULL), '{}')
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_policies p ON p.schemaname = n.nspname AND p.tablename = c.relname AND p.cmd IN ('ALL', 'SELECT')
 WHERE c.oid = $1::regclass
 GROUP BY c.relname, c.relrowsecurity, c.relforcerowsecurity`

// ReadPolicy reads the row-level security in force on table through q (a
// connection or a transaction, which sees its own uncommitted DDL): the
// table's RLS and FORCE flags and its SELECT policies, their USING
// expressions combined the way the server combines them (permissive ones
// with OR, restrictive ones with AND) on one line each, each marked with the roles it is for
// when it is not for everyone. Using is "" when the table has no such
// policy.
func ReadPolicy(ctx context.Context, q Querier, table string) (*Policy, error) {
	var (
		p                              Policy
		names, quals, permissive, role []string
	)
	if err := q.QueryRow(ctx, policyQuery, table).Scan(&p.Table, &p.Enabled, &p.Force, &names, &quals, &permissive, &role); err != nil {
		return nil, err
	}
	p.Name = strings.Join(names, ", ")
	var or, and []string
	for i, qual := range quals {
		// pg_get_expr lays a CASE out on several indented lines.
		qual = strings.Join(strings.Fields(qual), " ")
		if role[i] != "public" {
			qual += " TO " + role[i]
		}
		if permissive[i] == "RESTRICTIVE" {
			and = append(and, qual)
		} else {
			or = append(or, qual)
		}
	}
	p.Using = strings.Join(or, " OR ")
	if len(and) > 0 {
		if len(or) > 1 {
			p.Using = "(" + p.Using + ")"
		}
		p.Using = strings.Join(append([]string{p.Using}, and...), " AND ")
	}
	return &p, nil
}

// ShowPolicy reads the row-level security on table through q and records
// it as the policy in force (see ReadPolicy).
func (e *Env) ShowPolicy(ctx context.Context, q Querier, table string) error {
	p, err := ReadPolicy(ctx, q, table)
	if err != nil {
		return err
	}
	e.tracker.SetPolicy(p)
	return nil
}
