package sessions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

// revokeSignalsSQL takes from PUBLIC, in the lab's database only (function
// privileges are per database), the functions that reach other sessions:
// signalling backends and NOTIFY by function. Free play's SQL guard refuses
// them too; this holds when the guard is bypassed by dynamic SQL. (Advisory
// locks stay callable: the reset-scope lesson takes one as the app role,
// and free play releases any left after each call.)
const revokeSignalsSQL = `DO $$
DECLARE f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
    WHERE p.pronamespace = 'pg_catalog'::regnamespace
      AND p.proname IN ('pg_terminate_backend', 'pg_cancel_backend', 'pg_notify')
  LOOP
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
  END LOOP;
END $$`

// names holds a lab's database and role names.
type names struct {
	db, owner, app string
}

func labNames(id string) names {
	return names{db: "lab_" + id, owner: "lab_" + id + "_owner", app: "lab_" + id + "_app"}
}

// newSandbox builds a new sandbox: its roles and database, marked as this
// instance's, its schema and seed rows. On error it removes whatever it
// made.
func (s *labServer) newSandbox(ctx context.Context) (sb engine.Sandbox, err error) {
	id := s.m.newLabID()
	password := randomHex(16)
	n := labNames(id)
	q := func(s string) string { return pgx.Identifier{s}.Sanitize() }
	defer func() {
		if err != nil {
			s.dropQuietly(id)
		}
	}()
	marker := quoteLiteral(s.inst.marker())
	// The roles and their markers in one transaction; the database cannot be
	// created inside one, so it is marked right after.
	roles := []string{
		fmt.Sprintf("CREATE ROLE %s NOLOGIN", q(n.owner)),
		fmt.Sprintf("COMMENT ON ROLE %s IS %s", q(n.owner), marker),
		fmt.Sprintf("CREATE ROLE %s LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT CONNECTION LIMIT %d PASSWORD %s",
			q(n.app), s.m.cfg.ConnLimit, quoteLiteral(password)),
		fmt.Sprintf("COMMENT ON ROLE %s IS %s", q(n.app), marker),
	}
	// Creating runs on a maintenance connection, so that many sandboxes
	// can be made at once without starving the admin pool.
	err = s.maint(ctx, "", func(ctx context.Context, conn *pgx.Conn) error {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			for _, s := range roles {
				if _, err := tx.Exec(ctx, s); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("create lab %s roles: %w", id, err)
		}
		for _, s := range []string{
			fmt.Sprintf("CREATE DATABASE %s OWNER %s TEMPLATE template0", q(n.db), q(n.owner)),
			fmt.Sprintf("COMMENT ON DATABASE %s IS %s", q(n.db), marker),
			fmt.Sprintf("REVOKE ALL ON DATABASE %s FROM PUBLIC", q(n.db)),
			fmt.Sprintf("GRANT CONNECT ON DATABASE %s TO %s", q(n.db), q(n.app)),
		} {
			if _, err := conn.Exec(ctx, s); err != nil {
				return fmt.Errorf("create lab %s: %w", id, err)
			}
		}
		return nil
	})
	if err != nil {
		return sb, err
	}
	err = s.maintTx(ctx, id, func(ctx context.Context, tx pgx.Tx) error {
		for _, s := range []string{
			"REVOKE ALL ON SCHEMA public FROM PUBLIC",
			fmt.Sprintf("GRANT ALL ON SCHEMA public TO %s", q(n.owner)),
			fmt.Sprintf("GRANT USAGE ON SCHEMA public TO %s", q(n.app)),
			fmt.Sprintf("SET LOCAL ROLE %s", q(n.owner)),
			schemaSQL,
			fmt.Sprintf("GRANT SELECT ON tenants TO %s", q(n.app)),
			fmt.Sprintf("GRANT SELECT, INSERT, UPDATE, DELETE ON invoices TO %s", q(n.app)),
			fmt.Sprintf("GRANT USAGE ON SEQUENCE invoices_id_seq TO %s", q(n.app)),
			"RESET ROLE",
			revokeSignalsSQL,
		} {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("create lab %s schema: %w", id, err)
			}
		}
		return seed(ctx, tx)
	})
	if err != nil {
		return sb, err
	}
	return engine.Sandbox{
		Lab: id, Database: n.db, AppURL: appURL(s.admin, id, password), AppRole: n.app, OwnerRole: n.owner,
		ConnLimit: s.m.cfg.ConnLimit, Tenants: Tenants(), Bouncers: s.m.cfg.Bouncers,
		Admin: func(ctx context.Context) (*pgx.Conn, func(), error) { return s.labAdmin(ctx, id) },
	}, nil
}

