package scenarios

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rlslab/rlslab/scenarios/engine"
)

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
	var pid int32
	scan := func(row pgx.Row) error {
		err := row.Scan(&pid, &res.Seen, &res.Role, &res.Tenants)
		res.PID = uint32(pid)
		return err
	}
	switch pattern {
	case CostBare:
		return res, scan(conn.QueryRow(ctx, engine.ObserveQuery))
	case CostFourTrips:
		tx, err := conn.Begin(ctx)
		if err != nil {
			return res, err
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, engine.SetLocalSQL, t.Setting()); err != nil {
			return res, err
		}
		if err := scan(tx.QueryRow(ctx, engine.ObserveQuery)); err != nil {
			return res, err
		}
		return res, tx.Commit(ctx)
	case CostBatch:
		b := &pgx.Batch{}
		b.Queue(engine.SetLocalSQL, t.Setting())
		b.Queue(engine.ObserveQuery)
		br := conn.SendBatch(ctx, b)
		_, err := br.Exec()
		if err == nil {
			err = scan(br.QueryRow())
		}
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		return res, err
	}
	return res, fmt.Errorf("no scoping pattern %q", pattern)
}

// ScopingCost returns the scoping-cost scenario: the per-request cost of
// scoping a query to a tenant, measured live against the bare query.
func ScopingCost() *engine.Scenario {
	return &engine.Scenario{
		ID:    "scoping-cost",
		Title: "What scoping every request costs",
		Variants: withRun(runScopingCost, []engine.Variant{
			{Name: "measure", Summary: "Time the bare query, BEGIN/set_config/query/COMMIT as four round trips, and the same in one pgx.Batch, interleaved on one connection."},
		}),
		Params: []engine.Param{{Name: "iterations", Summary: "timed iterations of each pattern", Min: 100, Max: 5000, Default: 2000}},
	}
}

