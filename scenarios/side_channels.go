package scenarios

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Variants of side-channels (stable names: tools and lessons rely on them).
const (
	SideChannelsUniqueProbe  = "unique-probe"
	SideChannelsTruncate     = "truncate"
	SideChannelsTenantUnique = "tenant-unique"
	SideChannelsNoTruncate   = "no-truncate"
)

// contactsTable is the table side-channels adds for the length of a run:
// two contacts per tenant, with the lab's tenant policy.
const contactsTable = "contacts"

// SideChannels returns the side-channels scenario: RLS hides rows, not
// their existence and not whole-table commands. A unique constraint on
// e-mail tells Acme that Globex has a contact with that address; TRUNCATE,
// which RLS does not filter, wipes every tenant's contacts when the app
// role may run it. A unique key per tenant and no TRUNCATE grant close both.
func SideChannels() *engine.Scenario {
	v := func(name, summary, unique, grant string, truncate bool) engine.Variant {
		return engine.Variant{Name: name, Summary: summary, Conns: adminAndPool, Run: func(ctx context.Context, env *engine.Env) error {
			return runSideChannels(ctx, env, unique, grant, truncate)
		}}
	}
	return &engine.Scenario{
		ID:     "side-channels",
		Pacing: engine.PacingReplay,
		Title:  "Unique keys and TRUNCATE on a table with RLS",
		Variants: []engine.Variant{
			v(SideChannelsUniqueProbe, "contacts has UNIQUE (email); Acme inserts an address that Globex already has.",
				"UNIQUE (email)", "SELECT, INSERT, DELETE", false),
			v(SideChannelsTruncate, "The app role was granted ALL on contacts, TRUNCATE included; Acme's request runs TRUNCATE contacts.",
				"UNIQUE (email)", "ALL", true),
			v(SideChannelsTenantUnique, "contacts has UNIQUE (tenant_id, email); Acme inserts an address that Globex already has.",
				"UNIQUE (tenant_id, email)", "SELECT, INSERT, DELETE", false),
			v(SideChannelsNoTruncate, "The app role has SELECT, INSERT, DELETE on contacts; Acme's request runs TRUNCATE contacts.",
				"UNIQUE (tenant_id, email)", "SELECT, INSERT, DELETE", true),
		},
		MinTenants: 3,
	}
}

// contactEmail is the seeded address of tenant t's contact i.
func contactEmail(t engine.Tenant, i int) string {
	return fmt.Sprintf("%s@%s.example", []string{"ceo", "billing"}[i], lower(t.Name))
}

// lower returns s in ASCII lower case.
func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func runSideChannels(ctx context.Context, env *engine.Env, unique, grant string, truncate bool) (err error) {
	sb := env.Sandbox
	acme, globex := sb.Tenants[0], sb.Tenants[1]
	defer undoDDL(ctx, env, &err, "DROP TABLE IF EXISTS "+contactsTable)
	stmts := []string{"CREATE TABLE " + contactsTable + " (tenant_id int NOT NULL, email text NOT NULL, " + unique + ")"}
	for _, t := range sb.Tenants {
		for i := 0; i < 2; i++ {
			stmts = append(stmts, fmt.Sprintf("INSERT INTO %s VALUES (%d, %s)", contactsTable, t.ID, quoteLiteral(contactEmail(t, i))))
		}
	}
	stmts = append(stmts,
		"ALTER TABLE "+contactsTable+" ENABLE ROW LEVEL SECURITY",
		"ALTER TABLE "+contactsTable+" FORCE ROW LEVEL SECURITY",
		"CREATE POLICY tenant_isolation ON "+contactsTable+" USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::int)",
		"GRANT "+grant+" ON "+contactsTable+" TO "+quote(sb.AppRole))
	if err := labDDLShowing(ctx, env, true, contactsTable, stmts...); err != nil {
		return err
	}
	others := 2 * (len(sb.Tenants) - 1)
	if err := env.Step(ctx, fmt.Sprintf("A table %s (tenant_id, email, %s), two contacts per tenant, the lab's tenant policy, forced; the app role is granted %s on it.", contactsTable, unique, grant)); err != nil {
		return err
	}
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 1, MinConns: 1})
	if err != nil {
		return err
	}
	r := pool.NewRequest(acme, engine.PatternTxLocal)
	defer r.ReleaseQuiet(context.WithoutCancel(ctx))
	tx, err := scopedTx(ctx, r, acme.Setting())
	if err != nil {
		return err
	}
	if err := observeFrom(ctx, r, tx, "SELECT tenant_id FROM "+contactsTable); err != nil {
		r.Fail(err)
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("%s, scoped to %s, lists its contacts: %d rows, all its own.", r.Label(), acme.Name, r.Row().Rows)); err != nil {
		return err
	}
	if truncate {
		return sideTruncate(ctx, env, r, tx, others)
	}
	probe := contactEmail(globex, 0)
	var visible int
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+contactsTable+" WHERE email = $1", probe).Scan(&visible); err != nil {
		r.Fail(err)
		return err
	}
	_, ierr := tx.Exec(ctx, "INSERT INTO "+contactsTable+" (tenant_id, email) VALUES ($1, $2)", acme.ID, probe)
	revealed := 0.0
	var say string
	var pe *pgconn.PgError
	switch {
	case errors.As(ierr, &pe) && pe.Code == "23505":
		revealed = 1
		r.Fail(ierr)
		detail := "no DETAIL line: the server leaves the key out on a table with RLS, but the error is the answer"
		if pe.Detail != "" {
			detail = "DETAIL: " + pe.Detail
		}
		say = fmt.Sprintf("SELECT for %s finds %d rows, yet INSERT of it for %s fails: %s (SQLSTATE %s; %s). So some other tenant has that address.", probe, visible, acme.Name, pe.Message, pe.Code, detail)
		r.Update(func(rr *engine.RequestRow) {
			rr.Why = fmt.Sprintf("The duplicate-key error reveals a row RLS hides: %s exists in another tenant.", probe)
		})
		env.Tracker().Disclose(fmt.Sprintf("Disclosure: %s learned that %s exists in another tenant: its SELECT finds %d rows, yet its INSERT failed with a duplicate key (SQLSTATE %s).", acme.Name, probe, visible, pe.Code))
	case ierr != nil:
		r.Fail(ierr)
		return ierr
	default:
		say = fmt.Sprintf("SELECT for %s finds %d rows, and INSERT of it for %s succeeds: the key is unique per tenant, so it says nothing about other tenants (the insert is rolled back).", probe, visible, acme.Name)
	}
	env.Tracker().SetMetric("existence_revealed", fmt.Sprint(revealed == 1), revealed)
	env.Tracker().Note(say)
	if err := env.Step(ctx, fmt.Sprintf("%s: %s", r.Label(), say)); err != nil {
		return err
	}
	if err := tx.Rollback(ctx); err != nil && !errors.Is(err, pgx.ErrTxClosed) {
		return err
	}
	if err := r.Release(ctx); err != nil {
		return err
	}
	return env.Conclude(ctx, "The contacts table is dropped again.")
}

