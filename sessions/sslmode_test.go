package sessions

import (
	"net/url"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// TestAppURLKeepsTheAdminsTLSChoice checks that a lab's app URL connects the
// way the admin URL does: a server without TLS must stay reachable when the
// admin URL says nothing about TLS (pgx's default "prefer").
func TestAppURLKeepsTheAdminsTLSChoice(t *testing.T) {
	for admin, want := range map[string]string{
		"postgres://u:p@127.0.0.1:5432/postgres":                     "prefer",
		"postgres://u:p@127.0.0.1:5432/postgres?sslmode=prefer":      "prefer",
		"postgres://u:p@127.0.0.1:5432/postgres?sslmode=disable":     "disable",
		"postgres://u:p@127.0.0.1:5432/postgres?sslmode=require":     "require",
		"postgres://u:p@127.0.0.1:5432/postgres?sslmode=verify-ca":   "require",
		"host=/tmp port=5432 user=u dbname=postgres sslmode=disable": "disable",
	} {
		cfg, err := pgxpool.ParseConfig(admin)
		if err != nil {
			t.Fatal(err)
		}
		pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(appURL(pool, "ab12cd34", "pw"))
		pool.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := u.Query().Get("sslmode"); got != want {
			t.Errorf("admin %q: app URL sslmode=%q, want %q", admin, got, want)
		}
	}
}