func runScopingCost(ctx context.Context, env *engine.Env, variant string) (err error) {
	if variant != "measure" {
		return fmt.Errorf("scoping-cost has no variant %q", variant)
	}
	tenants := env.Sandbox.Tenants
	if len(tenants) < 3 {
		return errors.New("scoping-cost needs three tenants in the sandbox")
	}
	iterations := env.Params.Get("iterations")
	if iterations <= 0 {
		iterations = 2000
	}
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
	slot := pool.Slot(c.Conn())
	pid := c.Conn().PgConn().PID()
	scoped := false
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), engine.IdentifyTimeout)
		defer cancel()
		if scoped {
			if _, rerr := c.Exec(cctx, "RESET app.current_tenant"); rerr != nil && err == nil {
				err = rerr
			}
		}
		c.Release()
		pool.WaitReleased(cctx, slot)
		env.Refresh(nil)
	}()
	if _, err := c.Exec(ctx, engine.SetSessionSQL, home.Setting()); err != nil {
		first.Fail(err)
		return err
	}
	scoped = true
	if err := env.Step(ctx, fmt.Sprintf("One pool of 1 connection: backend %d. It is scoped once to %s with a session-level set_config for the whole measurement, so the bare query needs no scoping of its own; it is reset at the end.",
		pid, home.Name)); err != nil {
		return err
	}

	// One sample request per pattern, shown in the request log.
	samples := []struct {
		pattern, row string
		t            engine.Tenant
	}{{CostBare, CostBare, home}, {CostFourTrips, engine.PatternTxLocal, tenants[1]}, {CostBatch, engine.PatternBatchLocal, tenants[2]}}
	for i, s := range samples {
		r := first
		if i > 0 {
			r = pool.NewRequest(s.t, s.row)
		}
		r.Use(c)
		if err := sampleScoped(ctx, r, s.pattern); err != nil {
			r.Fail(err)
			return err
		}
		r.SetPhase("queried")
		r.Use(nil)
		if err := env.Step(ctx, fmt.Sprintf("Sample, %s: %s", s.pattern, r.Verdict())); err != nil {
			return err
		}
	}

	conn := c.Conn()
	for i := range scopingWarmup * len(ScopingPatterns) {
		p := ScopingPatterns[i%len(ScopingPatterns)]
		if _, err := ScopedQuery(ctx, conn, p, tenants[1]); err != nil {
			return err
		}
	}
	durs := map[string][]time.Duration{}
	for _, p := range ScopingPatterns {
		durs[p] = make([]time.Duration, 0, iterations)
	}
	wrong := 0
	tr := env.Tracker()
	for i := range iterations {
		t := tenants[i%len(tenants)]
		for k := range ScopingPatterns {
			p := ScopingPatterns[(i+k)%len(ScopingPatterns)] // round-robin start, so drift hits all
			start := time.Now()
			res, err := ScopedQuery(ctx, conn, p, t)
			d := time.Since(start)
			if err != nil {
				return fmt.Errorf("iteration %d, %s: %w", i+1, p, err)
			}
			durs[p] = append(durs[p], d)
			want := t
			if p == CostBare {
				want = home
			}
			if !res.Own(want, 3) {
				wrong++
			}
		}
		if done := i + 1; done%scopingChunk == 0 || done == iterations {
			from := (done - 1) / scopingChunk * scopingChunk
			meds := map[string]time.Duration{}
			for _, p := range ScopingPatterns {
				meds[p] = crowdPercentile(durs[p][from:done], 50)
				tr.AddPoint("Median per 100 iterations", "iteration", "µs", p, float64(done), scopingUS(meds[p]))
			}
			ratios := recordScopingTimings(tr, durs)
			for _, p := range ScopingPatterns[1:] {
				tr.AddPoint("Median over the bare query's (all iterations so far)", "iteration", "×", p, float64(done), ratios[p])
			}
			if err := env.Step(ctx, fmt.Sprintf("Iterations %d–%d of %d: medians bare %.0f µs, four trips %.0f µs, batch %.0f µs. So far four trips cost %.2f× the bare query, the batch %.2f×.",
				from+1, done, iterations, scopingUS(meds[CostBare]), scopingUS(meds[CostFourTrips]), scopingUS(meds[CostBatch]), ratios[CostFourTrips], ratios[CostBatch])); err != nil {
				return err
			}
		}
	}
	ratios := recordScopingTimings(tr, durs)
	var b strings.Builder
	for _, p := range ScopingPatterns {
		med, p99 := crowdPercentile(durs[p], 50), crowdPercentile(durs[p], 99)
		tr.SetMetric(p+" median", fmt.Sprintf("%.0f µs (p99 %.0f µs)", scopingUS(med), scopingUS(p99)), scopingUS(med))
		if p != CostBare {
			fmt.Fprintf(&b, " %s %.0f µs = %.2f× the bare query;", p, scopingUS(med), ratios[p])
		}
	}
	tr.SetMetric("wrong results", fmt.Sprint(wrong), float64(wrong))
	tr.Note(fmt.Sprintf("Medians over %d interleaved iterations of each pattern on backend %d: bare %.0f µs;%s",
		iterations, pid, scopingUS(crowdPercentile(durs[CostBare], 50)), strings.TrimSuffix(b.String(), ";")+"."))
	if wrong == 0 {
		tr.Note(fmt.Sprintf("All %d timed queries returned exactly their tenant's 3 invoices.", iterations*len(ScopingPatterns)))
	} else {
		tr.Note(fmt.Sprintf("%d timed queries did not return exactly their tenant's 3 invoices.", wrong))
	}
	return env.Step(ctx, fmt.Sprintf("Done: four round trips cost %.2f× the bare query, one batch %.2f×, measured on this server just now.", ratios[CostFourTrips], ratios[CostBatch]))
}

// sampleScoped runs one pattern for the sample request r on r's connection
// and records what the database returned on r's row.
func sampleScoped(ctx context.Context, r *engine.Request, pattern string) error {
	switch pattern {
	case CostBare:
		return r.Observe(ctx, r.Conn())
	case CostFourTrips:
		return pgx.BeginFunc(ctx, r.Conn(), func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, engine.SetLocalSQL, r.Tenant.Setting()); err != nil {
				return err
			}
			return r.Observe(ctx, tx)
		})
	case CostBatch:
		b := &pgx.Batch{}
		b.Queue(engine.SetLocalSQL, r.Tenant.Setting())
		b.Queue(engine.ObserveQuery)
		res := r.Conn().SendBatch(ctx, b)
		_, err := res.Exec()
		if err == nil {
			err = r.Observe(ctx, engine.BatchRow{Results: res})
		}
		if cerr := res.Close(); err == nil {
			err = cerr
		}
		return err
	}
	return fmt.Errorf("no scoping pattern %q", pattern)
}

// recordScopingTimings sets each pattern's timing and the ratios of the
// scoped patterns' medians over the bare query's, and returns the ratios.
func recordScopingTimings(tr *engine.Tracker, durs map[string][]time.Duration) map[string]float64 {
	ratios := map[string]float64{}
	bare := crowdPercentile(durs[CostBare], 50)
	for _, p := range ScopingPatterns {
		ds := durs[p]
		med := crowdPercentile(ds, 50)
		tr.SetTiming(p, engine.Timing{MedianUS: scopingUS(med), P99US: scopingUS(crowdPercentile(ds, 99)), N: len(ds)})
		if p != CostBare && bare > 0 {
			ratios[p] = float64(med) / float64(bare)
			tr.SetRatio(p, ratios[p])
		}
	}
	return ratios
}

func scopingUS(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
