package scenarios

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Variants of the reset-on-release scenario.
const (
	rorNone    = "none"
	rorSetting = "reset-after-release"
	rorAll     = "reset-all"
	rorDiscard = "discard-all"
	rorCheck   = "check-before-use"
)

// rorResetSQL is what each reset variant's AfterRelease hook sends.
var rorResetSQL = map[string]string{
	rorSetting: "RESET app.current_tenant",
	rorAll:     "RESET ALL",
	rorDiscard: "DISCARD ALL",
}

// rorCheckSQL is what the check-before-use PrepareConn hook reads on acquire.
const rorCheckSQL = `SELECT current_setting('app.current_tenant', true)`

// rorHookTimeout bounds one AfterRelease hook (it gets no context).
const rorHookTimeout = 5 * time.Second

// ResetOnRelease returns the reset-on-release scenario: belt and braces
// against a session-level tenant setting that survives release. Each variant
// puts one guard on the pool (a reset in AfterRelease, or a check in
// PrepareConn), replays the set-leak order (tenant A sets its tenant for the
// session and releases, a request of tenant B that forgot to scope gets the
// same backend), and then times the guard over extra requests at full speed
// against a pool without it.
func ResetOnRelease() *engine.Scenario {
	return &engine.Scenario{
		ID:    "reset-on-release",
		Title: "Belt and braces: reset on release, check before use",
		Variants: withRun(runResetOnRelease, []engine.Variant{
			{Name: rorNone, Summary: "No guard: tenant A's session-level SET stays on the backend and the next request that forgot to scope reads A's rows."},
			{Name: rorSetting, Summary: "pgxpool AfterRelease runs RESET app.current_tenant: the forgetful request sees '' and fails closed."},
			{Name: rorAll, Summary: "AfterRelease runs RESET ALL: every setting back to its default, the forgetful request fails closed."},
			{Name: rorDiscard, Summary: "AfterRelease runs DISCARD ALL: no leak, but it also deallocates pgx's cached prepared statements, so the next cached query fails (SQLSTATE 26000)."},
			{Name: rorCheck, Summary: "PrepareConn reads the setting on acquire and refuses a connection that still holds a tenant: the pool destroys it and opens a clean one."},
		}),
		Params: []engine.Param{{Name: "iterations", Summary: "extra requests per pool, run at full speed, to time the guard against no guard", Min: 20, Max: 2000, Default: 200}},
	}
}

// rorRefusal is one connection the check-before-use hook refused.
type rorRefusal struct {
	PID    uint32
	Tenant string
}

// rorGuard is one variant's pool hooks, with what they measured and refused.
type rorGuard struct {
	variant string
	env     *engine.Env

	mu       sync.Mutex
	hookUS   []float64
	refused  []rorRefusal
	hookErrs []string
}

func newRorGuard(variant string, env *engine.Env) *rorGuard {
	return &rorGuard{variant: variant, env: env}
}

// configure installs the variant's hook on a pool config.
func (g *rorGuard) configure(cfg *pgxpool.Config) {
	if sql, ok := rorResetSQL[g.variant]; ok {
		cfg.AfterRelease = func(c *pgx.Conn) bool {
			ctx, cancel := context.WithTimeout(context.Background(), rorHookTimeout)
			defer cancel()
			start := time.Now()
			_, err := c.Exec(ctx, sql)
			g.record(time.Since(start))
			if err != nil {
				g.failed(fmt.Sprintf("AfterRelease %s on backend %d: %v", sql, c.PgConn().PID(), err))
				return false // a connection we could not reset is not given out again
			}
			return true
		}
	}
	if g.variant == rorCheck {
		cfg.PrepareConn = func(ctx context.Context, c *pgx.Conn) (bool, error) {
			start := time.Now()
			var v *string
			err := c.QueryRow(ctx, rorCheckSQL).Scan(&v)
			g.record(time.Since(start))
			if err != nil {
				if ctx.Err() != nil {
					return false, ctx.Err()
				}
				g.failed(fmt.Sprintf("PrepareConn check on backend %d: %v", c.PgConn().PID(), err))
				return false, nil // destroy it and try another
			}
			if v != nil && *v != "" {
				g.mu.Lock()
				g.refused = append(g.refused, rorRefusal{PID: c.PgConn().PID(), Tenant: *v})
				g.mu.Unlock()
				return false, nil
			}
			return true, nil
		}
	}
}

func (g *rorGuard) record(d time.Duration) {
	g.mu.Lock()
	g.hookUS = append(g.hookUS, float64(d.Nanoseconds())/1e3)
	g.mu.Unlock()
}

