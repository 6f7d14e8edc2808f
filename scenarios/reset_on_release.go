package scenarios

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/scenarios/engine/measure"
)

// Variants of reset-on-release (stable names: tools and lessons rely on
// them).
const (
	ResetOnReleaseNone    = "none"
	ResetOnReleaseSetting = "reset-after-release"
	ResetOnReleaseAll     = "reset-all"
	ResetOnReleaseDiscard = "discard-all"
	ResetOnReleaseCheck   = "check-before-use"
)

// rorCheckSQL is what the check-before-use PrepareConn hook reads on acquire.
const rorCheckSQL = `SELECT current_setting('app.current_tenant', true)`

// rorHookTimeout bounds one AfterRelease hook (it gets no context).
const rorHookTimeout = 5 * time.Second

// rorTurn is how many timed requests run on one pool before the other
// pool's turn.
const rorTurn = 10

// rorGuardKind is one variant's guard: a statement its AfterRelease hook
// sends, or a check in PrepareConn, or nothing.
type rorGuardKind struct {
	name, summary string
	reset         string // the AfterRelease statement, or ""
	check         bool   // PrepareConn refuses a connection that holds a tenant
}

// ResetOnRelease returns the reset-on-release scenario: belt and braces
// against a session-level tenant setting that survives release. Each variant
// puts one guard on the pool (a reset in AfterRelease, or a check in
// PrepareConn), replays the set-leak order (tenant A sets its tenant for the
// session and releases, a request of tenant B that forgot to scope gets the
// same backend), and then times the guard over extra requests at full speed
// against a pool without it.
func ResetOnRelease() *engine.Scenario {
	kinds := []rorGuardKind{
		{name: ResetOnReleaseNone, summary: "No guard: tenant A scopes with a session-level SET; a later request on the pool forgets to scope."},
		{name: ResetOnReleaseSetting, reset: "RESET app.current_tenant", summary: "pgxpool's AfterRelease runs RESET app.current_tenant; then a request that forgot to scope."},
		{name: ResetOnReleaseAll, reset: "RESET ALL", summary: "AfterRelease runs RESET ALL; then a request that forgot to scope."},
		{name: ResetOnReleaseDiscard, reset: "DISCARD ALL", summary: "AfterRelease runs DISCARD ALL; then a request that forgot to scope, and queries through pgx's statement cache."},
		{name: ResetOnReleaseCheck, check: true, summary: "PrepareConn reads the setting on acquire and refuses a connection that still holds a tenant; then a request that forgot to scope."},
	}
	sc := &engine.Scenario{
		ID:         "reset-on-release",
		Pacing:     engine.PacingLive,
		LiveWhy:    "it measures how long each request and reset hook takes",
		Title:      "Belt and braces: reset on release, check before use",
		Params:     []engine.Param{{Name: "iterations", Summary: "extra requests per pool, run at full speed, to time the guard against no guard", Min: 20, Max: 2000, Default: 200}},
		MinTenants: 3,
	}
	for _, k := range kinds {
		// The replay's pool of 2 and the timing pool without guard; the
		// timing pool with the guard, and a backend of a pool closed a
		// moment earlier that may still be exiting; for the check, the
		// backend the pool refused (until it has exited) and the superuser
		// connection that asks the server whether it has.
		need := 3
		if k.reset != "" {
			need = 5
		} else if k.check {
			need = 6
		}
		sc.Variants = append(sc.Variants, engine.Variant{Name: k.name, Summary: k.summary, Conns: engine.Fixed(need),
			Run: func(ctx context.Context, env *engine.Env) error { return runResetOnRelease(ctx, env, k) }})
	}
	return sc
}

// rorRefusal is one connection the check-before-use hook refused.
type rorRefusal struct {
	PID    uint32
	Tenant string
}

// rorGuard is one pool's hooks of a variant, with what they measured and
// refused.
type rorGuard struct {
	rorGuardKind
	env *engine.Env

	mu      sync.Mutex
	hook    []time.Duration
	refused []rorRefusal
}

