// Package pgenvtest gives a package's tests one shared PostgreSQL, found or
// started by pgenv on first use and closed when the tests are done.
package pgenvtest

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rlslab/rlslab/internal/pgenv"
)

// startTimeout bounds the start of the shared server (Docker may pull an image).
const startTimeout = 3 * time.Minute

var (
	mu        sync.Mutex
	server    *pgenv.Server
	serverErr error
)

// Main runs the package's tests with one shared PostgreSQL started lazily on
// first use, closed after m.Run. Use: func TestMain(m *testing.M) { pgenvtest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	mu.Lock()
	if server != nil {
		if err := server.Close(); err != nil {
			os.Stderr.WriteString("pgenvtest: closing PostgreSQL: " + err.Error() + "\n")
		}
		server = nil
	}
	mu.Unlock()
	os.Exit(code)
}

// MustServer returns the shared server, starting it on the first call (DB
// "auto" with os.Getenv, MaxConnections 400); it calls tb.Fatal on error, and
// a failed start is not retried. Without Main, nothing closes the server
// before the test binary exits.
func MustServer(tb testing.TB) *pgenv.Server {
	tb.Helper()
	mu.Lock()
	defer mu.Unlock()
	if server == nil && serverErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		server, serverErr = pgenv.Start(ctx, pgenv.Options{
			DB:             "auto",
			Getenv:         os.Getenv,
			MaxConnections: 400,
		})
	}
	if serverErr != nil {
		tb.Fatal("pgenvtest: no PostgreSQL for the tests: ", serverErr)
	}
	return server
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
