package scenarios

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Variants of reset-scope (stable names: tools and lessons rely on them).
const (
	ResetScopeSetting = "reset-setting"
	ResetScopeAll     = "reset-all"
	ResetScopeRole    = "reset-role"
	ResetScopeDiscard = "discard-all"
)

// resetStatements are the statements each variant runs before the
// connection goes back to the pool.
var resetStatements = map[string]string{
	ResetScopeSetting: "RESET app.current_tenant",
	ResetScopeAll:     "RESET ALL",
	ResetScopeRole:    "RESET ROLE",
	ResetScopeDiscard: "DISCARD ALL",
}

// scopeSearchPath is the search_path the first request sets.
const scopeSearchPath = "acme, public"

// ResetScope returns the reset-scope scenario: one backend is given a
// tenant setting, a SET ROLE, a search_path, a prepared statement, a temp
// table and an advisory lock; one reset statement runs before release; the
// next request on that backend reads what is left. Only DISCARD ALL clears
// all six.
func ResetScope() *engine.Scenario {
	v := func(name, summary string) engine.Variant {
		return engine.Variant{Name: name, Summary: summary, Conns: adminAndPool, Run: func(ctx context.Context, env *engine.Env) error {
			return runResetScope(ctx, env, resetStatements[name])
		}}
	}
	return &engine.Scenario{
		ID:     "reset-scope",
		Pacing: engine.PacingReplay,
		Title:  "What each reset really clears on a pooled backend",
		Variants: []engine.Variant{
			v(ResetScopeSetting, "RESET app.current_tenant before release; the next request on that backend reads what is left."),
			v(ResetScopeAll, "RESET ALL before release; the next request on that backend reads what is left."),
			v(ResetScopeRole, "RESET ROLE before release; the next request on that backend reads what is left."),
			v(ResetScopeDiscard, "DISCARD ALL before release; the next request on that backend reads what is left."),
		},
		MinTenants: 2,
	}
}

// supportRole is the role the first request of reset-scope switches to.
func supportRole(sb engine.Sandbox) string { return "lab_" + sb.Lab + "_support" }

// sessionState is what reset-scope reads from a backend.
type sessionState struct {
	tenant     *string
	role       string
	searchPath string
	prepared   int
	tempTable  bool
	locks      int
}

// readSessionState reads s from q's backend.
func readSessionState(ctx context.Context, q engine.Querier) (sessionState, error) {
	var s sessionState
	err := q.QueryRow(ctx, `SELECT current_setting('app.current_tenant', true), current_user::text, current_setting('search_path'),
		(SELECT count(*) FROM pg_prepared_statements WHERE name = 'acme_report'),
		to_regclass('pg_temp.scratch') IS NOT NULL,
		(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted)`).
		Scan(&s.tenant, &s.role, &s.searchPath, &s.prepared, &s.tempTable, &s.locks)
	return s, err
}

// kept lists, for each piece of state the first request left, whether it
// is still there in after: metric name, what it is, before, after, and "1"
// when it was kept.
func kept(sb engine.Sandbox, before, after sessionState) [][5]string {
	val := func(v *string) string {
		if v == nil {
			return "NULL"
		}
		return "'" + *v + "'"
	}
	yes := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	return [][5]string{
		{"kept_tenant", "tenant setting", val(before.tenant), val(after.tenant), yes(after.tenant != nil && *after.tenant != "")},
		{"kept_role", "role (current_user)", before.role, after.role, yes(after.role != sb.AppRole)},
		{"kept_search_path", "search_path", before.searchPath, after.searchPath, yes(after.searchPath == scopeSearchPath)},
		{"kept_prepared", "prepared statement acme_report", fmt.Sprint(before.prepared), fmt.Sprint(after.prepared), yes(after.prepared > 0)},
		{"kept_temp_table", "temp table scratch", fmt.Sprint(before.tempTable), fmt.Sprint(after.tempTable), yes(after.tempTable)},
		{"kept_advisory_lock", "advisory locks held", fmt.Sprint(before.locks), fmt.Sprint(after.locks), yes(after.locks > 0)},
	}
}

