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

// Variants of cross-tenant-fk (stable names: tools and lessons rely on them).
const (
	CrossTenantFKUnchecked = "unchecked-fk"
	CrossTenantFKComposite = "composite-fk"
)

// The tables cross-tenant-fk adds to the lab for the length of a run.
const (
	ordersTable     = "orders"
	orderLinesTable = "order_lines"
	ordersPerTenant = 3
)

// fksWithoutTenantSQL lists the foreign keys in the public schema between
// two tables that both have a tenant_id column, where the key's own columns
// leave tenant_id out. It is the check the lesson hands out.
const fksWithoutTenantSQL = `SELECT con.conname::text
FROM pg_constraint con
WHERE con.contype = 'f' AND con.connamespace = 'public'::regnamespace
  AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = con.conrelid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
  AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = con.confrelid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
  AND NOT EXISTS (SELECT FROM pg_attribute a
                  WHERE a.attrelid = con.conrelid AND a.attnum = ANY (con.conkey) AND a.attname = 'tenant_id')
ORDER BY 1`

// CrossTenantFK returns the cross-tenant-fk scenario: the server checks a
// foreign key by reading the referenced table without row-level security.
// With order_lines.order_id REFERENCES orders (id), Acme can write a line
// against Globex's order, which it cannot see, and whether an insert passes
// or fails with 23503 tells it which order ids exist. With UNIQUE
// (tenant_id, id) on orders and the foreign key (tenant_id, order_id), a
// line can only reference an order of its own tenant, and every other id
// fails the same way.
func CrossTenantFK() *engine.Scenario {
	v := func(name string, composite bool, summary string) engine.Variant {
		return engine.Variant{Name: name, Summary: summary, Conns: adminAndPool, Run: func(ctx context.Context, env *engine.Env) error {
			return runCrossTenantFK(ctx, env, composite)
		}}
	}
	return &engine.Scenario{
		ID:     "cross-tenant-fk",
		Pacing: engine.PacingReplay,
		Title:  "Foreign keys between tenant tables",
		Variants: []engine.Variant{
			v(CrossTenantFKUnchecked, false, "order_lines.order_id REFERENCES orders (id); Acme adds a line to Globex's order, then probes order ids."),
			v(CrossTenantFKComposite, true, "orders has UNIQUE (tenant_id, id) and the line's key is (tenant_id, order_id); Acme adds a line to Globex's order, then probes order ids."),
		},
		MinTenants: 2,
	}
}