func (g *rorGuard) failed(msg string) {
	g.env.Logger().Warn("reset-on-release hook", "err", msg)
	g.mu.Lock()
	g.hookErrs = append(g.hookErrs, msg)
	g.mu.Unlock()
}

// takeTimes returns the hook times recorded so far and forgets them.
func (g *rorGuard) takeTimes() []float64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := g.hookUS
	g.hookUS = nil
	return out
}

// takeRefused returns the refusals recorded so far and forgets them.
func (g *rorGuard) takeRefused() []rorRefusal {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := g.refused
	g.refused = nil
	return out
}

// describe says in words what the variant's guard does.
func (g *rorGuard) describe() string {
	switch g.variant {
	case rorNone:
		return "This pool has no guard: nothing resets a connection on release and nothing checks it on acquire."
	case rorCheck:
		return "This pool's PrepareConn hook runs " + rorCheckSQL + " on every acquire and refuses a connection that still holds a tenant."
	default:
		return "This pool's AfterRelease hook sends " + rorResetSQL[g.variant] + " on every connection given back, before the pool can hand it out again."
	}
}

func runResetOnRelease(ctx context.Context, env *engine.Env, variant string) error {
	tenants := env.Sandbox.Tenants
	if len(tenants) < 3 {
		return errors.New("reset-on-release needs three tenants in the sandbox")
	}
	if variant != rorNone && variant != rorCheck && rorResetSQL[variant] == "" {
		return fmt.Errorf("reset-on-release has no variant %q", variant)
	}
	iterations := env.Params.Get("iterations")
	if iterations == 0 {
		iterations = 200
	}
	a, b, c := tenants[0], tenants[1], tenants[2]
	// A pool's Close waits for every acquired connection to come back: when
	// the run ends early (cancelled, or a request could not go on), give
	// back whatever a request still holds.
	var reqs []*engine.Request
	defer rorGiveBack(&reqs)
	g := newRorGuard(variant, env)
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 2, MinConns: 2, Configure: g.configure})
	if err != nil {
		return err
	}
	g.takeTimes()
	g.takeRefused()
	if err := env.Step(ctx, "The pool has opened its 2 connections. "+g.describe()); err != nil {
		return err
	}

	// The set-leak order: tenant A's request and tenant C's slow request
	// hold both connections; A releases first, so the forgetful request of
	// tenant B can only get the backend A scoped (or, when PrepareConn
	// refuses it, a new one).
	first := pool.NewRequest(a, engine.PatternSessionSet)
	reqs = append(reqs, first)
	if err := first.Acquire(ctx); err != nil {
		return err
	}
	holder := pool.NewRequest(c, engine.PatternSessionSet)
	reqs = append(reqs, holder)
	if err := holder.Acquire(ctx); err != nil {
		return err
	}
	for _, step := range []func(context.Context) error{first.Scope, first.Query, first.Release} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	aPID := rorRequestPID(env, first.Seq)
	afterA := rorConnSetting(env, "app", aPID)
	hooks := "and the pool's AfterRelease hook ran"
	if variant == rorNone || variant == rorCheck {
		hooks = "with no reset on release"
	}
	env.Tracker().Note(fmt.Sprintf("After tenant %s's session-set request was released (%s), backend %d %s.",
		a.Name, hooks, aPID, engine.DescribeSetting(env.Sandbox, afterA, "reported")))

	forgot := pool.NewRequest(b, engine.PatternForgot)
	reqs = append(reqs, forgot)
	if err := forgot.Acquire(ctx); err != nil {
		return err
	}
	if variant == rorCheck {
		if err := rorShowRefusals(ctx, env, g, forgot); err != nil {
			return err
		}
	}
	if err := rorPlayRest(ctx, env, forgot); err != nil {
		return err
	}
	if variant == rorDiscard {
		// Only the forgetful request's backend is idle: the retry gets it.
		retry := pool.NewRequest(b, engine.PatternForgot)
		reqs = append(reqs, retry)
		if err := retry.Acquire(ctx); err != nil {
			return err
		}
		if err := rorPlayRest(ctx, env, retry); err != nil {
			return err
		}
		rorNoteRetry(env, forgot.Seq, retry.Seq)
	}
	for _, step := range []func(context.Context) error{holder.Scope, holder.Query, holder.Release} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	summarize(env)
	if err := env.Step(ctx, fmt.Sprintf("Now the cost: %d extra requests per pool at full speed, on a one-connection pool without any guard and on one with the %s guard.", iterations, variant)); err != nil {
		return err
	}
	if err := rorMeasure(ctx, env, variant, iterations); err != nil {
		return err
	}
	return env.Step(ctx, "Done. The request log shows which backend each request ran on and what it saw; the metrics and timings show what the guard costs per request.")
}

