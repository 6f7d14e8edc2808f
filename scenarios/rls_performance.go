package scenarios

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/scenarios/engine/measure"
)

// Variants of rls-performance (stable names: tools and lessons rely on
// them).
const (
	RLSPerfPerRow       = "per-row"
	RLSPerfNotLeakproof = "not-leakproof"
	RLSPerfInitPlan     = "initplan"
	RLSPerfIndexed      = "indexed"
)

// perfTable is the table rls-performance creates for a run: perfRows rows
// spread over perfTenants tenant ids, so that each tenant has 1%.
const (
	perfTable   = "perf_invoices"
	perfRows    = 30000
	perfTenants = 100
	perfSamples = 15
)

// The two policies rls-performance compares: the setting read in the
// comparison itself, and the same read in a scalar subquery, which the
// planner runs once as an InitPlan.
const (
	perRowPolicy   = "tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::int"
	initPlanPolicy = "tenant_id = (SELECT NULLIF(current_setting('app.current_tenant', true), '')::int)"
)

// The queries of rls-performance: every invoice the tenant may see, and
// the tenant's VIP invoices, found with jsonb's @> (not LEAKPROOF).
const (
	perfAllQuery = "SELECT tenant_id FROM " + perfTable
	perfVIPQuery = "SELECT tenant_id FROM " + perfTable + ` WHERE tags @> '{"vip": true}'`
)

// perfSetup is one variant's table: its policy, its extra indexes and its
// query.
type perfSetup struct {
	policy  string
	indexes []string
	query   string
}

// RLSPerformance returns the rls-performance scenario: what a policy costs
// per query. A policy that calls current_setting in its comparison is
// evaluated for every row a sequential scan reads; wrapped in a scalar
// subquery it becomes an InitPlan that runs once. And a query condition
// with an operator that is not LEAKPROOF (jsonb's @>) may not be pushed
// below the policy, so its index is not used; an index that serves the
// policy's own column is. Each variant shows its EXPLAIN (ANALYZE) and
// times the query on the app role's connection.
func RLSPerformance() *engine.Scenario {
	gin := "CREATE INDEX perf_invoices_tags ON " + perfTable + " USING gin (tags jsonb_path_ops)"
	v := func(name, summary string, s perfSetup) engine.Variant {
		return engine.Variant{Name: name, Summary: summary, Conns: adminAndPool, Run: func(ctx context.Context, env *engine.Env) error {
			return runRLSPerformance(ctx, env, name, s)
		}}
	}
	return &engine.Scenario{
		ID:      "rls-performance",
		Pacing:  engine.PacingLive,
		LiveWhy: "it measures each query's latency",
		Title:   "What a tenant policy does to the query plan",
		Variants: []engine.Variant{
			v(RLSPerfPerRow, "Policy tenant_id = NULLIF(current_setting(...), '')::int; Acme reads its invoices from a table with no index on tenant_id.",
				perfSetup{policy: perRowPolicy, query: perfAllQuery}),
			v(RLSPerfNotLeakproof, "A GIN index on tags and a query WHERE tags @> '{\"vip\": true}' under the same policy.",
				perfSetup{policy: perRowPolicy, indexes: []string{gin}, query: perfVIPQuery}),
			v(RLSPerfInitPlan, "The policy with the setting in a scalar subquery, (SELECT NULLIF(current_setting(...), '')::int).",
				perfSetup{policy: initPlanPolicy, query: perfAllQuery}),
			v(RLSPerfIndexed, "The @> query again, with a b-tree index on tenant_id beside the GIN index.",
				perfSetup{policy: perRowPolicy, indexes: []string{gin, "CREATE INDEX perf_invoices_tenant ON " + perfTable + " (tenant_id)"}, query: perfVIPQuery}),
		},
		MinTenants: 1,
	}
}

// planNode is the part of an EXPLAIN (FORMAT JSON) plan node that
// rls-performance reads.
type planNode struct {
	NodeType      string     `json:"Node Type"`
	Relation      string     `json:"Relation Name"`
	Index         string     `json:"Index Name"`
	Parent        string     `json:"Parent Relationship"`
	Filter        string     `json:"Filter"`
	IndexCond     string     `json:"Index Cond"`
	RecheckCond   string     `json:"Recheck Cond"`
	ActualRows    float64    `json:"Actual Rows"`
	RemovedFilter float64    `json:"Rows Removed by Filter"`
	Plans         []planNode `json:"Plans"`
}