func runResetScope(ctx context.Context, env *engine.Env, reset string) (err error) {
	sb := env.Sandbox
	acme, globex := sb.Tenants[0], sb.Tenants[1]
	support := supportRole(sb)
	db := quote(sb.Database)
	defer undoDDL(ctx, env, &err, append(dropRole(support), "REVOKE TEMPORARY ON DATABASE "+db+" FROM "+quote(sb.AppRole))...)
	if err := labDDL(ctx, env, false,
		"CREATE ROLE "+quote(support)+" NOLOGIN",
		"GRANT USAGE ON SCHEMA public TO "+quote(support),
		"GRANT SELECT ON invoices TO "+quote(support),
		"GRANT "+quote(support)+" TO "+quote(sb.AppRole),
		"GRANT TEMPORARY ON DATABASE "+db+" TO "+quote(sb.AppRole)); err != nil {
		return err
	}
	// Statements are not cached on the client, so that DISCARD ALL does not
	// break pgx's statement cache: that failure is lesson 7's.
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 1, MinConns: 1,
		Configure: func(c *pgxpool.Config) { c.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec }})
	if err != nil {
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("A pool of one connection as %s, which may SET ROLE %s (a support role that may read invoices) and create temp tables.", sb.AppRole, support)); err != nil {
		return err
	}
	first := pool.NewRequest(acme, engine.PatternSessionSet)
	defer first.ReleaseQuiet(context.WithoutCancel(ctx))
	if err := first.Acquire(ctx); err != nil {
		return err
	}
	setup := []string{
		"CREATE TEMP TABLE scratch (tenant_id int)",
		"PREPARE acme_report AS SELECT tenant_id FROM invoices",
		"SELECT pg_advisory_lock(4242)",
		"SET search_path = " + scopeSearchPath,
		"SELECT set_config('app.current_tenant', '" + acme.Setting() + "', false)",
		"SET ROLE " + quote(support),
	}
	for _, s := range setup {
		if _, err := first.Conn().Exec(ctx, s); err != nil {
			first.Fail(err)
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	before, err := readSessionState(ctx, first.Conn())
	if err != nil {
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("%s leaves six things on backend %d: %s.", first.Label(), first.PID(), strings.Join(setup, "; "))); err != nil {
		return err
	}
	if err := first.Query(ctx); err != nil {
		return err
	}
	if _, err := first.Conn().Exec(ctx, reset); err != nil {
		first.Fail(err)
		return fmt.Errorf("%s: %w", reset, err)
	}
	if err := env.Step(ctx, fmt.Sprintf("%s runs %s before it gives the connection back, as an AfterRelease hook would.", first.Label(), reset)); err != nil {
		return err
	}
	if err := first.Release(ctx); err != nil {
		return err
	}
	next := pool.NewRequest(globex, engine.PatternForgot)
	defer next.ReleaseQuiet(context.WithoutCancel(ctx))
	if err := next.Acquire(ctx); err != nil {
		return err
	}
	after, err := readSessionState(ctx, next.Conn())
	if err != nil {
		return err
	}
	survivors := 0
	var table []string
	for _, k := range kept(sb, before, after) {
		n := 0.0
		if k[4] == "1" {
			n = 1
			survivors++
		}
		env.Tracker().SetMetric(k[0], k[4], n)
		table = append(table, fmt.Sprintf("%s: %s → %s", k[1], k[2], k[3]))
	}
	env.Tracker().SetMetric("survivors", fmt.Sprintf("%d of 6", survivors), float64(survivors))
	var left []string
	for _, k := range kept(sb, before, after) {
		if k[4] == "1" {
			left = append(left, k[1])
		}
	}
	measured := fmt.Sprintf("%s left %d of 6 pieces of session state to the next request on the backend: %s.", reset, survivors, strings.Join(left, ", "))
	if len(left) == 0 {
		measured = fmt.Sprintf("%s cleared all 6 pieces of session state before the next request on the backend.", reset)
	}
	env.Tracker().Measured(measured, false)
	env.Tracker().Note(fmt.Sprintf("After %s, the next request on backend %d found: %s.", reset, next.PID(), strings.Join(table, "; ")))
	if err := env.Step(ctx, fmt.Sprintf("%s reads backend %d after %s: %d of the six are still there (%s).", next.Label(), next.PID(), reset, survivors, strings.Join(table, "; "))); err != nil {
		return err
	}
	if err := next.Finish(ctx); err != nil {
		return err
	}
	env.NoteRequests(nil)
	// Close the backend, so that no role, lock or temp table of the run
	// outlives it in the pool.
	pid := next.Row().PID
	pool.Reset()
	pool.WaitGone(ctx, pid)
	return env.Conclude(ctx, "rlslab closes the backend and drops the support role; the table above is what the next request on that backend would have inherited.")
}