// configure installs the variant's hook on a pool config.
func (g *rorGuard) configure(cfg *pgxpool.Config) {
	if g.reset != "" {
		cfg.AfterRelease = func(c *pgx.Conn) bool {
			ctx, cancel := context.WithTimeout(context.Background(), rorHookTimeout)
			defer cancel()
			start := time.Now()
			_, err := c.Exec(ctx, g.reset)
			g.record(time.Since(start), nil)
			if err != nil {
				g.env.Logger().Warn("reset-on-release hook", "err", fmt.Sprintf("AfterRelease %s on backend %d: %v", g.reset, c.PgConn().PID(), err))
				return false // a connection we could not reset is not given out again
			}
			return true
		}
	}
	if g.check {
		cfg.PrepareConn = func(ctx context.Context, c *pgx.Conn) (bool, error) {
			start := time.Now()
			var v *string
			err := c.QueryRow(ctx, rorCheckSQL).Scan(&v)
			switch {
			case err != nil && ctx.Err() != nil:
				return false, ctx.Err()
			case err != nil:
				g.env.Logger().Warn("reset-on-release hook", "err", fmt.Sprintf("PrepareConn check on backend %d: %v", c.PgConn().PID(), err))
				g.record(time.Since(start), nil)
				return false, nil // destroy it and try another
			case v != nil && *v != "":
				g.record(time.Since(start), &rorRefusal{PID: c.PgConn().PID(), Tenant: *v})
				return false, nil
			}
			g.record(time.Since(start), nil)
			return true, nil
		}
	}
}

// record adds one run of the hook and, when it refused a connection, the
// refusal.
func (g *rorGuard) record(d time.Duration, refused *rorRefusal) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hook = append(g.hook, d)
	if refused != nil {
		g.refused = append(g.refused, *refused)
	}
}

// take returns the hook times and refusals recorded so far and forgets
// them.
func (g *rorGuard) take() ([]time.Duration, []rorRefusal) {
	g.mu.Lock()
	defer g.mu.Unlock()
	hook, refused := g.hook, g.refused
	g.hook, g.refused = nil, nil
	return hook, refused
}

// open opens a pool of size connections with the guard on it and forgets
// what its hooks did while it opened.
func (g *rorGuard) open(ctx context.Context, name string, size int32) (*engine.Pool, error) {
	p, err := g.env.OpenPool(ctx, engine.PoolOptions{Name: name, MaxConns: size, MinConns: size, Configure: g.configure})
	g.take()
	return p, err
}

// describe says in words what the variant's guard does.
func (g *rorGuard) describe() string {
	switch {
	case g.check:
		return "This pool's PrepareConn hook runs " + rorCheckSQL + " on every acquire and refuses a connection that still holds a tenant."
	case g.reset != "":
		return "This pool's AfterRelease hook sends " + g.reset + " on every connection given back, before the pool can hand it out again."
	}
	return "This pool has no guard: nothing resets a connection on release and nothing checks it on acquire."
}

// label names the guard's hook for a metric.
func (g *rorGuard) label() string {
	if g.check {
		return "PrepareConn check"
	}
	return "AfterRelease " + g.reset
}

