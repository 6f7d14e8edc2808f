package scenarios

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Variants of missing-rls (stable names: tools and lessons rely on them).
const (
	MissingRLSPartition  = "unprotected-partition"
	MissingRLSNewTable   = "new-table"
	MissingRLSEverywhere = "rls-everywhere"
)

// The tables missing-rls adds to the lab for the length of a run: events,
// partitioned by month, with its two partitions, and notes, a table a later
// migration adds.
const (
	eventsTable   = "events"
	eventsNov     = "events_2026_11"
	eventsDec     = "events_2026_12"
	notesTable    = "notes"
	tenantPolicyQ = "tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::int"
)

// unprotectedSQL lists every table and partition in the public schema that
// has a tenant_id column and does not have row-level security both enabled
// and forced. It is the check the lesson hands out.
const unprotectedSQL = `SELECT c.oid::regclass::text
FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p') AND c.relnamespace = 'public'::regnamespace
  AND NOT (c.relrowsecurity AND c.relforcerowsecurity)
ORDER BY 1`

// MissingRLS returns the missing-rls scenario: RLS is a property of one
// table, not of a schema or of a partitioned table's children. A partition
// of a parent with forced RLS, read directly, returns every tenant's rows,
// and a table a later migration creates without ENABLE ROW LEVEL SECURITY
// is open to every tenant. The fix enables and forces RLS, with the tenant
// policy, on every tenant table and every partition, and a catalog query
// finds any table with a tenant_id column that lacks it.
func MissingRLS() *engine.Scenario {
	v := func(name, summary string) engine.Variant {
		return engine.Variant{Name: name, Summary: summary, Conns: adminAndPool, Run: func(ctx context.Context, env *engine.Env) error {
			return runMissingRLS(ctx, env, name)
		}}
	}
	return &engine.Scenario{
		ID:     "missing-rls",
		Pacing: engine.PacingReplay,
		Title:  "Partitions and new tables: where RLS is switched on",
		Variants: []engine.Variant{
			v(MissingRLSPartition, "events is partitioned by month, with RLS enabled and forced on the parent only; Acme queries the December partition directly."),
			v(MissingRLSNewTable, "A later migration adds a notes table with a tenant_id column and a grant to the app role, and no ENABLE ROW LEVEL SECURITY; Acme queries it."),
			v(MissingRLSEverywhere, "RLS enabled and forced, with the tenant policy, on the parent, on each partition and on notes; Acme queries all three."),
		},
		MinTenants: 2,
	}
}

// protect returns the statements that enable and force RLS on table, with
// the lab's tenant policy.
func protect(table string) []string {
	return []string{
		"ALTER TABLE " + table + " ENABLE ROW LEVEL SECURITY",
		"ALTER TABLE " + table + " FORCE ROW LEVEL SECURITY",
		"CREATE POLICY tenant_isolation ON " + table + " USING (" + tenantPolicyQ + ")",
	}
}