// rorGiveBack releases the connections the requests still hold, without
// pacing (the run is over).
func rorGiveBack(reqs *[]*engine.Request) {
	for _, r := range *reqs {
		r.Abandon()
	}
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
		row := rorRequestRow(env, r.Seq)
		if row.SQLState == "26000" {
			env.Tracker().UpdateRequest(r.Seq, func(row *engine.RequestRow) {
				row.Why = "DISCARD ALL on release deallocated every prepared statement on this backend; pgx still had this query in its statement cache and sent it by name, so the server no longer knew it."
			})
		}
		narration := fmt.Sprintf("%s failed on backend %d: %s", r.Label(), r.PID(), err)
		if row.SQLState != "" && !strings.Contains(err.Error(), row.SQLState) {
			narration += " (SQLSTATE " + row.SQLState + ")"
		}
		if err := env.Step(ctx, narration); err != nil {
			return err
		}
	}
	return r.Release(ctx)
}

// rorShowRefusals narrates the connections PrepareConn refused while r was
// acquiring: each refused backend's box disappears, the server confirms the
// backend is gone, and r holds a new backend.
func rorShowRefusals(ctx context.Context, env *engine.Env, g *rorGuard, r *engine.Request) error {
	refused := g.takeRefused()
	if len(refused) == 0 {
		return env.Step(ctx, fmt.Sprintf("PrepareConn accepted backend %d for %s: it held no tenant.", r.PID(), r.Label()))
	}
	for _, rf := range refused {
		rorWaitConnGone(ctx, env, "app", rf.PID)
		gone, err := rorBackendGone(ctx, env, rf.PID)
		server := ""
		switch {
		case err != nil:
			server = " (could not ask the server: " + err.Error() + ")"
		case gone:
			server = "; pg_stat_activity no longer lists it"
		default:
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

// rorWaitConnGone waits (up to 2 s) until the connection with pid is no longer
// shown in pool.
func rorWaitConnGone(ctx context.Context, env *engine.Env, pool string, pid uint32) {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		st := env.Tracker().Snapshot()
		found := false
		for _, c := range st.Connections {
			if c.Pool == pool && c.PID == pid {
				found = true
			}
		}
		if !found {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// rorBackendGone asks the server (on the lab's admin connection) whether the
// backend pid has left pg_stat_activity, waiting up to 2 s for it to exit.
func rorBackendGone(ctx context.Context, env *engine.Env, pid uint32) (bool, error) {
	if env.Sandbox.Admin == nil {
		return false, errors.New("no admin connection in this sandbox")
	}
	conn, release, err := env.Sandbox.Admin(ctx)
	if err != nil {
		return false, err
	}
	defer release()
	deadline := time.Now().Add(2 * time.Second)
	for {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, int32(pid)).Scan(&n); err != nil {
			return false, err
		}
		if n == 0 {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// rorRequestRow returns the request row seq as the tracker holds it now.
func rorRequestRow(env *engine.Env, seq int) engine.RequestRow {
	st := env.Tracker().Snapshot()
	for _, r := range st.Requests {
		if r.Seq == seq {
			return r
		}
	}
	return engine.RequestRow{}
}

// rorRequestPID returns the backend PID request seq ran on.
func rorRequestPID(env *engine.Env, seq int) uint32 { return rorRequestRow(env, seq).PID }

// rorConnSetting returns the tenant setting last read on the backend pid of
// pool.
func rorConnSetting(env *engine.Env, pool string, pid uint32) *string {
	st := env.Tracker().Snapshot()
	for _, c := range st.Connections {
		if c.Pool == pool && c.PID == pid {
			return c.Tenant
		}
	}
	return nil
}

// rorNoteRetry notes whether the request after the DISCARD ALL failure worked
// on the same backend.
func rorNoteRetry(env *engine.Env, failedSeq, retrySeq int) {
	f, r := rorRequestRow(env, failedSeq), rorRequestRow(env, retrySeq)
	if f.Error == "" {
		return
	}
	if r.Error == "" && r.PID == f.PID {
		env.Tracker().Note(fmt.Sprintf("pgx v5 dropped the failed statement from its cache: request #%d ran the same query on the same backend %d and worked (%d rows), because it was prepared again.", r.Seq, r.PID, r.Rows))
	}
}

// rorTimedRun is what the timed requests of one pool measured.
type rorTimedRun struct {
	cycleUS     []float64 // acquire (after the previous release's hooks) to release
	failed      int
	firstErr    error
	alternating bool // no two requests in a row failed, and at least one did
	lastFailed  bool
	leaks       int
	requests    int
}

// rorMeasure times iterations extra requests on a one-connection pool
// without a guard and on one with the variant's guard, at full speed, and
// records the medians, their ratio and the hook's own time.
func rorMeasure(ctx context.Context, env *engine.Env, variant string, iterations int) error {
	bare, err := env.OpenPool(ctx, engine.PoolOptions{Name: "timing: no guard", MaxConns: 1, MinConns: 1})
	if err != nil {
		return err
	}
	var guarded *engine.Pool
	var g *rorGuard
	if variant != rorNone {
		g = newRorGuard(variant, env)
		guarded, err = env.OpenPool(ctx, engine.PoolOptions{Name: "timing: " + variant, MaxConns: 1, MinConns: 1, Configure: g.configure})
		if err != nil {
			return err
		}
		rorWaitPoolIdle(ctx, guarded, 5*time.Second)
		g.takeTimes()
		g.takeRefused()
	}
	rorWaitPoolIdle(ctx, bare, 5*time.Second)
	without := rorTimedRun{alternating: true}
	with := rorTimedRun{alternating: true}
	// Short blocks on each pool in turn (the order swapped every block), so
	// that a change of the machine's speed weighs on both sides alike.
	for done, block := 0, 0; done < iterations; block++ {
		n := min(rorBlock, iterations-done)
		order := []*engine.Pool{bare, guarded}
		if block%2 == 1 {
			order = []*engine.Pool{guarded, bare}
		}
		for _, p := range order {
			switch {
			case p == nil:
			case p == bare:
				if err := rorTimeBlock(ctx, env, p, n, &without); err != nil {
					return err
				}
			default:
				if err := rorTimeBlock(ctx, env, p, n, &with); err != nil {
					return err
				}
			}
		}
		done += n
	}
	tr := env.Tracker()
	noGuard := rorSummarize(without.cycleUS)
	tr.SetTiming("request, no guard", noGuard)
	tr.SetMetric("request without guard (median)", rorFormatUS(noGuard.MedianUS), noGuard.MedianUS)
	rorChart(env, "no guard", without.cycleUS)
	if guarded == nil {
		tr.Note(fmt.Sprintf("Timed %d extra requests (batch-local scope and query, from acquire, which waits for the previous release, to release) on a pool without guard: median %s, p99 %s. This variant has no guard to compare.",
			without.requests, rorFormatUS(noGuard.MedianUS), rorFormatUS(noGuard.P99US)))
		return nil
	}
	withGuard := rorSummarize(with.cycleUS)
	hook := rorSummarize(g.takeTimes())
	tr.SetTiming("request, "+variant, withGuard)
	tr.SetTiming(variant+" hook alone", hook)
	rorChart(env, variant, with.cycleUS)
	ratio := 0.0
	if noGuard.MedianUS > 0 {
		ratio = withGuard.MedianUS / noGuard.MedianUS
		tr.SetRatio(variant+" / no guard", ratio)
	}
	extra := math.Round((withGuard.MedianUS-noGuard.MedianUS)*10) / 10
	tr.SetMetric("request with "+variant+" (median)", rorFormatUS(withGuard.MedianUS), withGuard.MedianUS)
	tr.SetMetric(rorHookLabel(variant)+" alone (median)", rorFormatUS(hook.MedianUS), hook.MedianUS)
	tr.SetMetric("extra per request (median)", rorFormatUS(extra), extra)
	tr.SetMetric("with / without", fmt.Sprintf("%.2f×", ratio), ratio)
	tr.Note(fmt.Sprintf("Timed %d extra requests per pool, in turn (batch-local scope and query, in blocks of 10 on each pool in turn; each time runs from acquire, which on a one-connection pool waits for the previous release's hooks, to release; both pools also run rlslab's own identity read on release): median %s without guard, %s with %s (%.2f×, %s more); the hook alone took a median %s (p99 %s) over %d runs.",
		with.requests, rorFormatUS(noGuard.MedianUS), rorFormatUS(withGuard.MedianUS), variant, ratio, rorFormatUS(extra), rorFormatUS(hook.MedianUS), rorFormatUS(hook.P99US), hook.N))
	if with.failed > 0 || without.failed > 0 {
		tr.SetMetric("timed requests that failed ("+variant+")", fmt.Sprintf("%d of %d", with.failed, with.requests), float64(with.failed))
		msg := fmt.Sprintf("%d of %d timed requests failed on the %s pool, %d of %d on the pool without guard.", with.failed, with.requests, variant, without.failed, without.requests)
		if with.failed > 0 && with.alternating {
			msg += " No two failed in a row: each failure drops that statement from pgx's cache, the next request prepares it again, and the next DISCARD ALL deallocates it again."
		}
		if with.firstErr != nil {
			msg += " First error: " + rorErrorWithCode(with.firstErr)
		}
		tr.Note(msg)
	}
	if with.leaks > 0 || without.leaks > 0 {
		tr.Note(fmt.Sprintf("%d timed requests on the %s pool and %d without guard got another tenant's rows.", with.leaks, variant, without.leaks))
	}
	if variant == rorCheck {
		n := len(g.takeRefused())
		tr.SetMetric("connections refused while timing", fmt.Sprintf("%d", n), float64(n))
	}
	return nil
}

// rorBlock is how many timed requests run on one pool before the other
// pool's turn.
const rorBlock = 10

// rorTimeBlock runs n requests on the one-connection pool p, one after the
// other, each scoped with a batch-local set_config and reading ObserveQuery,
// and adds what it measured to out. A request's time runs from its acquire,
// which waits until the previous request's release hooks are done, to its
// release: so each time holds one request and one round of release hooks.
// The first request of a block is not timed (nothing was released before
// it).
func rorTimeBlock(ctx context.Context, env *engine.Env, p *engine.Pool, n int, out *rorTimedRun) error {
	tenants := env.Sandbox.Tenants
	for i := range n {
		t := tenants[(out.requests)%len(tenants)]
		start := time.Now()
		c, err := p.Pool.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("timing on pool %q: %w", p.Name(), err)
		}
		b := &pgx.Batch{}
		b.Queue(engine.SetLocalSQL, t.Setting())
		b.Queue(engine.ObserveQuery)
		res := c.SendBatch(ctx, b)
		var (
			pid     int32
			seen    *string
			role    string
			visible []int32
		)
		_, err = res.Exec()
		if err == nil {
			err = res.QueryRow().Scan(&pid, &seen, &role, &visible)
		}
		if cerr := res.Close(); err == nil {
			err = cerr
		}
		c.Release()
		took := time.Since(start)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		out.requests++
		if err != nil {
			out.failed++
			if out.firstErr == nil {
				out.firstErr = err
			}
			if out.lastFailed {
				out.alternating = false
			}
		}
		out.lastFailed = err != nil
		for _, v := range visible {
			if int(v) != t.ID {
				out.leaks++
				break
			}
		}
		if i > 0 {
			out.cycleUS = append(out.cycleUS, float64(took.Nanoseconds())/1e3)
		}
	}
	rorWaitPoolIdle(ctx, p, 5*time.Second)
	return nil
}

// rorWaitPoolIdle waits (up to limit) until no connection of p is acquired
// or being opened: release hooks run in their own goroutine.
func rorWaitPoolIdle(ctx context.Context, p *engine.Pool, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		s := p.Stat()
		if s.AcquiredConns() == 0 && s.ConstructingConns() == 0 {
			return
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// rorChart draws at most ~150 points of the request times of one pool.
func rorChart(env *engine.Env, line string, us []float64) {
	step := max(1, len(us)/150)
	for i := 0; i < len(us); i += step {
		env.Tracker().AddPoint("Request time, acquire to release", "request", "µs", line, float64(i+1), math.Round(us[i]))
	}
}

// rorSummarize returns the median and 99th percentile of values in µs.
func rorSummarize(us []float64) engine.Timing {
	if len(us) == 0 {
		return engine.Timing{}
	}
	s := append([]float64(nil), us...)
	sort.Float64s(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	p99 := s[min(len(s)-1, int(math.Ceil(0.99*float64(len(s))))-1)]
	return engine.Timing{MedianUS: math.Round(med*10) / 10, P99US: math.Round(p99*10) / 10, N: len(s)}
}

// rorFormatUS formats a duration in µs for a metric.
func rorFormatUS(us float64) string { return fmt.Sprintf("%.0f µs", us) }

// rorHookLabel names the guard's hook for a metric.
func rorHookLabel(variant string) string {
	if variant == rorCheck {
		return "PrepareConn check"
	}
	return "AfterRelease " + rorResetSQL[variant]
}

// rorErrorWithCode returns err's text with its SQLSTATE when the server sent
// one and the text does not already say it.
func rorErrorWithCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && !strings.Contains(err.Error(), pe.Code) {
		return err.Error() + " [SQLSTATE " + pe.Code + "]"
	}
	return err.Error()
}