func runResetOnRelease(ctx context.Context, env *engine.Env, kind rorGuardKind) error {
	iterations := env.Params.Get("iterations")
	a, b, c := env.Sandbox.Tenants[0], env.Sandbox.Tenants[1], env.Sandbox.Tenants[2]
	g := &rorGuard{rorGuardKind: kind, env: env}
	pool, err := g.open(ctx, "app", 2)
	if err != nil {
		return err
	}
	if err := env.Step(ctx, "The pool has opened its 2 connections. "+g.describe()); err != nil {
		return err
	}

	// The set-leak order: tenant A's request and tenant C's slow request
	// hold both connections; A releases first, so the forgetful request of
	// tenant B can only get the backend A scoped (or, when PrepareConn
	// refuses it, a new one).
	first, holder := pool.NewRequest(a, engine.PatternSessionSet), pool.NewRequest(c, engine.PatternSessionSet)
	for _, r := range []*engine.Request{first, holder} {
		if err := r.Acquire(ctx); err != nil {
			return err
		}
	}
	if err := first.Finish(ctx); err != nil {
		return err
	}
	aPID := first.Row().PID
	hooks := "and the pool's AfterRelease hook ran"
	if kind.reset == "" {
		hooks = "with no reset on release"
	}
	env.Tracker().Note(fmt.Sprintf("After tenant %s's session-set request was released (%s), backend %d %s.",
		a.Name, hooks, aPID, engine.DescribeSetting(env.Sandbox, pool.Setting(aPID), "reported")))

	forgot := pool.NewRequest(b, engine.PatternForgot)
	if err := forgot.Acquire(ctx); err != nil {
		return err
	}
	if kind.check {
		if err := rorShowRefusals(ctx, env, g, pool, forgot); err != nil {
			return err
		}
	}
	if err := rorPlayRest(ctx, env, forgot); err != nil {
		return err
	}
	if kind.name == ResetOnReleaseDiscard {
		// Only the forgetful request's backend is idle: the retry gets it.
		retry := pool.NewRequest(b, engine.PatternForgot)
		if err := retry.Acquire(ctx); err != nil {
			return err
		}
		if err := rorPlayRest(ctx, env, retry); err != nil {
			return err
		}
		if f, r := forgot.Row(), retry.Row(); f.Error != "" && r.Error == "" && r.PID == f.PID {
			env.Tracker().Note(fmt.Sprintf("pgx v5 dropped the failed statement from its cache: request #%d ran the same query on the same backend %d and worked (%d rows), because it was prepared again.", r.Seq, r.PID, r.Rows))
		}
	}
	if err := holder.Finish(ctx); err != nil {
		return err
	}
	env.NoteRequests(engine.Notable)
	if err := env.Step(ctx, fmt.Sprintf("Now the cost: %d extra requests per pool at full speed, on a one-connection pool without any guard and on one with the %s guard.", iterations, kind.name)); err != nil {
		return err
	}
	if err := rorMeasure(ctx, env, kind, iterations); err != nil {
		return err
	}
	return env.Conclude(ctx, "The metrics and timings show what the guard costs per request.")
}

// rorPlayRest runs a request's scope, query and release; a failed query is an
// outcome (recorded on the request's row and narrated), not the end of the
// run.
func rorPlayRest(ctx context.Context, env *engine.Env, r *engine.Request) error {
	if err := r.Scope(ctx); err != nil {
		return err
	}
	if err := r.Query(ctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.Update(func(row *engine.RequestRow) {
			if row.SQLState == "26000" {
				row.Why = "DISCARD ALL on release deallocated every prepared statement on this backend; pgx still had this query in its statement cache and sent it by name, so the server no longer knew it."
			}
		})
		if err := env.Step(ctx, fmt.Sprintf("%s failed on backend %d: %s", r.Label(), r.PID(), errorWithCode(err))); err != nil {
			return err
		}
	}
	return r.Release(ctx)
}

// rorShowRefusals narrates the connections PrepareConn refused while r was
// acquiring: each refused backend's box disappears, the server confirms the
// backend is gone, and r holds a new backend.
func rorShowRefusals(ctx context.Context, env *engine.Env, g *rorGuard, pool *engine.Pool, r *engine.Request) error {
	_, refused := g.take()
	if len(refused) == 0 {
		return env.Step(ctx, fmt.Sprintf("PrepareConn accepted backend %d for %s: it held no tenant.", r.PID(), r.Label()))
	}
	for _, rf := range refused {
		pool.WaitGone(ctx, rf.PID)
		server := "; pg_stat_activity no longer lists it"
		if gone, err := rorBackendGone(ctx, env, rf.PID); err != nil {
			server = " (could not ask the server: " + err.Error() + ")"
		} else if !gone {
			server = "; pg_stat_activity still listed it after 2 s"
		}
		env.Tracker().Note(fmt.Sprintf("PrepareConn refused backend %d, which still held tenant %s (app.current_tenant = '%s'): the pool destroyed it%s, and request #%d got backend %d instead.",
			rf.PID, env.Sandbox.TenantName(rf.Tenant), rf.Tenant, server, r.Seq, r.PID()))
		if err := env.Step(ctx, fmt.Sprintf("PrepareConn read app.current_tenant = '%s' on backend %d and refused it: the pool destroyed that connection (its box is gone%s) and opened backend %d for %s.",
			rf.Tenant, rf.PID, server, r.PID(), r.Label())); err != nil {
			return err
		}
	}
	return nil
}

