package pgenvtest_test

import (
	"context"
	"testing"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
)

func TestMain(m *testing.M) { pgenvtest.Main(m) }

func TestSharedServer(t *testing.T) {
	t.Parallel()
	s1 := pgenvtest.MustServer(t)
	s2 := pgenvtest.MustServer(t)
	if s1 != s2 {
		t.Fatal("MustServer returned two servers")
	}
	pool := pgenvtest.MustConnect(t)
	if got := pool.Config().MaxConns; got != 4 {
		t.Errorf("MaxConns = %d, want 4", got)
	}
	var maxConns string
	if err := pool.QueryRow(context.Background(), "SHOW max_connections").Scan(&maxConns); err != nil {
		t.Fatal(err)
	}
	if s1.Kind != "url" && maxConns != "400" {
		t.Errorf("max_connections = %s, want 400", maxConns)
	}
}

func TestConnectInParallel(t *testing.T) {
	t.Parallel()
	for range 3 {
		t.Run("sub", func(t *testing.T) {
			t.Parallel()
			var one int
			if err := pgenvtest.MustConnect(t).QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil || one != 1 {
				t.Fatalf("SELECT 1 = %d, %v", one, err)
			}
		})
	}
}
