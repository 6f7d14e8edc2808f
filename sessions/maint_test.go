package sessions

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
)

// TestMaintenanceCommitsWaitForTheDisk checks that a maintenance
// connection (which makes and reseeds labs) commits synchronously although
// the admin pool it copies does not: after a crash of a lab's server, a lab
// that rlslab had called ready once lacked its tables (42P01), its
// database kept and the asynchronously committed schema lost.
func TestMaintenanceCommitsWaitForTheDisk(t *testing.T) {
	t.Parallel()
	pool := mustOpenAdmin(t)
	var admin string
	if err := pool.QueryRow(t.Context(), "SHOW synchronous_commit").Scan(&admin); err != nil {
		t.Fatal(err)
	}
	if admin != "off" {
		t.Fatalf("the admin pool's synchronous_commit = %q; this test expects it off", admin)
	}
	s := &labServer{admin: pool, maintSem: make(chan struct{}, 1)}
	var got string
	err := s.maint(t.Context(), "", func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, "SHOW synchronous_commit").Scan(&got)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got != "on" {
		t.Errorf("a maintenance connection's synchronous_commit = %q, want on", got)
	}
}

// mustOpenAdmin opens an admin pool (as rlslab opens it) on the test
// server, closed when the test ends.
func mustOpenAdmin(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := OpenAdmin(t.Context(), pgenvtest.MustServer(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}
