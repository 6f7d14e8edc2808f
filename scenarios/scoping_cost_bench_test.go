package scenarios_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// BenchmarkScoping times scenarios.ScopedQuery, the function the
// scoping-cost scenario times, for each pattern on one connection of a lab's
// app role, and logs each scoped pattern's time per query over the bare
// query's:
//
//	go test -run '^$' -bench Scoping ./scenarios/
func BenchmarkScoping(b *testing.B) {
	m := mustManager(b)
	lab := sessionstest.MustCreateLab(b, m, "bench")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, lab.Sandbox.AppURL)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	tenants := lab.Sandbox.Tenants
	home := tenants[0]
	if _, err := conn.Exec(ctx, "SELECT set_config('app.current_tenant', $1, false)", home.Setting()); err != nil {
		b.Fatal(err)
	}
	perOp := map[string]time.Duration{}
	for _, p := range scenarios.ScopingPatterns {
		b.Run(p, func(b *testing.B) {
			i := 0
			for b.Loop() {
				t := tenants[i%len(tenants)]
				if p == scenarios.CostBare {
					t = home
				}
				res, err := scenarios.ScopedQuery(ctx, conn, p, t)
				if err != nil {
					b.Fatal(err)
				}
				if !res.Own(t, 3) {
					b.Fatalf("%s for %s: rows of tenants %v", p, t.Name, res.Tenants)
				}
				i++
			}
			perOp[p] = b.Elapsed() / time.Duration(max(b.N, 1))
		})
	}
	bare := perOp[scenarios.CostBare]
	if bare > 0 {
		b.Logf("per query: bare %v, four-trips %v (%.2f×), batch %v (%.2f×)", bare,
			perOp[scenarios.CostFourTrips], float64(perOp[scenarios.CostFourTrips])/float64(bare),
			perOp[scenarios.CostBatch], float64(perOp[scenarios.CostBatch])/float64(bare))
	}
}
