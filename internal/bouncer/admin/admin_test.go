package admin_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rlslab/rlslab/internal/bouncer"
	"github.com/rlslab/rlslab/internal/bouncer/admin"
	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
)

func TestMain(m *testing.M) { pgenvtest.Main(m) }

const password = "pencil-42"

// startBouncer makes a database and a login role of its own on the test
// server and starts a local PgBouncer in front of it with one server
// connection per pool; it returns the PgBouncer, the database and the role.
func startBouncer(t *testing.T) (*bouncer.Bouncer, string, string) {
	t.Helper()
	srv := pgenvtest.MustServer(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "admin_" + hex.EncodeToString(b)
	ctx := context.Background()
	su, err := pgx.Connect(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer su.Close(ctx)
	for _, q := range []string{"CREATE ROLE " + name + " LOGIN PASSWORD '" + password + "'", "CREATE DATABASE " + name + " OWNER " + name} {
		if _, err := su.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		su, err := pgx.Connect(ctx, srv.URL)
		if err != nil {
			t.Error(err)
			return
		}
		defer su.Close(ctx)
		for _, q := range []string{"DROP DATABASE IF EXISTS " + name + " WITH (FORCE)", "DROP ROLE IF EXISTS " + name} {
			if _, err := su.Exec(ctx, q); err != nil {
				t.Error(err)
			}
		}
	})
	up, err := bouncer.UpstreamFromURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	bc, err := bouncer.Start(sctx, bouncer.Options{Mode: bouncer.ModeLocal, Upstream: up, Databases: []string{name},
		Users: map[string]string{name: password}, PoolSize: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bc.Close() })
	return bc, name, name
}

// dial connects to url (exec mode: PgBouncer in transaction mode does not
// keep prepared statements), closed when the test ends.
func dial(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	c, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// poolOf returns the SHOW POOLS row of db/user.
func poolOf(t *testing.T, console *pgx.Conn, db, user string) admin.Pool {
	t.Helper()
	pools, err := admin.ShowPools(t.Context(), console)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pools {
		if p.Database == db && p.User == user {
			return p
		}
	}
	t.Fatalf("no pool %s/%s in %+v", db, user, pools)
	return admin.Pool{}
}

// TestShowReadsAWaitingClient holds the pool's only server connection in a
// transaction while a second client asks for one: SHOW POOLS counts the
// waiting client and how long it has waited, SHOW CLIENTS shows it waiting
// and the holder linked to its server, and SHOW SERVERS reads that
// server's backend PID, address and times.
func TestShowReadsAWaitingClient(t *testing.T) {
	t.Parallel()
	b, db, user := startBouncer(t)
	ctx := t.Context()
	console := dial(t, b.AdminURL())
	holder, waiter := dial(t, b.URL(db, user, password)), dial(t, b.URL(db, user, password))
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	var pid int
	if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() {
		_, err := waiter.Exec(ctx, "SELECT 1")
		waited <- err
	}()
	// PgBouncer tells nobody when a client starts waiting: look, backing off.
	var p admin.Pool
	for pause := time.Millisecond; ; pause = min(2*pause, 100*time.Millisecond) {
		if p = poolOf(t, console, db, user); p.ClWaiting == 1 && p.MaxWait > 0 {
			break
		}
		select {
		case err := <-waited:
			t.Fatalf("the second client got a server while the only one was held: %v", err)
		case <-time.After(pause):
		case <-ctx.Done():
			t.Fatalf("the second client never waited: %+v", p)
		}
	}
	if p.ClActive != 1 || p.SvActive != 1 || p.SvIdle != 0 || p.PoolMode != "transaction" || p.Raw["cl_waiting"] != "1" {
		t.Errorf("pool while one waits: %+v", p)
	}

	clients, err := admin.ShowClients(ctx, console)
	if err != nil {
		t.Fatal(err)
	}
	var holding, waiting, self int
	var link string
	for _, c := range clients {
		switch {
		case c.Database == "pgbouncer":
			self++ // the console connection is a client too
		case c.State == "active" && c.Link != "":
			holding++
			link = c.Link
		case c.State == "waiting" && c.Link == "":
			waiting++
		}
		if c.Type != "C" || c.Ptr == "" || c.ConnectTime.IsZero() || c.Port == 0 {
			t.Errorf("client row not read: %+v", c)
		}
	}
	if holding != 1 || waiting != 1 || self != 1 {
		t.Errorf("clients: %d holding, %d waiting, %d console; want one each: %+v", holding, waiting, self, clients)
	}
	servers, err := admin.ShowServers(ctx, console)
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 1 {
		t.Fatalf("servers %+v, want one", servers)
	}
	s := servers[0]
	if s.Type != "S" || s.RemotePID != pid || s.Ptr != link || s.State != "active" || s.Addr == "" || s.Port == 0 ||
		s.ConnectTime.IsZero() || s.RequestTime.IsZero() || s.ConnectTime.After(time.Now().Add(time.Minute)) {
		t.Errorf("server %+v: want backend %d, linked from %s, its address and times read", s, pid, link)
	}

	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatalf("the waiting client after the commit: %v", err)
	}
	if p := poolOf(t, console, db, user); p.ClWaiting != 0 || p.MaxWait != 0 {
		t.Errorf("pool once no one waits: %+v", p)
	}
}

// TestShowConfigReadsTheSettings reads the settings PgBouncer runs with.
func TestShowConfigReadsTheSettings(t *testing.T) {
	t.Parallel()
	b, _, _ := startBouncer(t)
	cfg, err := admin.ShowConfig(t.Context(), dial(t, b.AdminURL()))
	if err != nil {
		t.Fatal(err)
	}
	if cfg["pool_mode"] != "transaction" || cfg["default_pool_size"] != "1" || len(cfg) < 20 {
		t.Errorf("config (%d settings): pool_mode %q default_pool_size %q", len(cfg), cfg["pool_mode"], cfg["default_pool_size"])
	}
}

// TestShowFailsWithWhatItRan: a console that is gone, or a SHOW that
// PgBouncer does not know, is an error that names the SHOW.
func TestShowFailsWithWhatItRan(t *testing.T) {
	t.Parallel()
	b, db, user := startBouncer(t)
	ctx := t.Context()
	console := dial(t, b.AdminURL())
	if _, err := admin.ShowPools(ctx, dial(t, b.URL(db, user, password))); err == nil || !strings.Contains(err.Error(), "SHOW POOLS") {
		t.Errorf("SHOW POOLS on a database connection, not the console: %v", err)
	}
	if err := console.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for name, show := range map[string]func() error{
		"SHOW POOLS":   func() error { _, err := admin.ShowPools(ctx, console); return err },
		"SHOW SERVERS": func() error { _, err := admin.ShowServers(ctx, console); return err },
		"SHOW CLIENTS": func() error { _, err := admin.ShowClients(ctx, console); return err },
		"SHOW CONFIG":  func() error { _, err := admin.ShowConfig(ctx, console); return err },
	} {
		err := show()
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s on a closed console: %v", name, err)
		}
		if errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