// maintTx runs f in a transaction on a maintenance connection to lab id's
// database (one of MaintConns) as the superuser, and commits it.
func (s *labServer) maintTx(ctx context.Context, id string, f func(ctx context.Context, tx pgx.Tx) error) error {
	return s.maint(ctx, labNames(id).db, func(ctx context.Context, conn *pgx.Conn) error {
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return f(ctx, tx) })
	})
}

// maintTimeout bounds one piece of maintenance once it has its connection
// (waiting for the connection is bounded by the caller's context only).
const maintTimeout = 20 * time.Second

// maint runs f on a maintenance connection (one of MaintConns) to database
// db ("" for the admin URL's own).
func (s *labServer) maint(ctx context.Context, db string, f func(ctx context.Context, conn *pgx.Conn) error) error {
	select {
	case s.maintSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.maintSem }()
	ctx, cancel := context.WithTimeout(ctx, maintTimeout)
	defer cancel()
	cfg := s.admin.Config().ConnConfig.Copy()
	if db != "" {
		cfg.Database = db
	}
	cfg.RuntimeParams["application_name"] = "rlslab maintenance"
	// A lab's schema and rows must be on disk before rlslab says the lab
	// is ready, which it may say in the tables of another server: the
	// admin pool's asynchronous commit would let a crash of the lab's
	// server keep the lab's database (CREATE DATABASE always waits for
	// its WAL) and lose the tables made in it just before.
	cfg.RuntimeParams["synchronous_commit"] = "on"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("maintenance connection: %w", err)
	}
	defer s.closeAndWait(conn)
	return f(ctx, conn)
}

