package lessons_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
)

// TestClaimsAboutORMTransactions checks on a real server what the
// orm-transactions lesson says in prose: a set_config(..., true) sent
// outside a transaction is gone by the next statement, which then sees the
// session's value (or the empty string once the name exists, NULL before), and
// idle_in_transaction_session_timeout ends a session that sits idle in a
// transaction, after pg_stat_activity showed it idle in transaction.
func TestClaimsAboutORMTransactions(t *testing.T) {
	pool := pgenvtest.MustConnect(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	connect := func() *pgx.Conn {
		t.Helper()
		c, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig.Copy())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	setting := func(c *pgx.Conn, name string) string {
		t.Helper()
		var v *string
		if err := c.QueryRow(ctx, "SELECT current_setting($1, true)", name).Scan(&v); err != nil {
			t.Fatal(err)
		}
		if v == nil {
			return "NULL"
		}
		return "'" + *v + "'"
	}

	c := connect()
	const name = "claims_orm.current_tenant"
	if got := setting(c, name); got != "NULL" {
		t.Errorf("a name never set: %s, want NULL", got)
	}
	var set string
	if err := c.QueryRow(ctx, "SELECT set_config($1, '1', true)", name).Scan(&set); err != nil || set != "1" {
		t.Fatalf("set_config(..., true) outside a transaction returned %q, %v", set, err)
	}
	if got := setting(c, name); got != "''" {
		t.Errorf("the statement after set_config(..., true) outside a transaction sees %s, want ''", got)
	}
	if _, err := c.Exec(ctx, "SELECT set_config($1, '2', false)", name); err != nil {
		t.Fatal(err)
	}
	if err := c.QueryRow(ctx, "SELECT set_config($1, '1', true)", name).Scan(&set); err != nil || set != "1" {
		t.Fatalf("set_config(..., true) returned %q, %v", set, err)
	}
	if got := setting(c, name); got != "'2'" {
		t.Errorf("after a session-level '2' and a local '1' in its own statement, the next statement sees %s, want '2'", got)
	}

	idle := connect()
	if _, err := idle.Exec(ctx, "SET idle_in_transaction_session_timeout = '2s'"); err != nil {
		t.Fatal(err)
	}
	pid := idle.PgConn().PID()
	if _, err := idle.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := idle.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	var state string
	if err := pool.QueryRow(ctx, "SELECT coalesce(state, '') FROM pg_stat_activity WHERE pid = $1", pid).Scan(&state); err != nil || state != "idle in transaction" {
		t.Errorf("pg_stat_activity while the transaction waits: %q, %v; want idle in transaction", state, err)
	}
	// Wait, with a backoff, for the server to end the session.
	wait := 50 * time.Millisecond
	for {
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("backend %d still there after idle_in_transaction_session_timeout = 2s", pid)
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
	_, err := idle.Exec(ctx, "SELECT 1")
	var pe *pgconn.PgError
	if err == nil {
		t.Error("the session ended by idle_in_transaction_session_timeout still answers")
	} else if errors.As(err, &pe) && pe.Code != "25P03" {
		t.Errorf("the ended session answered %v, want 25P03 or a closed connection", err)
	}
	t.Logf("after the timeout: %v", err)
}
