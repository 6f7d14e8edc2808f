// Package pgenvtest gives a package's tests one shared PostgreSQL, found or
// started on first use.
//
// The test binaries of one go test run share one server (see shared.go:
// the first binary that needs it starts a keeper, which stops the server
// after the last one), and with DATABASE_URL set (for example by pgshared)
// they share that one. Either way every test binary gets a database of its
// own on it, dropped when its tests are done: rlslab's own tables of one
// package never meet another's, and each lab has its own database and
// roles. RLSLAB_PGENVTEST_SHARED=0 gives each binary a server of its own.
package pgenvtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rlslab/rlslab/internal/pgenv"
)

// startTimeout bounds the start of the shared server (Docker may pull an image).
const startTimeout = 3 * time.Minute

var (
	mu        sync.Mutex
	server    *pgenv.Server
	serverErr error
	ownDB     string   // the database made for this test binary on a server given by URL
	baseURL   string   // that server's URL, to drop ownDB
	users     *os.File // held (flock'd shared) while this binary uses the run's shared server
)

// Main runs the package's tests with one shared PostgreSQL started lazily on
// first use, closed after m.Run and after the funcs in after (which close
// what else the package's tests shared, a browser say).
// Use: func TestMain(m *testing.M) { pgenvtest.Main(m) }
func Main(m *testing.M, after ...func()) {
	if dir := os.Getenv(keeperEnv); dir != "" {
		os.Exit(keep(dir)) // this process is the keeper of a shared server, not a test run
	}
	code := m.Run()
	for _, f := range after {
		f()
	}
	mu.Lock()
	if ownDB != "" {
		if err := dropDB(baseURL, ownDB); err != nil {
			os.Stderr.WriteString("pgenvtest: dropping database " + ownDB + ": " + err.Error() + "\n")
		}
	}
	if users != nil {
		users.Close() // the keeper may stop the server
		users = nil
	}
	if server != nil {
		if err := server.Close(); err != nil {
			os.Stderr.WriteString("pgenvtest: closing PostgreSQL: " + err.Error() + "\n")
		}
		server = nil
	}
	mu.Unlock()
	os.Exit(code)
}

// MustServer returns the shared server, starting it on the first call: the
// go test run's shared server (max_connections 800), else DATABASE_URL's,
// else one of this binary's own (max_connections 400); it calls tb.Fatal
// on error, and a failed start is not retried. Without Main, nothing
// closes a server of the binary's own before the test binary exits.
func MustServer(tb testing.TB) *pgenv.Server {
	tb.Helper()
	mu.Lock()
	defer mu.Unlock()
	if server == nil && serverErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		server, serverErr = start(ctx)
	}
	if serverErr != nil {
		tb.Fatal("pgenvtest: no PostgreSQL for the tests: ", serverErr)
	}
	return server
}

// start finds or starts the server for this binary's tests and makes the
// binary's own database on it when it is shared.
func start(ctx context.Context) (*pgenv.Server, error) {
	if os.Getenv("DATABASE_URL") == "" && os.Getenv(sharedEnv) != "0" {
		url, u, err := sharedServer(ctx)
		if err == nil {
			var s *pgenv.Server
			if s, err = pgenv.Start(ctx, pgenv.Options{DB: url}); err == nil {
				if s, err = ownDatabase(ctx, s); err == nil {
					users = u
					return s, nil
				}
			}
			u.Close()
		}
		os.Stderr.WriteString("pgenvtest: no shared PostgreSQL (" + err.Error() + "); starting one of this binary's own\n")
	}
	s, err := pgenv.Start(ctx, pgenv.Options{
		DB:             "auto",
		Getenv:         os.Getenv,
		MaxConnections: 400,
	})
	if err == nil && s.Kind == "url" {
		return ownDatabase(ctx, s)
	}
	return s, err
}

// MustConnect returns a *pgxpool.Pool (MaxConns 4) on the shared server's
// URL, closed by tb.Cleanup; it calls tb.Fatal on error.
func MustConnect(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	s := MustServer(tb)
	cfg, err := pgxpool.ParseConfig(s.URL)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.MaxConns = 4
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	if err := pool.Ping(ctx); err != nil {
		tb.Fatal(err)
	}
	return pool
}

// MustStockServer starts a PostgreSQL of its own with the stock
// max_connections = 100 (local binaries or Docker, never DATABASE_URL) and
// closes it when the test ends; it calls tb.Fatal on error.
func MustStockServer(tb testing.TB) *pgenv.Server {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	s, err := pgenv.Start(ctx, pgenv.Options{DB: "auto", MaxConnections: 100})
	if err != nil {
		tb.Fatal("pgenvtest: no PostgreSQL with max_connections = 100: ", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// ownDatabase creates a database for this test binary on the server s
// (given by URL, shared with other test binaries) and returns s pointing
// there. A URL that is not of the postgres:// form is used as it is.
func ownDatabase(ctx context.Context, s *pgenv.Server) (*pgenv.Server, error) {
	u, err := url.Parse(s.URL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return s, nil
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "pgenvtest_" + binaryName() + "_" + hex.EncodeToString(b)
	conn, err := pgx.Connect(ctx, s.URL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, err
	}
	ownDB, baseURL = name, s.URL
	withDB := func(raw string) string {
		v, err := url.Parse(raw)
		if err != nil {
			return raw
		}
		v.Path = "/" + name
		return v.String()
	}
	return &pgenv.Server{URL: withDB(s.URL), TCPURL: withDB(s.TCPURL), Kind: s.Kind}, nil
}

// binaryName is the test binary's package name, as a database name may
// hold it ("sessions" for sessions.test).
func binaryName() string {
	n := strings.TrimSuffix(filepath.Base(os.Args[0]), ".test")
	n = regexp.MustCompile(`[^a-z0-9_]+`).ReplaceAllString(strings.ToLower(n), "_")
	return n[:min(len(n), 30)]
}

// dropDB drops database name on the server at u.
func dropDB(u, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	return err
}
