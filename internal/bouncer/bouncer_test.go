package bouncer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/testcontainers/testcontainers-go"

	console "github.com/rlslab/rlslab/internal/bouncer/admin"
	"github.com/rlslab/rlslab/internal/docker"
	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
)

// testPassword is the login role's password, upstream and in the auth_file;
// the quotes check the auth_file escaping.
const testPassword = `app"pw'1`

func TestMain(m *testing.M) { pgenvtest.Main(m) }

// fixture is a database and a plain login role on the shared test server,
// unique per test (the server may be a shared DATABASE_URL), dropped at the
// end of the test.
type fixture struct {
	upstream Upstream
	db, user string
}

func newFixture(t testing.TB) fixture {
	t.Helper()
	srv := pgenvtest.MustServer(t)
	up, err := UpstreamFromURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	name := "bouncer_" + randomPassword()[:8]
	f := fixture{upstream: up, db: name, user: name}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	pw := strings.ReplaceAll(testPassword, "'", "''")
	for _, q := range []string{
		"CREATE ROLE " + f.user + " LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '" + pw + "'",
		"CREATE DATABASE " + f.db,
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			admin.Close(ctx)
			t.Fatalf("%s: %v", q, err)
		}
	}
	admin.Close(ctx)
	// Registered first, so it runs after the bouncers and clients are closed.
	t.Cleanup(func() {
		admin, err := pgx.Connect(ctx, srv.URL)
		if err != nil {
			t.Error(err)
			return
		}
		defer admin.Close(ctx)
		for _, q := range []string{"DROP DATABASE IF EXISTS " + f.db + " WITH (FORCE)", "DROP ROLE IF EXISTS " + f.user} {
			if _, err := admin.Exec(ctx, q); err != nil {
				t.Errorf("%s: %v", q, err)
			}
		}
	})
	return f
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (f fixture) options(t testing.TB, poolSize int, resetAlways bool) Options {
	return Options{
		Mode:             ModeLocal,
		Upstream:         f.upstream,
		Databases:        []string{f.db},
		Users:            map[string]string{f.user: testPassword},
		PoolSize:         poolSize,
		ResetQueryAlways: resetAlways,
		Logger:           testLogger(t),
	}
}

func mustStart(t testing.TB, opts Options) *Bouncer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b
}