// walk calls f for n and every node under it.
func (n planNode) walk(f func(planNode)) {
	f(n)
	for _, c := range n.Plans {
		c.walk(f)
	}
}

// describe returns one line per plan node, indented by depth.
func (n planNode) describe(depth int) []string {
	line := strings.Repeat("  ", depth) + n.NodeType
	if n.Relation != "" {
		line += " on " + n.Relation
	}
	if n.Index != "" {
		line += " using " + n.Index
	}
	if n.Parent == "InitPlan" {
		line += " (InitPlan)"
	}
	for _, c := range []struct{ k, v string }{{"Index Cond", n.IndexCond}, {"Recheck Cond", n.RecheckCond}, {"Filter", n.Filter}} {
		if c.v != "" {
			line += "; " + c.k + ": " + c.v
		}
	}
	if n.NodeType != "Result" && n.ActualRows+n.RemovedFilter > 0 {
		line += fmt.Sprintf("; rows %.0f", n.ActualRows)
		if n.RemovedFilter > 0 {
			line += fmt.Sprintf(", removed by filter %.0f", n.RemovedFilter)
		}
	}
	out := []string{line}
	for _, c := range n.Plans {
		out = append(out, c.describe(depth+1)...)
	}
	return out
}

// parsePlan reads the output of EXPLAIN (FORMAT JSON): the plan and, with
// ANALYZE, the execution time in milliseconds.
func parsePlan(raw []byte) (planNode, float64, error) {
	var plans []struct {
		Plan planNode `json:"Plan"`
		Exec float64  `json:"Execution Time"`
	}
	if err := json.Unmarshal(raw, &plans); err != nil || len(plans) != 1 {
		return planNode{}, 0, fmt.Errorf("EXPLAIN output: %v (%d plans)", err, len(plans))
	}
	return plans[0].Plan, plans[0].Exec, nil
}

