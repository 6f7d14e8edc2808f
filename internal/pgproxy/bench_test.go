package pgproxy

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rlslab/rlslab/internal/bouncer"
	"github.com/rlslab/rlslab/scenarios/engine/measure"
)

// BenchmarkQueryOverhead times one query's round trip, interleaved, on a
// direct connection, through the proxy (probing at every idle point, and
// probing after 5 ms of idleness) and through PgBouncer (transaction mode),
// all in pgx's exec mode (one round trip, no statement cache, which
// PgBouncer 1.18 needs), for a plain SELECT and a parameterised one. b.N is
// the number of timed queries per target and query; it reports the p50
// and p95 of each in µs. Run:
//
//	go test -run '^$' -bench QueryOverhead -benchtime 3000x ./internal/pgproxy/
func BenchmarkQueryOverhead(b *testing.B) {
	f := newFixture(b, nil)
	proxyAddr := serve(b, Config{Lookup: f.srv.cfg.Lookup, Events: NopEvents{}})
	delayedAddr := serve(b, Config{Lookup: f.srv.cfg.Lookup, Events: NopEvents{}, ProbeDelay: time.Millisecond})
	ctx := context.Background()
	via := func(addr string) string {
		return (&fixture{role: f.role, proxyAddr: addr}).url(clientPassword, labDB, "disable")
	}
	targets := map[string]string{"direct": f.directURL, "proxy": via(proxyAddr)}
	targets["proxy-delay1ms"] = via(delayedAddr)
	bc, err := bouncer.ForApp(ctx, bouncer.ModeAuto, f.directURL, 2, false, nil, nil)
	if err != nil {
		b.Logf("no PgBouncer: %v", err)
	} else {
		b.Cleanup(func() { _ = bc.Close() })
		u := bc.URL("postgres", f.role, upPassword(b, f.directURL))
		targets["pgbouncer"] = u
	}
	names := []string{"direct", "proxy", "proxy-delay1ms", "pgbouncer"}
	queries := []struct {
		name string
		sql  string
		args []any
	}{
		{"select", "SELECT 1", nil},
		{"param", "SELECT id, name FROM items WHERE id = $1", []any{int32(4)}},
	}
	conns := map[string]*pgx.Conn{}
	for _, n := range names {
		if u, ok := targets[n]; ok {
			conns[n] = connect(b, u, pgx.QueryExecModeExec)
		}
	}
	b.ResetTimer()
	for _, q := range queries {
		var ts []measure.Target
		for _, n := range names {
			c := conns[n]
			if c == nil {
				continue
			}
			ts = append(ts, measure.Target{Name: n, Run: func(ctx context.Context, i int) error {
				rows, err := c.Query(ctx, q.sql, q.args...)
				if err != nil {
					return err
				}
				rows.Close()
				return rows.Err()
			}})
		}
		samples, err := measure.Interleave(ctx, ts, measure.Plan{Iterations: b.N, Warmup: min(b.N, 200), Turn: 10})
		if err != nil {
			b.Fatal(err)
		}
		for _, n := range names {
			s, ok := samples[n]
			if !ok {
				continue
			}
			p50, p95 := measure.Percentile(s, 50), measure.Percentile(s, 95)
			b.ReportMetric(measure.US(p50), fmt.Sprintf("%s-%s-p50-µs", q.name, n))
			b.ReportMetric(measure.US(p95), fmt.Sprintf("%s-%s-p95-µs", q.name, n))
		}
	}
}

// upPassword is the password in a URL.
func upPassword(tb testing.TB, u string) string {
	cfg, err := pgx.ParseConfig(u)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg.Password
}