// sideTruncate has r, scoped to Acme, empty contacts with TRUNCATE (and
// with DELETE when TRUNCATE is refused), then counts, as the superuser, how
// many of the other tenants' rows are gone.
func sideTruncate(ctx context.Context, env *engine.Env, r *engine.Request, tx pgx.Tx, others int) error {
	acme := env.Sandbox.Tenants[0]
	say := fmt.Sprintf("%s, scoped to %s, runs TRUNCATE %s to clear its contacts", r.Label(), acme.Name, contactsTable)
	if _, err := tx.Exec(ctx, "TRUNCATE "+contactsTable); err != nil {
		var pe *pgconn.PgError
		if !errors.As(err, &pe) {
			r.Fail(err)
			return err
		}
		r.Fail(err)
		r.Update(func(rr *engine.RequestRow) { rr.Why = "TRUNCATE refused: the app role has no TRUNCATE privilege." })
		env.Tracker().Note(fmt.Sprintf("TRUNCATE by the app role: %s (SQLSTATE %s).", pe.Message, pe.Code))
		_ = tx.Rollback(ctx)
		if err := env.Step(ctx, fmt.Sprintf("%s: refused, %s (SQLSTATE %s).", say, pe.Message, pe.Code)); err != nil {
			return err
		}
		if err := r.Release(ctx); err != nil {
			return err
		}
		d := r.Pool().NewRequest(acme, engine.PatternTxLocal)
		defer d.ReleaseQuiet(context.WithoutCancel(ctx))
		dtx, err := scopedTx(ctx, d, acme.Setting())
		if err != nil {
			return err
		}
		tag, err := dtx.Exec(ctx, "DELETE FROM "+contactsTable)
		if err != nil {
			d.Fail(err)
			return err
		}
		if err := observeFrom(ctx, d, dtx, "SELECT tenant_id FROM "+contactsTable); err != nil {
			d.Fail(err)
			return err
		}
		if err := d.Commit(ctx); err != nil {
			return err
		}
		say = fmt.Sprintf("%s runs DELETE FROM %s instead: RLS filters DELETE, so it removed %d rows, %s's own", d.Label(), contactsTable, tag.RowsAffected(), acme.Name)
		if err := env.Step(ctx, say+"."); err != nil {
			return err
		}
		if err := d.Release(ctx); err != nil {
			return err
		}
	} else {
		if err := r.Commit(ctx); err != nil {
			return err
		}
		r.Update(func(rr *engine.RequestRow) {
			rr.Why = "TRUNCATE is not subject to RLS: it emptied the table for every tenant."
		})
		if err := env.Step(ctx, say+": it succeeds."); err != nil {
			return err
		}
		if err := r.Release(ctx); err != nil {
			return err
		}
	}
	var left int
	if err := env.AdminTx(ctx, func(atx pgx.Tx) error {
		return atx.QueryRow(ctx, "SELECT count(*) FROM "+contactsTable+" WHERE tenant_id <> $1", acme.ID).Scan(&left)
	}); err != nil {
		return err
	}
	wiped := others - left
	if wiped > 0 {
		env.Tracker().Breach(fmt.Sprintf("Breach: %s's request wiped %d of the other tenants' %d contacts (counted by the superuser afterwards).", acme.Name, wiped, others))
	}
	env.Tracker().SetMetric("wiped_rows", fmt.Sprintf("%d of other tenants' %d contacts", wiped, others), float64(wiped))
	env.Tracker().Note(fmt.Sprintf("Counted by the superuser afterwards: %d of the other tenants' %d contacts are left, %d wiped by %s's request.", left, others, wiped, acme.Name))
	return env.Conclude(ctx, fmt.Sprintf("The superuser counts the other tenants' contacts: %d of %d left. The contacts table is dropped again.", left, others))
}