func runRLSPerformance(ctx context.Context, env *engine.Env, variant string, s perfSetup) (err error) {
	sb := env.Sandbox
	acme := sb.Tenants[0]
	defer undoDDL(ctx, env, &err, "DROP TABLE IF EXISTS "+perfTable)
	stmts := []string{
		"CREATE TABLE " + perfTable + " (id int PRIMARY KEY, tenant_id int NOT NULL, tags jsonb NOT NULL)",
		fmt.Sprintf(`INSERT INTO %s SELECT g, 1 + g %% %d, jsonb_build_object('vip', g %% 97 = 0) FROM generate_series(1, %d) AS g`, perfTable, perfTenants, perfRows),
	}
	stmts = append(stmts, s.indexes...)
	stmts = append(stmts,
		"ALTER TABLE "+perfTable+" ENABLE ROW LEVEL SECURITY",
		"ALTER TABLE "+perfTable+" FORCE ROW LEVEL SECURITY",
		"CREATE POLICY tenant_isolation ON "+perfTable+" USING ("+s.policy+")",
		"GRANT SELECT ON "+perfTable+" TO "+quote(sb.AppRole),
		"ANALYZE "+perfTable)
	if err := labDDLShowing(ctx, env, true, perfTable, stmts...); err != nil {
		return err
	}
	indexes := "no index but its primary key"
	if len(s.indexes) > 0 {
		indexes = strings.Join(s.indexes, "; ")
	}
	if err := env.Step(ctx, fmt.Sprintf("A table %s with %d rows over %d tenant ids (%d each), forced RLS with the policy USING (%s); %s.", perfTable, perfRows, perfTenants, perfRows/perfTenants, s.policy, indexes)); err != nil {
		return err
	}
	if s.query == perfVIPQuery {
		// The superuser is not subject to RLS: its plan shows what the
		// query does without the policy in front of it.
		var raw []byte
		if err := env.AdminTx(ctx, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+s.query).Scan(&raw)
		}); err != nil {
			return err
		}
		plan, _, err := parsePlan(raw)
		if err != nil {
			return err
		}
		used := 0.0
		plan.walk(func(n planNode) {
			if strings.Contains(n.NodeType, "Index") {
				used = 1
			}
		})
		env.Tracker().SetMetric("index_used_without_rls", fmt.Sprint(used == 1), used)
		env.Tracker().Note("EXPLAIN of the same query as the superuser, which RLS does not apply to: " + strings.Join(plan.describe(0), " | "))
		if err := env.Step(ctx, "Without RLS (the superuser's plan): "+strings.Join(plan.describe(0), " | ")); err != nil {
			return err
		}
	}
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 1, MinConns: 1})
	if err != nil {
		return err
	}
	r := pool.NewRequest(acme, engine.PatternTxLocal)
	defer r.ReleaseQuiet(context.WithoutCancel(ctx))
	tx, err := scopedTx(ctx, r, acme.Setting())
	if err != nil {
		return err
	}
	var raw []byte
	if err := tx.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+s.query).Scan(&raw); err != nil {
		r.Fail(err)
		return err
	}
	plan, execMS, err := parsePlan(raw)
	if err != nil {
		return err
	}
	var seq, index, initPlan, perRow, scanned float64
	plan.walk(func(n planNode) {
		if n.Relation == perfTable {
			scanned = n.ActualRows + n.RemovedFilter
		}
		switch {
		case n.NodeType == "Seq Scan" && n.Relation == perfTable:
			seq = 1
			if strings.Contains(n.Filter, "current_setting") {
				perRow = 1
			}
		case strings.Contains(n.NodeType, "Index"):
			index = 1
		}
		if n.Parent == "InitPlan" {
			initPlan = 1
		}
	})
	tr := env.Tracker()
	tr.SetMetric("seq_scan", fmt.Sprint(seq == 1), seq)
	tr.SetMetric("index_used", fmt.Sprint(index == 1), index)
	tr.SetMetric("initplan", fmt.Sprint(initPlan == 1), initPlan)
	tr.SetMetric("setting_per_row", fmt.Sprint(perRow == 1), perRow)
	tr.SetMetric("rows_scanned", fmt.Sprintf("%.0f", scanned), scanned)
	tr.SetMetric("explain_ms", fmt.Sprintf("%.2f ms", execMS), execMS)
	tr.Note("EXPLAIN (ANALYZE) of " + s.query + " as the app role scoped to " + acme.Name + ": " + strings.Join(plan.describe(0), " | "))
	if err := env.Step(ctx, fmt.Sprintf("%s: EXPLAIN (ANALYZE, FORMAT JSON) %s: %s. Execution %.2f ms.", r.Label(), s.query, strings.Join(plan.describe(0), " | "), execMS)); err != nil {
		return err
	}
	samples := make([]time.Duration, 0, perfSamples)
	for i := 0; i < perfSamples; i++ {
		start := time.Now()
		rows, err := tx.Query(ctx, s.query)
		if err == nil {
			for rows.Next() {
			}
			rows.Close()
			err = rows.Err()
		}
		if err != nil {
			r.Fail(err)
			return err
		}
		samples = append(samples, time.Since(start))
	}
	sum := measure.Summarize(samples)
	tr.SetTiming(variant, sum.Timing())
	if err := observeFrom(ctx, r, tx, s.query); err != nil {
		r.Fail(err)
		return err
	}
	if err := r.Commit(ctx); err != nil {
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("%s ran the query %d times: median %.2f ms, p99 %.2f ms. It got %d rows, all %s's.", r.Label(), perfSamples, measure.MS(sum.Median), measure.MS(sum.P99), r.Row().Rows, acme.Name)); err != nil {
		return err
	}
	if err := r.Release(ctx); err != nil {
		return err
	}
	how := fmt.Sprintf("a sequential scan of %.0f rows", scanned)
	if index == 1 {
		how = fmt.Sprintf("an index scan (%.0f rows read)", scanned)
	}
	switch {
	case perRow == 1:
		how += ", the tenant setting read and cast for every row"
	case initPlan == 1:
		how += ", the tenant setting read once (InitPlan)"
	}
	tr.Measured(fmt.Sprintf("The query takes %.2f ms (median of %d runs, p99 %.2f ms) under the policy: %s.", measure.MS(sum.Median), perfSamples, measure.MS(sum.P99), how), true)
	return env.Conclude(ctx, "The table is dropped again. Run the other variants and compare their plans and timings.")
}