func runCrossTenantFK(ctx context.Context, env *engine.Env, composite bool) (err error) {
	sb := env.Sandbox
	acme, globex := sb.Tenants[0], sb.Tenants[1]
	app := quote(sb.AppRole)
	defer undoDDL(ctx, env, &err, "DROP TABLE IF EXISTS "+orderLinesTable, "DROP TABLE IF EXISTS "+ordersTable)

	orders := "CREATE TABLE " + ordersTable + " (id int PRIMARY KEY, tenant_id int NOT NULL)"
	lines := "CREATE TABLE " + orderLinesTable + " (id serial PRIMARY KEY, tenant_id int NOT NULL, order_id int NOT NULL REFERENCES " + ordersTable + " (id), note text NOT NULL)"
	if composite {
		orders = "CREATE TABLE " + ordersTable + " (id int PRIMARY KEY, tenant_id int NOT NULL, UNIQUE (tenant_id, id))"
		lines = "CREATE TABLE " + orderLinesTable + " (id serial PRIMARY KEY, tenant_id int NOT NULL, order_id int NOT NULL, note text NOT NULL, FOREIGN KEY (tenant_id, order_id) REFERENCES " + ordersTable + " (tenant_id, id))"
	}
	stmts := []string{orders, lines}
	stmts = append(stmts, protect(ordersTable)...)
	stmts = append(stmts, protect(orderLinesTable)...)
	stmts = append(stmts,
		"GRANT SELECT ON "+ordersTable+" TO "+app,
		"GRANT SELECT, INSERT ON "+orderLinesTable+" TO "+app,
		"GRANT USAGE ON SEQUENCE "+orderLinesTable+"_id_seq TO "+app)
	if err := labDDLShowing(ctx, env, true, orderLinesTable, stmts...); err != nil {
		return err
	}
	var seed []string
	maxID := 0
	firstOf := map[int]int{}
	for i, t := range sb.Tenants {
		first := i*ordersPerTenant + 1
		firstOf[t.ID] = first
		maxID = first + ordersPerTenant - 1
		seed = append(seed, fmt.Sprintf("INSERT INTO %s (id, tenant_id) SELECT g, %d FROM generate_series(%d, %d) g", ordersTable, t.ID, first, maxID))
	}
	if err := labDDL(ctx, env, false, seed...); err != nil {
		return err
	}
	var unscoped []string
	if err := env.AdminTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, fksWithoutTenantSQL)
		if err != nil {
			return err
		}
		unscoped, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	}); err != nil {
		return err
	}
	env.Tracker().SetMetric("fks_without_tenant", orNone(unscoped), float64(len(unscoped)))
	env.Tracker().Note(fmt.Sprintf("The check for foreign keys between tenant tables that leave out tenant_id finds: %s.", orNone(unscoped)))
	if err := env.Step(ctx, fmt.Sprintf("Created as the lab's owner, with RLS enabled and forced and the tenant policy on both: %s; %s. Each tenant has %d orders, ids %d to %d in all.", orders, lines, ordersPerTenant, 1, maxID)); err != nil {
		return err
	}
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 1, MinConns: 1})
	if err != nil {
		return err
	}

	// Request #1: Acme writes a line against Globex's first order.
	target := firstOf[globex.ID]
	if err := fkWrite(ctx, env, pool, acme, globex, target); err != nil {
		return err
	}
	var crossed int
	if err := env.AdminTx(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT count(*) FROM `+orderLinesTable+` l JOIN `+ordersTable+` o ON o.id = l.order_id WHERE o.tenant_id <> l.tenant_id`).Scan(&crossed)
	}); err != nil {
		return err
	}
	env.Tracker().SetMetric("foreign_parent_writes", fmt.Sprint(crossed), float64(crossed))
	env.Tracker().Note(fmt.Sprintf("The superuser counts order lines whose order belongs to another tenant: %d.", crossed))

	// Request #2: Acme probes every id up to one past the last.
	revealed, missingErr, err := fkProbe(ctx, env, pool, acme, maxID+1)
	if err != nil {
		return err
	}
	env.Tracker().SetMetric("ids_revealed", fmt.Sprint(len(revealed)), float64(len(revealed)))
	if len(revealed) > 0 {
		env.Tracker().Note(fmt.Sprintf("LEAK: Acme cannot read orders %s, yet a line referencing each was accepted, while id %d failed with: %s. The difference tells Acme which order ids exist.", joinInts(revealed), maxID+1, missingErr))
	} else {
		env.Tracker().Note(fmt.Sprintf("Every order id Acme cannot read failed the same way as the missing id %d (%s): nothing is revealed.", maxID+1, missingErr))
	}
	if len(revealed) > 0 {
		env.Tracker().Disclose(fmt.Sprintf("Disclosure: probing order ids told %s which %d of the other tenants' orders exist, though it cannot read them.", acme.Name, len(revealed)))
	}
	if crossed > 0 {
		env.Tracker().Breach(fmt.Sprintf("Breach: %s wrote %d order line(s) against %s's order, which it cannot read (counted by the superuser).", acme.Name, crossed, globex.Name))
	}
	detail := "No line was written against another tenant's order and no order id was revealed."
	if crossed > 0 || len(revealed) > 0 {
		detail = fmt.Sprintf("No rows were read across tenants, but %s wrote %d line(s) against %s's order and learned which %d order ids it cannot read exist.", acme.Name, crossed, globex.Name, len(revealed))
	}
	return env.Conclude(ctx, detail+" The tables are dropped again.")
}

// fkWrite runs one request for t that checks it cannot read order id,
// which belongs to owner, and then inserts a line referencing it.
func fkWrite(ctx context.Context, env *engine.Env, pool *engine.Pool, t, owner engine.Tenant, id int) error {
	r := pool.NewRequest(t, engine.PatternTxLocal)
	defer r.ReleaseQuiet(context.WithoutCancel(ctx))
	tx, err := scopedTx(ctx, r, t.Setting())
	if err != nil {
		return err
	}
	var visible int
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+ordersTable+" WHERE id = $1", id).Scan(&visible); err != nil {
		r.Fail(err)
		return err
	}
	insert := "INSERT INTO " + orderLinesTable + " (tenant_id, order_id, note) VALUES ($1, $2, 'refund')"
	if _, ierr := tx.Exec(ctx, insert, t.ID, id); ierr != nil {
		var pe *pgconn.PgError
		if !errors.As(ierr, &pe) {
			r.Fail(ierr)
			return ierr
		}
		r.Fail(ierr)
		why := fmt.Sprintf("%s cannot read order %d (%d rows), and the line referencing it was refused: %s.", t.Name, id, visible, pe.Message)
		r.Update(func(rr *engine.RequestRow) { rr.Why = why })
		env.Tracker().Note(fmt.Sprintf("Request #%d: %s", r.Seq, why))
		if err := env.Step(ctx, fmt.Sprintf("%s: %s", r.Label(), why)); err != nil {
			return err
		}
		return r.Release(ctx)
	}
	if err := observeFrom(ctx, r, tx, "SELECT tenant_id FROM "+orderLinesTable); err != nil {
		r.Fail(err)
		return err
	}
	if err := r.Commit(ctx); err != nil {
		return err
	}
	why := fmt.Sprintf("LEAK: %s cannot read order %d (%d rows), which is %s's, yet its line referencing that order was written and committed.", t.Name, id, visible, owner.Name)
	r.Update(func(rr *engine.RequestRow) { rr.Why = why })
	env.Tracker().Note(fmt.Sprintf("Request #%d: %s", r.Seq, why))
	if err := env.Step(ctx, fmt.Sprintf("%s on backend %d: %s", r.Label(), r.Row().PID, why)); err != nil {
		return err
	}
	return r.Release(ctx)
}

// fkProbe runs one request for t that tries, for every order id from 1 to
// last, whether t can read it and whether a line referencing it is
// accepted, each in a savepoint, and rolls everything back. It returns the
// ids t cannot read whose line was accepted, and the error the id last
// (which does not exist) raised.
func fkProbe(ctx context.Context, env *engine.Env, pool *engine.Pool, t engine.Tenant, last int) ([]int, string, error) {
	r := pool.NewRequest(t, engine.PatternTxLocal)
	defer r.ReleaseQuiet(context.WithoutCancel(ctx))
	tx, err := scopedTx(ctx, r, t.Setting())
	if err != nil {
		return nil, "", err
	}
	var revealed []int
	missing := ""
	for id := 1; id <= last; id++ {
		var visible int
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+ordersTable+" WHERE id = $1", id).Scan(&visible); err != nil {
			r.Fail(err)
			return nil, "", err
		}
		sp, err := tx.Begin(ctx)
		if err != nil {
			r.Fail(err)
			return nil, "", err
		}
		_, ierr := sp.Exec(ctx, "INSERT INTO "+orderLinesTable+" (tenant_id, order_id, note) VALUES ($1, $2, 'probe')", t.ID, id)
		var pe *pgconn.PgError
		switch {
		case ierr == nil && visible == 0:
			revealed = append(revealed, id)
		case ierr != nil && !errors.As(ierr, &pe):
			r.Fail(ierr)
			return nil, "", ierr
		}
		if ierr != nil && id == last {
			missing = fmt.Sprintf("%s (SQLSTATE %s)", pe.Message, pe.Code)
		}
		if err := sp.Rollback(ctx); err != nil {
			r.Fail(err)
			return nil, "", err
		}
	}
	if err := observeFrom(ctx, r, tx, "SELECT tenant_id FROM "+orderLinesTable); err != nil {
		r.Fail(err)
		return nil, "", err
	}
	why := fmt.Sprintf("probed order ids 1 to %d with inserts that were rolled back: %d ids %s cannot read were accepted.", last, len(revealed), t.Name)
	if len(revealed) > 0 {
		why = "LEAK (existence): " + why
	}
	r.Update(func(rr *engine.RequestRow) { rr.Why = why })
	if err := env.Step(ctx, fmt.Sprintf("%s: %s", r.Label(), why)); err != nil {
		return nil, "", err
	}
	return revealed, missing, r.Release(ctx)
}

// joinInts returns ids joined by commas.
func joinInts(ids []int) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return strings.Join(s, ", ")
}
