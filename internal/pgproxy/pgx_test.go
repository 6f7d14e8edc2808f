package pgproxy

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

var execModes = []pgx.QueryExecMode{
	pgx.QueryExecModeCacheStatement,
	pgx.QueryExecModeCacheDescribe,
	pgx.QueryExecModeDescribeExec,
	pgx.QueryExecModeExec,
	pgx.QueryExecModeSimpleProtocol,
}

// collect runs a query and returns its rows as text, or the error's SQLSTATE.
func collect(ctx context.Context, c *pgx.Conn, sql string, args ...any) []string {
	rows, err := c.Query(ctx, sql, args...)
	if err != nil {
		return []string{"error " + errCode(err)}
	}
	var out []string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return append(out, "error "+err.Error())
		}
		out = append(out, fmt.Sprint(vals...))
	}
	if err := rows.Err(); err != nil {
		out = append(out, "error "+errCode(err))
	}
	return out
}

// The same queries, with an idle gap (a probe) between each, give the same
// results through the proxy as direct, in every exec mode; the probe never
// breaks describe-exec's unnamed statement.
func TestPgxExecModesSameAsDirect(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	ctx := context.Background()
	queries := []struct {
		sql  string
		args []any
	}{
		{"SELECT count(*) FROM items", nil},
		{"SELECT set_config('app.current_tenant', $1, false)", []any{"2"}},
		{"SELECT id, tenant_id, name FROM items ORDER BY id", nil},
		{"SELECT id, tenant_id, name FROM items WHERE id > $1 ORDER BY id", []any{3}},
		{"SELECT $1::int + 1, $2::text", []any{41, "x"}},
		{"SELECT 1/0", nil},
		{"SELECT id, tenant_id FROM items /* tenant='1' */ ORDER BY id", nil},
		{"SELECT current_setting('app.current_tenant')", nil},
	}
	for _, mode := range execModes {
		t.Run(mode.String(), func(t *testing.T) {
			direct := connect(t, f.directURL, mode)
			proxied := connect(t, f.proxyURL, mode)
			pid := proxied.PgConn().PID()
			var appPID uint32
			if err := proxied.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&appPID); err != nil {
				t.Fatal(err)
			}
			if appPID != pid {
				t.Fatalf("pg_backend_pid() = %d through the proxy, BackendKeyData says %d", appPID, pid)
			}
			n := f.waitProbe(t, pid, 0)
			for _, q := range queries {
				want := collect(ctx, direct, q.sql, q.args...)
				got := collect(ctx, proxied, q.sql, q.args...)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s: proxy %q, direct %q", q.sql, got, want)
				}
				n = f.waitProbe(t, pid, n)
			}
			// Back to back: the client's next statement often reaches the
			// proxy while the probe is in flight, and goes right behind it.
			for i := range 200 {
				var got int
				if err := proxied.QueryRow(ctx, "SELECT $1::int * 2", i).Scan(&got); err != nil || got != 2*i {
					t.Fatalf("query %d: %d, %v", i, got, err)
				}
			}
			// The rows the tenant-tagged query got belong to tenant 2 (the
			// setting), so all are foreign to the declared tenant 1.
			r, ok := f.events.result("tenant='1'")
			if !ok {
				t.Fatal("no result for the tagged query")
			}
			if r.Declared != "1" || r.Rows != 3 || !r.TenantColumn || r.ForeignRows != 3 || r.Tenant != "1" {
				t.Errorf("tagged query result = %+v, want 3 rows, 3 foreign to declared tenant 1", r)
			}
			f.events.waitFor(t, 5*time.Second, "setting 2 read by the probe", func(r *recorder) bool {
				s, ok := r.lastSetting(pid)
				return ok && s.Known && !s.Inferred && s.Value == "2"
			})
		})
	}
}
