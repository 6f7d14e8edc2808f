package scenarios

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/scenarios/engine/measure"
)

// ScopingCostMeasure is the one variant of scoping-cost (a stable name:
// tools and lessons rely on it).
const ScopingCostMeasure = "measure"

// The patterns scoping-cost measures (also the keys of its timings).
const (
	CostBare      = "bare"       // the query alone, on a connection scoped beforehand
	CostFourTrips = "four-trips" // BEGIN; set_config(..., true); query; COMMIT: four round trips
	CostBatch     = "batch"      // set_config(..., true) and the query in one pgx.Batch: one round trip
)

// ScopingPatterns lists the measured patterns in display order.
var ScopingPatterns = []string{CostBare, CostFourTrips, CostBatch}

// Bounds of scoping-cost.
const (
	scopingChunk  = 100 // iterations per frame and per chart point
	scopingWarmup = 20  // untimed iterations of each pattern first (statement cache, first plans)
)

// ScopedResult is what ObserveQuery returned to one scoped query.
type ScopedResult struct {
	PID     uint32
	Seen    *string // the tenant setting as the query ran
	Role    string
	Tenants []int32 // tenant_id of every row RLS let through
}

// Own reports whether the rows are exactly want rows, all of tenant t.
func (r ScopedResult) Own(t engine.Tenant, want int) bool {
	if len(r.Tenants) != want {
		return false
	}
	for _, id := range r.Tenants {
		if int(id) != t.ID {
			return false
		}
	}
	return true
}

// ScopedQuery runs ObserveQuery on conn the way pattern says, for tenant t.
// CostBare sends the query alone (the connection must already be scoped:
// t is not used); CostFourTrips runs BEGIN, set_config(..., true), the query
// and COMMIT as four round trips; CostBatch queues set_config(..., true) and
// the query in one pgx.Batch. The scenario and BenchmarkScoping time this
// function.
func ScopedQuery(ctx context.Context, conn *pgx.Conn, pattern string, t engine.Tenant) (ScopedResult, error) {
	var res ScopedResult
	err := scoped(ctx, conn, pattern, t, func(q engine.Querier) error {
		var pid int32
		err := q.QueryRow(ctx, engine.ObserveQuery).Scan(&pid, &res.Seen, &res.Role, &res.Tenants)
		res.PID = uint32(pid)
		return err
	})
	return res, err
}

// scoped scopes conn to t the way pattern says and has observe run
// ObserveQuery inside that scope.
func scoped(ctx context.Context, conn *pgx.Conn, pattern string, t engine.Tenant, observe func(engine.Querier) error) error {
	switch pattern {
	case CostBare:
		return observe(conn)
	case CostFourTrips:
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, engine.SetLocalSQL, t.Setting()); err != nil {
				return err
			}
			return observe(tx)
		})
	case CostBatch:
		b := &pgx.Batch{}
		b.Queue(engine.SetLocalSQL, t.Setting())
		b.Queue(engine.ObserveQuery)
		res := conn.SendBatch(ctx, b)
		_, err := res.Exec()
		if err == nil {
			err = observe(engine.BatchRow{Results: res})
		}
		if cerr := res.Close(); err == nil {
			err = cerr
		}
		return err
	}
	return fmt.Errorf("no scoping pattern %q", pattern)
}

// ScopingCost returns the scoping-cost scenario: the per-request cost of
// scoping a query to a tenant, measured live against the bare query.
func ScopingCost() *engine.Scenario {
	return &engine.Scenario{
		ID:      "scoping-cost",
		Pacing:  engine.PacingLive,
		LiveWhy: "it measures each scoping pattern's latency",
		Title:   "What scoping every request costs",
		Variants: []engine.Variant{{Name: ScopingCostMeasure, Run: runScopingCost, Conns: engine.Fixed(1),
			Summary: "Time the bare query, BEGIN/set_config/query/COMMIT as four round trips, and the same in one pgx.Batch, interleaved on one connection."}},
		Params:     []engine.Param{{Name: "iterations", Summary: "timed iterations of each pattern", Min: 100, Max: 5000, Default: 2000}},
		MinTenants: 3,
	}
}