// rorBackendGone asks the server (on the lab's admin connection) whether the
// backend pid has left pg_stat_activity, waiting up to 2 s for it to exit.
// The server tells nobody when a backend exits, so this asks every 10 ms.
func rorBackendGone(ctx context.Context, env *engine.Env, pid uint32) (bool, error) {
	conn, release, err := env.Sandbox.Admin(ctx)
	if err != nil {
		return false, err
	}
	defer release()
	deadline := time.Now().Add(2 * time.Second)
	for {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, int32(pid)).Scan(&n); err != nil || n == 0 || time.Now().After(deadline) {
			return n == 0 && err == nil, err
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// rorTimed is what the timed requests of one pool measured.
type rorTimed struct {
	failed      int
	firstErr    error
	alternating bool // no two requests in a row failed
	lastFailed  bool
	leaks       int
}

// rorTarget times requests on the one-connection pool p: each scoped with a
// batch-local set_config and reading ObserveQuery, from its acquire to the
// end of the pool's release hooks (the guard's and rlslab's own identity
// read). A failed request is counted, not fatal.
func rorTarget(env *engine.Env, p *engine.Pool, out *rorTimed) measure.Target {
	tenants := env.Sandbox.Tenants
	out.alternating = true
	return measure.Target{Name: p.Name(), Run: func(ctx context.Context, i int) error {
		t := tenants[i%len(tenants)]
		c, err := p.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("timing on pool %q: %w", p.Name(), err)
		}
		res, err := ScopedQuery(ctx, c.Conn(), CostBatch, t)
		p.ReleaseAndWait(ctx, c)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			out.failed++
			if out.firstErr == nil {
				out.firstErr = err
			}
			out.alternating = out.alternating && !out.lastFailed
		} else if !res.Own(t, len(res.Tenants)) {
			out.leaks++
		}
		out.lastFailed = err != nil
		return nil
	}}
}