func runMissingRLS(ctx context.Context, env *engine.Env, variant string) (err error) {
	sb := env.Sandbox
	acme := sb.Tenants[0]
	app := quote(sb.AppRole)
	defer undoDDL(ctx, env, &err, "DROP TABLE IF EXISTS "+eventsTable+" CASCADE", "DROP TABLE IF EXISTS "+notesTable)

	withEvents := variant != MissingRLSNewTable
	withNotes := variant != MissingRLSPartition
	var stmts []string
	var desc []string
	if withEvents {
		stmts = append(stmts,
			"CREATE TABLE "+eventsTable+" (id serial, tenant_id int NOT NULL, created_on date NOT NULL, body text NOT NULL) PARTITION BY RANGE (created_on)",
			"CREATE TABLE "+eventsNov+" PARTITION OF "+eventsTable+" FOR VALUES FROM ('2026-11-01') TO ('2026-12-01')",
			"CREATE TABLE "+eventsDec+" PARTITION OF "+eventsTable+" FOR VALUES FROM ('2026-12-01') TO ('2027-01-01')")
		stmts = append(stmts, protect(eventsTable)...)
		if variant == MissingRLSEverywhere {
			stmts = append(stmts, protect(eventsNov)...)
			stmts = append(stmts, protect(eventsDec)...)
			desc = append(desc, fmt.Sprintf("%s, partitioned by month into %s and %s, with RLS enabled and forced and the tenant policy on the parent and on each partition", eventsTable, eventsNov, eventsDec))
		} else {
			desc = append(desc, fmt.Sprintf("%s, partitioned by month into %s and %s, with RLS enabled and forced and the tenant policy on the parent only", eventsTable, eventsNov, eventsDec))
		}
		// What GRANT SELECT ON ALL TABLES IN SCHEMA public, or default
		// privileges, would give the app role.
		stmts = append(stmts, "GRANT SELECT ON "+eventsTable+", "+eventsNov+", "+eventsDec+" TO "+app)
	}
	if withNotes {
		stmts = append(stmts, "CREATE TABLE "+notesTable+" (id serial PRIMARY KEY, tenant_id int NOT NULL, body text NOT NULL)")
		if variant == MissingRLSEverywhere {
			stmts = append(stmts, protect(notesTable)...)
			desc = append(desc, notesTable+", with RLS enabled and forced and the tenant policy")
		} else {
			desc = append(desc, notesTable+", added by a later migration with no ENABLE ROW LEVEL SECURITY")
		}
		stmts = append(stmts, "GRANT SELECT ON "+notesTable+" TO "+app)
	}
	show := eventsTable
	if !withEvents {
		show = notesTable
	}
	if err := labDDLShowing(ctx, env, true, show, stmts...); err != nil {
		return err
	}
	// The superuser writes the rows: with forced RLS the owner would need a
	// tenant for each.
	var seed []string
	for _, t := range sb.Tenants {
		if withEvents {
			seed = append(seed, fmt.Sprintf("INSERT INTO %s (tenant_id, created_on, body) SELECT %d, date '2026-12-01' + i, 'event ' || i FROM generate_series(1, 3) i", eventsTable, t.ID))
		}
		if withNotes {
			seed = append(seed, fmt.Sprintf("INSERT INTO %s (tenant_id, body) SELECT %d, 'note ' || i FROM generate_series(1, 3) i", notesTable, t.ID))
		}
	}
	if err := labDDL(ctx, env, false, seed...); err != nil {
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("Created as the lab's owner: %s; the app role may read them. Each tenant has 3 rows in each table, in December.", strings.Join(desc, "; "))); err != nil {
		return err
	}

	unprotected, err := unprotectedTables(ctx, env)
	if err != nil {
		return err
	}
	env.Tracker().SetMetric("unprotected_tables", orNone(unprotected), float64(len(unprotected)))
	if len(unprotected) > 0 {
		env.Tracker().Note(fmt.Sprintf("The check finds %d table(s) with a tenant_id column and no forced RLS: %s.", len(unprotected), strings.Join(unprotected, ", ")))
	} else {
		env.Tracker().Note("The check finds no table with a tenant_id column and no forced RLS.")
	}
	if err := env.Step(ctx, fmt.Sprintf("The check for tables with a tenant_id column and no forced RLS finds %d: %s.", len(unprotected), orNone(unprotected))); err != nil {
		return err
	}

	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 1, MinConns: 1})
	if err != nil {
		return err
	}
	var reads []string
	if withEvents {
		reads = append(reads, eventsTable, eventsDec)
	}
	if withNotes {
		reads = append(reads, notesTable)
	}
	for _, table := range reads {
		if err := missingRLSRead(ctx, env, pool, acme, table); err != nil {
			return err
		}
	}
	return env.Conclude(ctx, "The tables are dropped again.")
}

// missingRLSRead runs one request for t on pool, scoped to t, that reads
// the tenant ids of table, and says what came back.
func missingRLSRead(ctx context.Context, env *engine.Env, pool *engine.Pool, t engine.Tenant, table string) error {
	r := pool.NewRequest(t, engine.PatternTxLocal)
	defer r.ReleaseQuiet(context.WithoutCancel(ctx))
	tx, err := scopedTx(ctx, r, t.Setting())
	if err != nil {
		return err
	}
	var secured, forced, partition bool
	if err := tx.QueryRow(ctx, "SELECT relrowsecurity, relforcerowsecurity, relispartition FROM pg_class WHERE oid = $1::regclass", table).Scan(&secured, &forced, &partition); err != nil {
		r.Fail(err)
		return err
	}
	if err := observeFrom(ctx, r, tx, "SELECT tenant_id FROM "+table); err != nil {
		r.Fail(err)
		return err
	}
	if err := r.Commit(ctx); err != nil {
		return err
	}
	row := r.Row()
	what := table
	if partition {
		what = "the partition " + table + ", read directly,"
	}
	var why string
	switch {
	case row.Leak && !secured:
		why = fmt.Sprintf("LEAK: %s returned %d rows, %d of other tenants, to %s scoped to %s: the table has no row-level security of its own, so no policy applies.", what, row.Rows, row.ForeignRows, row.Role, t.Name)
	case row.Leak:
		why = fmt.Sprintf("LEAK: %s returned %d rows, %d of other tenants, to %s scoped to %s.", what, row.Rows, row.ForeignRows, row.Role, t.Name)
	default:
		why = fmt.Sprintf("%s returned %d rows, all %s's: RLS enabled=%t, forced=%t on this table.", what, row.Rows, t.Name, secured, forced)
	}
	r.Update(func(rr *engine.RequestRow) { rr.Why = why })
	env.Tracker().Note(fmt.Sprintf("Request #%d: %s", r.Seq, why))
	if err := env.Step(ctx, fmt.Sprintf("%s on backend %d: %s", r.Label(), row.PID, why)); err != nil {
		return err
	}
	return r.Release(ctx)
}

// unprotectedTables runs the lesson's check on the lab's superuser
// connection.
func unprotectedTables(ctx context.Context, env *engine.Env) ([]string, error) {
	var out []string
	err := env.AdminTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, unprotectedSQL)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	return out, err
}

// orNone returns names joined by commas, or "none".
func orNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