// connect opens a client connection through b in exec mode (PgBouncer 1.18
// in transaction mode does not support pgx's cached prepared statements).
func connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func adminConn(t testing.TB, b *Bouncer) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, b.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestAdminConsole(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	b := mustStart(t, f.options(t, 2, false))
	if b.Kind() != KindLocal || b.PID() <= 0 || b.Version() == "" {
		t.Fatalf("kind %q pid %d version %q", b.Kind(), b.PID(), b.Version())
	}
	t.Logf("PgBouncer %s, pid %d, %s", b.Version(), b.PID(), b.Dir())

	client := connect(t, b.URL(f.db, f.user, testPassword))
	var pid int
	if err := client.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	admin := adminConn(t, b)

	pools, err := console.ShowPools(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, p := range pools {
		if p.Database == f.db && p.User == f.user {
			found = true
			if p.PoolMode != "transaction" || p.ClActive != 1 || p.SvIdle+p.SvUsed != 1 || p.SvActive != 0 {
				t.Errorf("pool: %+v", p)
			}
		}
	}
	if !found {
		t.Fatalf("no pool for %s/%s in %+v", f.db, f.user, pools)
	}

	servers, err := console.ShowServers(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 1 || servers[0].RemotePID != pid || servers[0].Database != f.db || servers[0].User != f.user {
		t.Fatalf("servers %+v, want one with remote_pid %d", servers, pid)
	}
	if servers[0].ConnectTime.IsZero() || servers[0].Ptr == "" {
		t.Errorf("server connect_time/ptr not read: %+v", servers[0])
	}

	// In a transaction the client holds the server: link pairs them.
	tx, err := client.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var txPID int
	if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&txPID); err != nil {
		t.Fatal(err)
	}
	clients, err := console.ShowClients(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	servers, err = console.ShowServers(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	var ours *console.Client
	for i, c := range clients {
		if c.Database == f.db && c.User == f.user {
			ours = &clients[i]
		}
	}
	if ours == nil || ours.State != "active" || ours.Link == "" {
		t.Fatalf("client in a transaction: %+v (all: %+v)", ours, clients)
	}
	var linked *console.Server
	for i, s := range servers {
		if s.Ptr == ours.Link {
			linked = &servers[i]
		}
	}
	if linked == nil || linked.Link != ours.Ptr || linked.RemotePID != txPID || linked.State != "active" {
		t.Fatalf("server linked to client %s: %+v (all: %+v)", ours.Ptr, linked, servers)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	cfg, err := console.ShowConfig(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	if cfg["pool_mode"] != "transaction" || cfg["default_pool_size"] != "2" || cfg["server_reset_query_always"] != "0" {
		t.Errorf("config: pool_mode %q default_pool_size %q server_reset_query_always %q",
			cfg["pool_mode"], cfg["default_pool_size"], cfg["server_reset_query_always"])
	}
}

// TestTransactionModeLeak shows the fact the pgbouncer-tx lesson rests on: a
// session-level setting made by one client is seen by another client that
// gets the same server connection, unless server_reset_query_always is on.
func TestTransactionModeLeak(t *testing.T) {
	t.Parallel()
	for _, reset := range []bool{false, true} {
		t.Run(fmt.Sprintf("reset_always=%v", reset), func(t *testing.T) {
			f := newFixture(t)
			ctx := t.Context()
			b := mustStart(t, f.options(t, 1, reset))
			url := b.URL(f.db, f.user, testPassword)
			c1 := connect(t, url)
			c2 := connect(t, url)

			var pid1 int
			var set string
			if err := c1.QueryRow(ctx, "SELECT set_config('app.current_tenant', '7', false), pg_backend_pid()").Scan(&set, &pid1); err != nil {
				t.Fatal(err)
			}
			var seen *string
			var pid2 int
			if err := c2.QueryRow(ctx, "SELECT current_setting('app.current_tenant', true), pg_backend_pid()").Scan(&seen, &pid2); err != nil {
				t.Fatal(err)
			}
			if pid1 != pid2 {
				t.Fatalf("pool of 1 but two backends: %d, %d", pid1, pid2)
			}
			got := "NULL"
			if seen != nil {
				got = fmt.Sprintf("%q", *seen)
			}
			t.Logf("client 2 on backend %d sees app.current_tenant = %s", pid2, got)
			if !reset && got != `"7"` {
				t.Fatalf("without reset: client 2 saw %s, want the leaked \"7\"", got)
			}
			if reset && got != "NULL" && got != `""` {
				t.Fatalf("with server_reset_query_always: client 2 saw %s, want NULL or \"\"", got)
			}
		})
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	b, err := Start(t.Context(), f.options(t, 1, false))
	if err != nil {
		t.Fatal(err)
	}
	pid, dir := b.PID(), b.Dir()
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill(%d, 0) after Close = %v, want ESRCH", pid, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("temp dir %s after Close: %v", dir, err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestURLMode(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	local := mustStart(t, f.options(t, 1, false))
	opts := f.options(t, 1, false)
	opts.Mode = local.AdminURL() + "&connect_timeout=5"
	b := mustStart(t, opts)
	if u := b.URL("db", "u", "p"); !strings.Contains(u, "connect_timeout=5") || strings.Contains(u, "default_query_exec_mode") {
		t.Errorf("URL %q: want the given URL's parameters without default_query_exec_mode", u)
	}
	if b.Kind() != KindURL || b.PID() != 0 || b.Version() != local.Version() {
		t.Fatalf("kind %q pid %d version %q", b.Kind(), b.PID(), b.Version())
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(local.PID(), 0); err != nil {
		t.Fatalf("closing a URL bouncer stopped the real one: %v", err)
	}
	client := connect(t, b.URL(f.db, f.user, testPassword))
	if _, err := client.Exec(t.Context(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
}

func TestBadOptions(t *testing.T) {
	t.Parallel()
	f := fixture{upstream: Upstream{Host: "/nonexistent", Port: 5432}, db: "x", user: "x"}
	ctx := t.Context()
	for name, tc := range map[string]struct {
		mutate func(*Options)
		want   string
	}{
		"unreachable URL": {func(o *Options) { o.Mode = "postgres://admin:secret@127.0.0.1:1/pgbouncer" }, "PgBouncer at postgres://admin:xxxxx@127.0.0.1:1/pgbouncer"},
		"unparsable URL":  {func(o *Options) { o.Mode = "postgres://a:b@host:notaport/x" }, "bad PgBouncer URL"},
		"unknown mode":    {func(o *Options) { o.Mode = "pgbouncer" }, "unknown mode"},
		"pool size 0":     {func(o *Options) { o.PoolSize = 0 }, "pool size 0 out of range 1..20"},
		"pool size 21":    {func(o *Options) { o.PoolSize = 21 }, "pool size 21 out of range 1..20"},
		"no users":        {func(o *Options) { o.Users = nil }, "no users"},
		"bad database":    {func(o *Options) { o.Databases = []string{"x\ny"} }, "not allowed"},
	} {
		t.Run(name, func(t *testing.T) {
			opts := f.options(t, 1, false)
			tc.mutate(&opts)
			b, err := Start(ctx, opts)
			if err == nil {
				b.Close()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

func TestStartFailureShowsLog(t *testing.T) {
	f := fixture{upstream: Upstream{Host: "/nonexistent", Port: 5432}, db: "x", user: "x"}
	opts := f.options(t, 1, false)
	// A stand-in binary that fails the way a broken PgBouncer does. Its
	// directory must be readable by the unprivileged user it runs as.
	dir, err := os.MkdirTemp("", "rlslab-fake-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fake := dir + "/pgbouncer"
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho 'FATAL cannot start: testing' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	_, err = Start(t.Context(), opts)
	if err == nil || !strings.Contains(err.Error(), "FATAL cannot start: testing") {
		t.Fatalf("error %v, want the log tail", err)
	}
}

func TestNoWayAvailable(t *testing.T) {
	if (docker.Containers{}).Healthy(t.Context()) == nil {
		t.Skip("Docker is available")
	}
	saved := binaryCandidates
	t.Cleanup(func() { binaryCandidates = saved })
	binaryCandidates = nil
	t.Setenv("PATH", t.TempDir())
	f := fixture{upstream: Upstream{Host: "/nonexistent", Port: 5432}, db: "x", user: "x"}
	opts := f.options(t, 1, false)
	opts.Mode = ModeAuto
	opts.Containers = docker.Containers{}
	_, err := Start(t.Context(), opts)
	if !errors.Is(err, ErrNoPgBouncer) {
		t.Fatalf("error %v, want ErrNoPgBouncer", err)
	}
	for _, want := range []string{"apt-get install pgbouncer", "Docker", "-pgbouncer postgres://"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestDocker(t *testing.T) {
	t.Parallel()
	testcontainers.SkipIfProviderIsNotHealthy(t)
	f := newFixture(t)
	opts := f.options(t, 1, false)
	opts.Mode = ModeDocker
	opts.Containers = docker.Containers{}
	up, err := UpstreamFromURL(pgenvtest.MustServer(t).TCPURL)
	if err != nil {
		t.Fatal(err)
	}
	opts.Upstream = up
	b := mustStart(t, opts)
	if b.Kind() != KindDocker || b.PID() != 0 {
		t.Fatalf("kind %q pid %d", b.Kind(), b.PID())
	}
	client := connect(t, b.URL(f.db, f.user, testPassword))
	if _, err := client.Exec(t.Context(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
}

func TestAuthFileQuoting(t *testing.T) {
	t.Parallel()
	got := authFile(map[string]string{"b": `p"q`, "a": "x"}, "adm", "pw")
	want := "\"adm\" \"pw\"\n\"a\" \"x\"\n\"b\" \"p\"\"q\"\n"
	if got != want {
		t.Fatalf("authFile:\n%s\nwant:\n%s", got, want)
	}
}

// TestStartupParameters pins how pgx's startup parameters meet PgBouncer:
// pgx v5 sends only user, database and the URL's run-time parameters.
// PgBouncer tracks a few (application_name, TimeZone, ...), ignores those in
// ignore_startup_parameters, and refuses the rest at connect time.
//
// The bouncer here exposes every database through the "*" fallback entry.
func TestStartupParameters(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	opts := f.options(t, 1, false)
	opts.Databases = nil
	b := mustStart(t, opts)
	url := b.URL(f.db, f.user, testPassword)

	for _, p := range []string{"search_path=public", "options=-c%20work_mem%3D8MB"} {
		c, err := pgx.Connect(ctx, url+"&"+p)
		if err == nil {
			c.Close(ctx)
			t.Fatalf("%s: connected, want unsupported startup parameter", p)
		}
		if !strings.Contains(err.Error(), "unsupported startup parameter") {
			t.Fatalf("%s: %v", p, err)
		}
	}
	c := connect(t, url+"&application_name=lab7&extra_float_digits=3")
	var app string
	if err := c.QueryRow(ctx, "SELECT current_setting('application_name')").Scan(&app); err != nil {
		t.Fatal(err)
	}
	clients, err := console.ShowClients(ctx, adminConn(t, b))
	if err != nil {
		t.Fatal(err)
	}
	var seen bool
	for _, cl := range clients {
		seen = seen || cl.ApplicationName == "lab7"
	}
	if app != "lab7" || !seen {
		t.Fatalf("application_name %q on the server, clients %+v", app, clients)
	}
}

func TestUpstreamFromURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]Upstream{
		"postgres://postgres@/postgres?host=/tmp/pg&port=5433": {Host: "/tmp/pg", Port: 5433},
		"postgres://u:p@127.0.0.1:6000/db?sslmode=disable":     {Host: "127.0.0.1", Port: 6000},
	} {
		got, err := UpstreamFromURL(in)
		if err != nil || got != want {
			t.Errorf("UpstreamFromURL(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	if _, err := UpstreamFromURL("postgres://h:notaport/x"); err == nil {
		t.Error("bad URL accepted")
	}
}