// closeAndWait closes a direct connection and waits (a second at most)
// until its backend has left pg_stat_activity: its slot of the budget is
// free only once the server has let it go.
func (s *labServer) closeAndWait(conn *pgx.Conn) {
	pid := conn.PgConn().PID()
	ctx, cancel := context.WithTimeout(context.Background(), connCloseTimeout)
	defer cancel()
	conn.Close(ctx)
	wctx, wcancel := context.WithTimeout(context.Background(), time.Second)
	defer wcancel()
	for {
		var alive bool
		err := s.admin.QueryRow(wctx, "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", int32(pid)).Scan(&alive)
		if err != nil || !alive {
			return
		}
		select {
		case <-wctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// seed inserts the seed rows (as the superuser, so FORCE RLS does not
// apply), in two statements.
func seed(ctx context.Context, tx pgx.Tx) error {
	var ids []int32
	var names []string
	for _, t := range Tenants() {
		ids, names = append(ids, int32(t.ID)), append(names, t.Name)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO tenants (id, name) SELECT * FROM unnest($1::int[], $2::text[])", ids, names); err != nil {
		return fmt.Errorf("seed tenants: %w", err)
	}
	_, err := tx.Exec(ctx, `INSERT INTO invoices (tenant_id, customer, amount)
		SELECT t.id, t.name || ' customer ' || i, 100 * t.id + i
		FROM tenants t, generate_series(1, $1) i ORDER BY t.id, i`, invoicesPerTenant)
	if err != nil {
		return fmt.Errorf("seed invoices: %w", err)
	}
	return nil
}

// reseed puts the lab's data back as it was created, ends every backend of
// the app role, and leaves schema and roles alone.
func (s *labServer) reseed(ctx context.Context, id string) error {
	n := labNames(id)
	if err := s.endAppBackends(ctx, n); err != nil {
		return fmt.Errorf("reset lab %s: %w", id, err)
	}
	return s.maintTx(ctx, id, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "TRUNCATE invoices, tenants RESTART IDENTITY"); err != nil {
			return fmt.Errorf("reset lab %s: %w", id, err)
		}
		return seed(ctx, tx)
	})
}

// endAppBackends terminates every backend of the lab's app role and waits
// (a few seconds at most) until the server has let them go.
func (s *labServer) endAppBackends(ctx context.Context, n names) error {
	deadline := time.Now().Add(connCloseTimeout)
	for {
		var left int
		err := s.admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
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

// dropSandbox removes the lab's database (ending its backends) and every
// role under its prefix (scenarios may create roles of their own; a run cut
// off by a crash could leave them).
func (s *labServer) dropSandbox(ctx context.Context, id string) error {
	return s.maint(ctx, "", func(ctx context.Context, conn *pgx.Conn) error { return dropSandbox(ctx, conn, id) })
}

// dropSandbox drops lab id's database and roles on conn.
func dropSandbox(ctx context.Context, conn *pgx.Conn, id string) error {
	n := labNames(id)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{n.db}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop lab %s: %w", id, err)
	}
	rows, err := conn.Query(ctx, `SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY rolname <> $2, rolname <> $3, rolname DESC`,
		"lab_"+id+"_", n.owner, n.app)
	if err != nil {
		return fmt.Errorf("drop lab %s: list roles: %w", id, err)
	}
	roles, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("drop lab %s: list roles: %w", id, err)
	}
	// The scenario roles first (they may be members of the lab's), then the
	// app role, then the owner.
	for i := len(roles) - 1; i >= 0; i-- {
		if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{roles[i]}.Sanitize()); err != nil {
			return fmt.Errorf("drop lab %s: %w", id, err)
		}
	}
	return nil
}

// dropQuietly drops a sandbox on a deadline of its own and remembers a
// failure for the reaper to retry.
func (s *labServer) dropQuietly(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), dropTimeout)
	defer cancel()
	if err := s.dropSandbox(ctx, id); err != nil {
		s.m.fails.Warn("drop lab; will retry", "lab", id, "err", err)
		s.retryDrop(id)
	}
}

// labAdmin opens a scenario's superuser connection to lab id's database:
// one at a time per lab, counted in its run's budget.
func (s *labServer) labAdmin(ctx context.Context, id string) (*pgx.Conn, func(), error) {
	sem := s.m.adminSem(id)
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	cfg := s.admin.Config().ConnConfig.Copy()
	cfg.Database = labNames(id).db
	cfg.RuntimeParams["application_name"] = "rlslab admin " + id
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		<-sem
		return nil, nil, fmt.Errorf("lab %s: admin connection: %w", id, err)
	}
	return conn, func() {
		s.closeAndWait(conn)
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
	v.Set("sslmode", sslMode(c))
	u.RawQuery = v.Encode()
	return u.String()
}

// sslMode is the sslmode that connects to the admin's server the way the
// admin pool does: "disable" without TLS, "prefer" when the admin may fall
// back to a plain connection (pgx's default), "require" otherwise.
func sslMode(c *pgx.ConnConfig) string {
	if c.TLSConfig == nil {
		return "disable"
	}
	for _, fb := range c.Fallbacks {
		if fb.TLSConfig == nil {
			return "prefer"
		}
	}
	return "require"
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

// isOutage reports whether err means the database could not be reached or
// did not answer in time (as opposed to an error it answered with).
func isOutage(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// The server answered: only "cannot connect now" and "too many
		// connections" classes are outages.
		return strings.HasPrefix(pe.Code, "57P") || pe.Code == "53300"
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) ||
		pgconn.Timeout(err) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || pgconn.SafeToRetry(err)
}
