package sessions

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Tenants returns the tenants every lab is seeded with.
func Tenants() []engine.Tenant {
	return []engine.Tenant{{ID: 1, Name: "Acme"}, {ID: 2, Name: "Globex"}, {ID: 3, Name: "Initech"}}
}

// invoicesPerTenant is how many invoices each seeded tenant owns.
const invoicesPerTenant = 3

// schemaSQL creates the lab's tables as the owner role. RLS is enabled and
// forced, and the policy fails closed on an unset or empty setting.
const schemaSQL = `
CREATE TABLE tenants (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE invoices (
  id serial PRIMARY KEY,
  tenant_id int NOT NULL REFERENCES tenants(id),
  customer text NOT NULL,
  amount numeric(10,2) NOT NULL
);
ALTER TABLE invoices ENABLE ROW LEVEL SECURITY;
ALTER TABLE invoices FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON invoices
  USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::int);
`

// names holds a lab's database and role names.
type names struct {
	db, owner, app string
}

func labNames(id string) names {
	return names{db: "lab_" + id, owner: "lab_" + id + "_owner", app: "lab_" + id + "_app"}
}

// createSandbox creates the lab's roles and database, its schema and seed
// rows. On error it removes whatever it made.
func (m *Manager) createSandbox(ctx context.Context, id, password string) (err error) {
	n := labNames(id)
	ident := pgx.Identifier{}
	q := func(s string) string { ident = pgx.Identifier{s}; return ident.Sanitize() }
	defer func() {
		if err != nil {
			m.dropSandbox(context.WithoutCancel(ctx), id)
		}
	}()
	stmts := []string{
		fmt.Sprintf("CREATE ROLE %s NOLOGIN", q(n.owner)),
		fmt.Sprintf("CREATE ROLE %s LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT CONNECTION LIMIT %d PASSWORD %s",
			q(n.app), m.cfg.ConnLimit, quoteLiteral(password)),
		fmt.Sprintf("CREATE DATABASE %s OWNER %s TEMPLATE template0", q(n.db), q(n.owner)),
		fmt.Sprintf("REVOKE ALL ON DATABASE %s FROM PUBLIC", q(n.db)),
		fmt.Sprintf("GRANT CONNECT ON DATABASE %s TO %s", q(n.db), q(n.app)),
	}
	for _, s := range stmts {
		if _, err := m.admin.Exec(ctx, s); err != nil {
			return fmt.Errorf("create lab %s: %w", id, err)
		}
	}
	conn, release, err := m.labAdmin(ctx, id)
	if err != nil {
		return err
	}
	defer release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	setup := []string{
		"REVOKE ALL ON SCHEMA public FROM PUBLIC",
		fmt.Sprintf("GRANT ALL ON SCHEMA public TO %s", q(n.owner)),
		fmt.Sprintf("GRANT USAGE ON SCHEMA public TO %s", q(n.app)),
		fmt.Sprintf("SET LOCAL ROLE %s", q(n.owner)),
		schemaSQL,
		fmt.Sprintf("GRANT SELECT ON tenants TO %s", q(n.app)),
		fmt.Sprintf("GRANT SELECT, INSERT, UPDATE, DELETE ON invoices TO %s", q(n.app)),
		fmt.Sprintf("GRANT USAGE ON SEQUENCE invoices_id_seq TO %s", q(n.app)),
		"RESET ROLE",
	}
	for _, s := range setup {
		if _, err := tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("create lab %s schema: %w", id, err)
		}
	}
	if err := seed(ctx, tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// seed inserts the seed rows (as the superuser, so FORCE RLS does not apply).
func seed(ctx context.Context, tx pgx.Tx) error {
	for _, t := range Tenants() {
		if _, err := tx.Exec(ctx, "INSERT INTO tenants (id, name) VALUES ($1, $2)", t.ID, t.Name); err != nil {
			return fmt.Errorf("seed tenants: %w", err)
		}
		for i := 1; i <= invoicesPerTenant; i++ {
			if _, err := tx.Exec(ctx, "INSERT INTO invoices (tenant_id, customer, amount) VALUES ($1, $2, $3)",
				t.ID, fmt.Sprintf("%s customer %d", t.Name, i), 100*t.ID+i); err != nil {
				return fmt.Errorf("seed invoices: %w", err)
			}
		}
	}
	return nil
}

// reseed puts the lab's data back as it was created, ends every backend of
// the app role, and leaves schema and roles alone.
func (m *Manager) reseed(ctx context.Context, id string) error {
	n := labNames(id)
	if err := m.endAppBackends(ctx, n); err != nil {
		return fmt.Errorf("reset lab %s: %w", id, err)
	}
	conn, release, err := m.labAdmin(ctx, id)
	if err != nil {
		return err
	}
	defer release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "TRUNCATE invoices, tenants RESTART IDENTITY"); err != nil {
		return fmt.Errorf("reset lab %s: %w", id, err)
	}
	if err := seed(ctx, tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// endAppBackends terminates every backend of the lab's app role and waits
// (a few seconds at most) until the server has let them go.
func (m *Manager) endAppBackends(ctx context.Context, n names) error {
	deadline := time.Now().Add(connCloseTimeout)
	for {
		var left int
		err := m.admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = $1 AND usename = $2`, n.db, n.app).Scan(&left)
		if err != nil {
			return err
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d backends of %s did not end", left, n.app)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// dropSandbox removes the lab's database (ending its backends) and roles.
// It logs failures and goes on: it runs on the way out.
func (m *Manager) dropSandbox(ctx context.Context, id string) {
	n := labNames(id)
	stmts := []string{"DROP DATABASE IF EXISTS " + pgx.Identifier{n.db}.Sanitize() + " WITH (FORCE)"}
	// Scenarios may create roles of their own under the lab's prefix; a run
	// cut off by a crash could leave them, so drop every one.
	var extra []string
	rows, err := m.admin.Query(ctx, `SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1) AND rolname NOT IN ($2, $3) ORDER BY rolname`,
		"lab_"+id+"_", n.app, n.owner)
	if err == nil {
		extra, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil {
		m.log.Error("drop lab: list roles", "lab", id, "err", err)
	}
	for _, r := range extra {
		stmts = append(stmts, "DROP ROLE IF EXISTS "+pgx.Identifier{r}.Sanitize())
	}
	stmts = append(stmts, "DROP ROLE IF EXISTS "+pgx.Identifier{n.app}.Sanitize(), "DROP ROLE IF EXISTS "+pgx.Identifier{n.owner}.Sanitize())
	for _, s := range stmts {
		if _, err := m.admin.Exec(ctx, s); err != nil {
			m.log.Error("drop lab", "lab", id, "sql", s, "err", err)
		}
	}
}

// labAdmin opens the lab's one superuser connection to its database; the
// lab's semaphore keeps it to one at a time.
func (m *Manager) labAdmin(ctx context.Context, id string) (*pgx.Conn, func(), error) {
	sem := m.adminSem(id)
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	cfg := m.admin.Config().ConnConfig.Copy()
	cfg.Database = labNames(id).db
	cfg.RuntimeParams["application_name"] = "rlslab admin " + id
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		<-sem
		return nil, nil, fmt.Errorf("lab %s: admin connection: %w", id, err)
	}
	return conn, func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), connCloseTimeout)
		defer cancel()
		conn.Close(closeCtx)
		<-sem
	}, nil
}

// appURL is the app role's URL to the lab's database, on the admin's server.
func appURL(admin *pgxpool.Pool, id, password string) string {
	c := admin.Config().ConnConfig
	n := labNames(id)
	u := url.URL{Scheme: "postgres", User: url.UserPassword(n.app, password), Path: "/" + n.db}
	v := url.Values{}
	if len(c.Host) > 0 && c.Host[0] == '/' {
		v.Set("host", c.Host)
	} else {
		u.Host = c.Host
	}
	v.Set("port", fmt.Sprint(c.Port))
	if c.TLSConfig == nil {
		v.Set("sslmode", "disable")
	} else {
		v.Set("sslmode", "require")
	}
	u.RawQuery = v.Encode()
	return u.String()
}

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}
