package lessons_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestClaimsAboutSessionState checks, on a real server, claims of lessons
// 21 and 22 that no scenario runs: the server does not report search_path
// to the client (it does report application_name); a SECURITY DEFINER
// function whose search_path leaves out pg_temp finds the caller's
// temporary table first, and one with pg_temp last does not; a second
// CREATE TEMP TABLE of the same name fails with 42P07; a session-level
// advisory lock survives ROLLBACK and goes with its session, a
// transaction-level one ends with COMMIT and with ROLLBACK.
func TestClaimsAboutSessionState(t *testing.T) {
	cs := newClaimsSession(t, "claims3_")
	ctx, pool, c, exec := cs.ctx, cs.pool, cs.conn, cs.exec
	schema := pgx.Identifier{cs.name}.Sanitize()
	cs.dropAtEnd("DROP SCHEMA IF EXISTS " + schema + " CASCADE")

	// 21: search_path is not reported to the client; application_name is.
	exec("SET application_name = 'claims'")
	exec("SET search_path = " + schema + ", public")
	if got := c.PgConn().ParameterStatus("application_name"); got != "claims" {
		t.Errorf("application_name as reported to the client: %q, want 'claims'", got)
	}
	if got := c.PgConn().ParameterStatus("search_path"); got != "" {
		t.Errorf("search_path was reported to the client as %q; lesson 21 says PostgreSQL 15 does not report it", got)
	}
	exec("RESET search_path")

	// 21: pg_temp left out of a definer function's search_path is searched
	// first, so the caller's temporary table shadows the function's table.
	for _, s := range []string{
		"CREATE SCHEMA " + schema,
		"CREATE TABLE " + schema + ".tickets (tenant_id int NOT NULL)",
		"INSERT INTO " + schema + ".tickets VALUES (2)",
	} {
		exec(s)
	}
	exec("BEGIN")
	exec("SET LOCAL search_path = " + schema)
	exec("CREATE FUNCTION " + schema + ".no_temp() RETURNS int LANGUAGE sql STABLE SECURITY DEFINER SET search_path = " + schema + " AS 'SELECT min(tenant_id) FROM tickets'")
	exec("CREATE FUNCTION " + schema + ".temp_last() RETURNS int LANGUAGE sql STABLE SECURITY DEFINER SET search_path = " + schema + ", pg_temp AS 'SELECT min(tenant_id) FROM tickets'")
	exec("COMMIT")
	exec("CREATE TEMP TABLE tickets (tenant_id int)")
	exec("INSERT INTO tickets VALUES (99)")
	var noTemp, tempLast int
	if err := c.QueryRow(ctx, "SELECT "+schema+".no_temp(), "+schema+".temp_last()").Scan(&noTemp, &tempLast); err != nil {
		t.Fatal(err)
	}
	if noTemp != 99 || tempLast != 2 {
		t.Errorf("definer functions read tenant %d (search_path without pg_temp) and %d (pg_temp last); want the caller's temp table (99) and the function's own table (2)", noTemp, tempLast)
	}

	// 22: a second CREATE TEMP TABLE of the same name fails.
	var pe *pgconn.PgError
	if _, err := c.Exec(ctx, "CREATE TEMP TABLE tickets (tenant_id int)"); !errors.As(err, &pe) || pe.Code != "42P07" {
		t.Errorf("CREATE TEMP TABLE a second time: %v; want 42P07 relation already exists", err)
	} else {
		t.Logf("CREATE TEMP TABLE a second time: %s", pe.Message)
	}

	// 22: advisory locks and transactions.
	locks := func() int {
		t.Helper()
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	exec("BEGIN")
	exec("SELECT pg_advisory_lock(4242, 1)")
	exec("ROLLBACK")
	if n := locks(); n != 1 {
		t.Errorf("session lock after ROLLBACK: %d held, want 1", n)
	}
	exec("SELECT pg_advisory_unlock(4242, 1)")
	// 22: the session lock goes when its session ends.
	other, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oc := other.Hijack()
	var holder int32
	if err := oc.QueryRow(ctx, "SELECT pg_backend_pid() FROM (SELECT pg_advisory_lock(4242, 2)) AS l").Scan(&holder); err != nil {
		t.Fatal(err)
	}
	held := func() int {
		t.Helper()
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = $1", holder).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := held(); n != 1 {
		t.Errorf("the other session's lock: %d held, want 1", n)
	}
	if err := oc.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// The backend exits after the client has gone: wait for it, backing off.
	for wait := time.Millisecond; held() != 0; wait = min(2*wait, 100*time.Millisecond) {
		if ctx.Err() != nil {
			t.Fatal("the lock of a closed session is still held")
		}
		time.Sleep(wait)
	}
	for _, end := range []string{"COMMIT", "ROLLBACK"} {
		exec("BEGIN")
		exec("SELECT pg_advisory_xact_lock(4242, 1)")
		if n := locks(); n != 1 {
			t.Errorf("transaction lock inside the transaction: %d held, want 1", n)
		}
		exec(end)
		if n := locks(); n != 0 {
			t.Errorf("transaction lock after %s: %d held, want 0", end, n)
		}
	}
}