// rorMeasure times iterations extra requests on a one-connection pool
// without a guard and on one with the variant's guard, at full speed,
// interleaved in turns of rorTurn, and records the medians, their ratio and
// the hook's own time.
func rorMeasure(ctx context.Context, env *engine.Env, kind rorGuardKind, iterations int) error {
	bare, err := env.OpenPool(ctx, engine.PoolOptions{Name: "timing: no guard", MaxConns: 1, MinConns: 1})
	if err != nil {
		return err
	}
	var without, with rorTimed
	targets := []measure.Target{rorTarget(env, bare, &without)}
	g := &rorGuard{rorGuardKind: kind, env: env}
	guarded := kind.reset != "" || kind.check
	if guarded {
		p, err := g.open(ctx, "timing: "+kind.name, 1)
		if err != nil {
			return err
		}
		targets = append(targets, rorTarget(env, p, &with))
	}
	samples, err := measure.Interleave(ctx, targets, measure.Plan{Iterations: iterations, Turn: rorTurn})
	if err != nil {
		return err
	}
	tr := env.Tracker()
	noGuard := measure.Summarize(samples[bare.Name()])
	tr.SetTiming("request, no guard", noGuard.Timing())
	tr.SetMetric("request without guard (median)", rorFormatUS(measure.US(noGuard.Median)), measure.US(noGuard.Median))
	rorChart(env, "no guard", samples[bare.Name()])
	if !guarded {
		tr.Note(fmt.Sprintf("Timed %d extra requests (batch-local scope and query, each from its acquire to the end of the pool's release hooks) on a pool without guard: median %s, p99 %s. This variant has no guard to compare.",
			noGuard.N, rorFormatUS(measure.US(noGuard.Median)), rorFormatUS(measure.US(noGuard.P99))))
		return nil
	}
	withGuard := measure.Summarize(samples[targets[1].Name])
	hookTimes, refused := g.take()
	hook := measure.Summarize(hookTimes)
	tr.SetTiming("request, "+kind.name, withGuard.Timing())
	tr.SetTiming(kind.name+" hook alone", hook.Timing())
	rorChart(env, kind.name, samples[targets[1].Name])
	ratio := 0.0
	if noGuard.Median > 0 {
		ratio = float64(withGuard.Median) / float64(noGuard.Median)
		tr.SetRatio(kind.name+" / no guard", ratio)
	}
	med, extra := measure.US(withGuard.Median), measure.US(withGuard.Median-noGuard.Median)
	tr.SetMetric("request with "+kind.name+" (median)", rorFormatUS(med), med)
	tr.SetMetric(g.label()+" alone (median)", rorFormatUS(measure.US(hook.Median)), measure.US(hook.Median))
	tr.SetMetric("extra per request (median)", rorFormatUS(extra), extra)
	tr.SetMetric("with / without", fmt.Sprintf("%.2f×", ratio), ratio)
	tr.Note(fmt.Sprintf("Timed %d extra requests per pool (batch-local scope and query, in turns of %d on each pool; each time runs from acquire to the end of the pool's release hooks, which on both pools include rlslab's own identity read): median %s without guard, %s with %s (%.2f×, %s more); the hook alone took a median %s (p99 %s) over %d runs.",
		withGuard.N, rorTurn, rorFormatUS(measure.US(noGuard.Median)), rorFormatUS(med), kind.name, ratio, rorFormatUS(extra), rorFormatUS(measure.US(hook.Median)), rorFormatUS(measure.US(hook.P99)), hook.N))
	if with.failed > 0 || without.failed > 0 {
		tr.SetMetric("timed requests that failed ("+kind.name+")", fmt.Sprintf("%d of %d", with.failed, withGuard.N), float64(with.failed))
		msg := fmt.Sprintf("%d of %d timed requests failed on the %s pool, %d of %d on the pool without guard.", with.failed, withGuard.N, kind.name, without.failed, noGuard.N)
		if with.failed > 0 && with.alternating {
			msg += " No two failed in a row: each failure drops that statement from pgx's cache, the next request prepares it again, and the next DISCARD ALL deallocates it again."
		}
		if with.firstErr != nil {
			msg += " First error: " + errorWithCode(with.firstErr)
		}
		tr.Note(msg)
	}
	if with.leaks > 0 || without.leaks > 0 {
		tr.Note(fmt.Sprintf("%d timed requests on the %s pool and %d without guard got another tenant's rows.", with.leaks, kind.name, without.leaks))
	}
	if kind.check {
		tr.SetMetric("connections refused while timing", fmt.Sprint(len(refused)), float64(len(refused)))
	}
	return nil
}

// rorChart draws at most ~150 points of the request times of one pool.
func rorChart(env *engine.Env, line string, ds []time.Duration) {
	step := max(1, len(ds)/150)
	for i := 0; i < len(ds); i += step {
		env.Tracker().AddPoint("Request time, acquire to release", "request", "µs", line, float64(i+1), math.Round(measure.US(ds[i])))
	}
}

// rorFormatUS formats a duration in µs for a metric.
func rorFormatUS(us float64) string { return fmt.Sprintf("%.0f µs", us) }

// errorWithCode returns err's text with its SQLSTATE when the server sent
// one and the text does not already say it.
func errorWithCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && !strings.Contains(err.Error(), pe.Code) {
		return err.Error() + " [SQLSTATE " + pe.Code + "]"
	}
	return err.Error()
}