func runScopingCost(ctx context.Context, env *engine.Env) (err error) {
	tenants := env.Sandbox.Tenants
	iterations := env.Params.Get("iterations")
	home := tenants[0] // the session tenant the bare query runs under
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 1, MinConns: 1})
	if err != nil {
		return err
	}
	first := pool.NewRequest(home, CostBare)
	c, err := pool.AcquireFor(ctx, first.Seq)
	if err != nil {
		first.Fail(err)
		return err
	}
	pid := c.Conn().PgConn().PID()
	scopedOnce := false
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), engine.IdentifyTimeout)
		defer cancel()
		if scopedOnce {
			if _, rerr := c.Exec(cctx, "RESET app.current_tenant"); rerr != nil && err == nil {
				err = rerr
			}
		}
		pool.ReleaseAndWait(cctx, c)
		env.Refresh(nil)
	}()
	if _, err := c.Exec(ctx, engine.SetSessionSQL, home.Setting()); err != nil {
		first.Fail(err)
		return err
	}
	scopedOnce = true
	if err := env.Step(ctx, fmt.Sprintf("One pool of 1 connection: backend %d. It is scoped once to %s with a session-level set_config for the whole measurement, so the bare query needs no scoping of its own; it is reset at the end.",
		pid, home.Name)); err != nil {
		return err
	}

	// One sample request per pattern, shown in the request log under the
	// name the timings and charts use.
	for i, s := range []struct {
		pattern string
		t       engine.Tenant
	}{{CostBare, home}, {CostFourTrips, tenants[1]}, {CostBatch, tenants[2]}} {
		r := first
		if i > 0 {
			r = pool.NewRequest(s.t, s.pattern)
		}
		r.Use(c)
		if err := scoped(ctx, c.Conn(), s.pattern, s.t, func(q engine.Querier) error { return r.Observe(ctx, q) }); err != nil {
			r.Fail(err)
			return err
		}
		r.SetPhase("queried")
		r.Use(nil)
		if err := env.Step(ctx, fmt.Sprintf("Sample, %s: %s", s.pattern, r.Verdict())); err != nil {
			return err
		}
	}

	wrong := 0
	var targets []measure.Target
	for _, p := range ScopingPatterns {
		targets = append(targets, measure.Target{Name: p, Run: func(ctx context.Context, i int) error {
			t, want := tenants[i%len(tenants)], tenants[i%len(tenants)]
			if p == CostBare {
				want = home
			}
			res, err := ScopedQuery(ctx, c.Conn(), p, t)
			if err == nil && i >= scopingWarmup && !res.Own(want, 3) {
				wrong++
			}
			return err
		}})
	}
	tr := env.Tracker()
	var ratios map[string]float64
	samples, err := measure.Interleave(ctx, targets, measure.Plan{Iterations: iterations, Warmup: scopingWarmup, Every: scopingChunk,
		Progress: func(done int, s measure.Samples) error {
			from := (done - 1) / scopingChunk * scopingChunk
			meds := map[string]float64{}
			for _, p := range ScopingPatterns {
				meds[p] = measure.US(measure.Percentile(s[p][from:done], 50))
				tr.AddPoint("Median per 100 iterations", "iteration", "µs", p, float64(done), meds[p])
			}
			ratios = recordScopingTimings(tr, s)
			for _, p := range ScopingPatterns[1:] {
				tr.AddPoint("Median over the bare query's (all iterations so far)", "iteration", "×", p, float64(done), ratios[p])
			}
			return env.Step(ctx, fmt.Sprintf("Iterations %d–%d of %d: medians bare %.0f µs, four trips %.0f µs, batch %.0f µs. So far four trips cost %.2f× the bare query, the batch %.2f×.",
				from+1, done, iterations, meds[CostBare], meds[CostFourTrips], meds[CostBatch], ratios[CostFourTrips], ratios[CostBatch]))
		}})
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, p := range ScopingPatterns {
		sum := measure.Summarize(samples[p])
		tr.SetMetric(p+" median", fmt.Sprintf("%.0f µs (p99 %.0f µs)", measure.US(sum.Median), measure.US(sum.P99)), measure.US(sum.Median))
		if p != CostBare {
			fmt.Fprintf(&b, " %s %.0f µs = %.2f× the bare query;", p, measure.US(sum.Median), ratios[p])
		}
	}
	tr.SetMetric("wrong results", fmt.Sprint(wrong), float64(wrong))
	tr.Note(fmt.Sprintf("Medians over %d interleaved iterations of each pattern on backend %d: bare %.0f µs;%s",
		iterations, pid, measure.US(measure.Percentile(samples[CostBare], 50)), strings.TrimSuffix(b.String(), ";")+"."))
	if wrong == 0 {
		tr.Note(fmt.Sprintf("All %d timed queries returned exactly their tenant's 3 invoices.", iterations*len(ScopingPatterns)))
	} else {
		tr.Note(fmt.Sprintf("%d timed queries did not return exactly their tenant's 3 invoices.", wrong))
	}
	tr.Measured(fmt.Sprintf("Scoping costs %.2f× the bare query as four round trips and %.2f× as one batch (medians of %d interleaved iterations, measured on this server just now).", ratios[CostFourTrips], ratios[CostBatch], iterations), true)
	return env.Conclude(ctx, "")
}

// recordScopingTimings sets each pattern's timing and the ratios of the
// scoped patterns' medians over the bare query's, and returns the ratios.
func recordScopingTimings(tr *engine.Tracker, s measure.Samples) map[string]float64 {
	ratios := map[string]float64{}
	bare := measure.Summarize(s[CostBare])
	for _, p := range ScopingPatterns {
		sum := measure.Summarize(s[p])
		tr.SetTiming(p, sum.Timing())
		if p != CostBare && bare.Median > 0 {
			ratios[p] = float64(sum.Median) / float64(bare.Median)
			tr.SetRatio(p, ratios[p])
		}
	}
	return ratios
}
