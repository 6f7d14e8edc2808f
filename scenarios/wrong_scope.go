package scenarios

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Variants of wrong-scope (stable names: tools and lessons rely on them).
const (
	WrongScopeGlobal      = "global"
	WrongScopeContext     = "context"
	WrongScopeConnPerUser = "conn-per-user"
)

// WrongScope returns the wrong-scope scenario: where the application keeps
// the tenant id between "read it from the request" and "scope the query".
// A field shared by every request is overwritten by a concurrent request;
// the request's context.Context is not; and a connection held per user
// turns the pool into a per-user resource that runs out.
func WrongScope() *engine.Scenario {
	race := func(name, summary string) engine.Variant {
		return engine.Variant{Name: name, Summary: summary, Conns: engine.Fixed(2),
			Run: func(ctx context.Context, env *engine.Env) error { return runScopeRace(ctx, env, name) }}
	}
	return &engine.Scenario{
		ID:      "wrong-scope",
		Pacing:  engine.PacingLive,
		LiveWhy: "requests wait for connections with a timeout while others hold them across frames, and the wait is charted over time",
		Title:   "Where the tenant id lives: a shared field, the request's context, a connection per user",
		Variants: []engine.Variant{
			race(WrongScopeGlobal, "Each handler writes its tenant into one field shared by all requests and reads it back before its query."),
			race(WrongScopeContext, "The tenant travels in each request's context.Context (context.WithValue)."),
			{Name: WrongScopeConnPerUser, Run: runConnPerUser, Conns: func(p engine.Params, sb engine.Sandbox) int { return perUserPoolSize(p, sb) },
				Summary: "Each logged-in user keeps one pooled connection, scoped once at login; more users log in than the pool has connections."},
		},
		Params: []engine.Param{
			{Name: "delay_ms", Summary: "milliseconds a handler works between storing the tenant and its query (global, context)", Min: 0, Max: 2000, Default: 300},
			{Name: "users", Summary: "users who log in (conn-per-user)", Min: 2, Max: 50, Default: 6},
			{Name: "pool", Summary: "connections in the pool (conn-per-user)", Min: 2, Max: 8, Default: 3},
			{Name: "acquire_timeout_ms", Summary: "how long one acquire may wait for a connection (conn-per-user)", Min: 100, Max: 5000, Default: 1000},
		},
		MinTenants: 3,
	}
}

// perUserPoolSize is the conn-per-user pool's size: the pool parameter, kept
// below the app role's CONNECTION LIMIT.
func perUserPoolSize(p engine.Params, sb engine.Sandbox) int {
	if size := p.Get("pool"); sb.ConnLimit <= 0 || size <= sb.ConnLimit-1 {
		return size
	}
	return max(sb.ConnLimit-1, 1)
}

// sharedTenant is the "global" scope: one value for the whole application,
// like a package-level variable or a field of a singleton service. The mutex
// makes it free of data races: the bug is not a race detector's, it is that
// there is one slot for many requests.
type sharedTenant struct {
	mu     sync.Mutex
	tenant engine.Tenant
}

func (s *sharedTenant) set(t engine.Tenant) {
	s.mu.Lock()
	s.tenant = t
	s.mu.Unlock()
}

func (s *sharedTenant) get() engine.Tenant {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tenant
}

// tenantKey is the context key of the "context" scope.
type tenantKey struct{}

// runScopeRace plays two concurrent requests whose handlers store the tenant
// (in a shared field, or in their context), work for delay_ms, and then
// scope a transaction with whatever tenant they read back.
func runScopeRace(ctx context.Context, env *engine.Env, variant string) error {
	a, b := env.Sandbox.Tenants[0], env.Sandbox.Tenants[1]
	delay := time.Duration(env.Params.Get("delay_ms")) * time.Millisecond
	global := variant == WrongScopeGlobal
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 2, MinConns: 2})
	if err != nil {
		return err
	}
	where, from := "each request's own context.Context, with context.WithValue", "its context"
	if global {
		where, from = "a field of the app's service struct, shared by every request (the same as a package-level variable)", "the shared field"
	}
	if err := env.Step(ctx, fmt.Sprintf("The pool has opened its 2 connections. Two requests arrive close together; each handler reads its tenant from the request and keeps it in %s.", where)); err != nil {
		return err
	}
	shared := &sharedTenant{}
	reqs := []*engine.Request{pool.NewRequest(a, engine.PatternTxLocal), pool.NewRequest(b, engine.PatternTxLocal)}
	ctxs := []context.Context{ctx, ctx}
	defer func() {
		for _, r := range reqs {
			r.Abandon()
		}
	}()
	// Both handlers store their tenant before either queries: request B
	// arrives while request A's handler is still working.
	for i, r := range reqs {
		narration := fmt.Sprintf("%s: the handler stores tenant %s in its request's context.", r.Label(), r.Tenant.Name)
		if global {
			shared.set(r.Tenant)
			env.Tracker().AddFieldReading(engine.FieldReading{Value: shared.get().Setting(), Seq: r.Seq, Wrote: true})
			narration = fmt.Sprintf("%s: the handler stores tenant %s in the shared field; it now says %s.", r.Label(), r.Tenant.Name, shared.get().Name)
		} else {
			ctxs[i] = context.WithValue(ctxs[i], tenantKey{}, r.Tenant)
		}
		r.SetPhase("tenant stored")
		if err := env.Step(ctx, narration); err != nil {
			return err
		}
	}
	if delay > 0 {
		env.Tracker().Narrate(fmt.Sprintf("Both handlers do other work for %d ms before they query (a call to another service, a cache lookup).", delay.Milliseconds()))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
	leaks := 0
	for i, r := range reqs {
		t, ok := shared.get(), true
		if global {
			env.Tracker().AddFieldReading(engine.FieldReading{Value: t.Setting(), Seq: r.Seq})
		} else if t, ok = ctxs[i].Value(tenantKey{}).(engine.Tenant); !ok {
			return fmt.Errorf("%s: no tenant in the request's context", r.Label())
		}
		if err := r.Acquire(ctx); err != nil {
			return err
		}
		tx, err := r.Begin(ctx)
		if err == nil {
			_, err = tx.Exec(ctx, engine.SetLocalSQL, t.Setting())
		}
		if err != nil {
			r.Fail(err)
			return err
		}
		r.SetPhase("scoped")
		mark := ""
		if t.ID != r.Tenant.ID {
			mark = ", not " + r.Tenant.Name
		}
		if err := env.Step(ctx, fmt.Sprintf("%s reads the tenant from %s: %s%s. It runs BEGIN; set_config('app.current_tenant', '%s', true) on backend %d.",
			r.Label(), from, t.Name, mark, t.Setting(), r.PID())); err != nil {
			return err
		}
		if err = r.Observe(ctx, tx); err == nil {
			err = r.Commit(ctx)
		}
		if err != nil {
			r.Fail(err)
			return err
		}
		r.Update(func(row *engine.RequestRow) {
			row.Phase = "queried"
			switch {
			case row.Leak:
				row.Why = fmt.Sprintf("LEAK: the handler read tenant %s from %s (a later request wrote it there), scoped its transaction with '%s', and RLS returned %s's rows to %s.",
					t.Name, from, t.Setting(), t.Name, r.Tenant.Name)
			case row.Error == "":
				row.Why = fmt.Sprintf("%d rows, all %s's own: the tenant came from %s.", row.Rows, r.Tenant.Name, from)
			}
		})
		if err := env.Step(ctx, r.Verdict()); err != nil {
			return err
		}
		if err := r.Release(ctx); err != nil {
			return err
		}
		row := r.Row()
		if row.Leak {
			leaks++
		}
		env.Tracker().Note(fmt.Sprintf("Request #%d (%s, %s scope) read tenant %s back, scoped backend %d with '%s' and got %d rows, %d of another tenant.",
			row.Seq, r.Tenant.Name, variant, t.Name, row.PID, t.Setting(), row.Rows, row.ForeignRows))
	}
	verdict := "Each request read its own tenant back from where it kept it."
	if leaks > 0 {
		verdict = "The shared field holds one tenant: the last one written."
	}
	return env.Conclude(ctx, verdict)
}

// acquireWithin acquires a connection for r, giving up after timeout.
func acquireWithin(ctx context.Context, r *engine.Request, timeout time.Duration) error {
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := r.AcquireQuiet(actx)
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("no connection within %d ms: %w", timeout.Milliseconds(), err)
		r.Fail(err)
	}
	return err
}

// runConnPerUser plays users who each keep a pooled connection for as long
// as they are logged in, then the same users with a connection per request.
func runConnPerUser(ctx context.Context, env *engine.Env) error {
	users, size := env.Params.Get("users"), perUserPoolSize(env.Params, env.Sandbox)
	timeout := time.Duration(env.Params.Get("acquire_timeout_ms")) * time.Millisecond
	tr := env.Tracker()
	if size < env.Params.Get("pool") {
		tr.Note(fmt.Sprintf("The pool was cut to %d connections: the lab's app role has CONNECTION LIMIT %d.", size, env.Sandbox.ConnLimit))
	}
	tenants := env.Sandbox.Tenants
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: int32(size), MinConns: int32(size),
		Configure: func(c *pgxpool.Config) { c.MaxConnIdleTime = time.Hour }})
	if err != nil {
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("The pool has opened its %d connections. %d users will log in; the app keeps one pooled connection per logged-in user, scoped once at login with a session-level set_config.", size, users)); err != nil {
		return err
	}
	var reqs []*engine.Request
	defer func() {
		for _, r := range reqs {
			r.Abandon()
		}
	}()
	user := func(i int, pattern string) *engine.Request {
		r := pool.NewRequest(tenants[i%len(tenants)], pattern)
		reqs = append(reqs, r)
		return r
	}
	// The first users log in one after another and keep their connection.
	var held []*engine.Request
	for i := 0; i < min(users, size); i++ {
		r := user(i, WrongScopeConnPerUser)
		if err := acquireWithin(ctx, r, timeout); err != nil {
			return err
		}
		if err := env.Step(ctx, fmt.Sprintf("User %d (%s) logs in: %s takes backend %d and keeps it for the whole login.", i+1, r.Tenant.Name, r.Label(), r.PID())); err != nil {
			return err
		}
		_, err := r.Conn().Exec(ctx, engine.SetSessionSQL, r.Tenant.Setting())
		if err == nil {
			err = r.Observe(ctx, r.Conn())
		}
		if err != nil {
			r.Fail(err)
			return err
		}
		r.SetPhase("held")
		held = append(held, r)
		if err := env.Step(ctx, fmt.Sprintf("User %d's connection is scoped once, set_config('app.current_tenant', '%s', false), and queried: %s. The connection stays with the user, idle between requests.", i+1, r.Tenant.Setting(), r.Row().Why)); err != nil {
			return err
		}
	}
	var serverIdle, serverAll int
	err = held[0].Conn().QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'idle'), count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND usename = current_user AND pid <> pg_backend_pid()`).Scan(&serverIdle, &serverAll)
	if err != nil {
		return err
	}
	tr.Note(fmt.Sprintf("With %d users logged in, the pool counts %d of %d connections acquired; on the server, %d of the other %d app backends are idle (the users are between requests).",
		len(held), pool.Stat().AcquiredConns(), size, serverIdle, serverAll))
	tr.SetMetric("held connections idle on the server", fmt.Sprintf("%d of %d", serverIdle, serverAll), float64(serverIdle))

	// The other users log in at the same moment and wait for a connection.
	var late []*engine.Request
	for i := len(held); i < users; i++ {
		late = append(late, user(i, WrongScopeConnPerUser))
	}
	timedOut, lateServed, err := waitForHeldPool(ctx, env, pool, late, len(held), size, timeout)
	if err != nil {
		return err
	}

	// Everybody logs out; then the same users each send a request with the
	// tenant in its context and a connection only for one transaction.
	for _, r := range append(held, late...) {
		if r.Conn() != nil {
			if err := r.Release(ctx); err != nil {
				return err
			}
		}
	}
	if err := env.Step(ctx, fmt.Sprintf("The same %d users again, now with the tenant in each request's context: each request acquires a connection for one transaction (BEGIN; set_config(..., true); query; COMMIT) and gives it back.", users)); err != nil {
		return err
	}
	again := make([]*engine.Request, users)
	waits := make([]time.Duration, users)
	for i := range again {
		again[i] = user(i, WrongScopeContext)
	}
	var wg sync.WaitGroup
	for i, r := range again {
		wg.Go(func() {
			start := time.Now()
			if acquireWithin(ctx, r, timeout) != nil {
				return
			}
			waits[i] = time.Since(start)
			defer r.ReleaseQuiet(ctx)
			tx, err := r.Begin(ctx)
			if err == nil {
				_, err = tx.Exec(ctx, engine.SetLocalSQL, r.Tenant.Setting())
			}
			if err == nil {
				err = r.Observe(ctx, tx)
			}
			if err != nil {
				r.Fail(err)
				return
			}
			_ = r.Commit(ctx)
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	served, leaks := 0, 0
	for _, r := range again {
		row := r.Row()
		if row.Error == "" && !row.Leak && row.Rows > 0 {
			served++
		}
		if row.Leak {
			leaks++
		}
	}
	longest := float64(slices.Max(waits).Microseconds()) / 1000
	tr.SetMetric("per-request: users served", fmt.Sprintf("%d of %d", served, users), float64(served))
	tr.SetMetric("per-request: longest acquire wait", fmt.Sprintf("%.1f ms", longest), longest)
	tr.Note(fmt.Sprintf("With a connection per request instead of per user, the same %d users were served by %d connections: %d of %d got their own rows, %d leaks, the longest acquire waited %.1f ms.",
		users, size, served, users, leaks, longest))
	tr.Measured(fmt.Sprintf("Held per user, %d connections served %d of %d users and turned %d away; lent per request, they served %d of %d.", size, len(held)+lateServed, users, timedOut, served, users), false)
	return env.Conclude(ctx, "")
}

// waitForHeldPool lets the late users try to acquire at once while held
// users keep every connection, charting the pool every 20 ms until each
// acquire got a connection or gave up after timeout.
func waitForHeldPool(ctx context.Context, env *engine.Env, pool *engine.Pool, late []*engine.Request, held, size int, timeout time.Duration) (timedOut, served int, err error) {
	if len(late) == 0 {
		return 0, 0, nil
	}
	if err := env.Step(ctx, fmt.Sprintf("%d more users log in at the same moment. Every connection is held by a logged-in user, so each of their acquires waits, for at most %d ms.", len(late), timeout.Milliseconds())); err != nil {
		return 0, 0, err
	}
	tr := env.Tracker()
	results := make([]error, len(late))
	pool.TakePeaks()
	var wg sync.WaitGroup
	for i, r := range late {
		wg.Go(func() { results[i] = acquireWithin(ctx, r, timeout) })
	}
	start := time.Now()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	// A chart of the waiting over time: sampled, the time series is the point.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for finished := false; !finished; {
		w := pool.Waiting()
		ms := float64(time.Since(start).Milliseconds())
		tr.AddPoint("Pool while users hold connections", "ms", "requests", "waiting in Acquire", ms, float64(w))
		tr.AddPoint("Pool while users hold connections", "ms", "requests", "connections acquired", ms, float64(pool.Stat().AcquiredConns()))
		env.Refresh(func(s *engine.State) {
			s.Narration = fmt.Sprintf("%d requests wait in Acquire (%d ms so far); the pool's %d connections are all held by logged-in users.", w, int(ms), size)
		})
		select {
		case <-done:
			finished = true
		case <-tick.C:
		}
	}
	if ctx.Err() != nil {
		return 0, 0, ctx.Err()
	}
	maxWaiting, _ := pool.TakePeaks()
	for i, err := range results {
		switch {
		case err == nil:
			served++
			late[i].SetPhase("held")
		case errors.Is(err, context.DeadlineExceeded):
			timedOut++
		default:
			return 0, 0, err
		}
	}
	stat := pool.Stat()
	tr.SetMetric("most requests waiting in Acquire", fmt.Sprint(maxWaiting), float64(maxWaiting))
	tr.SetMetric("acquires timed out", fmt.Sprintf("%d of %d", timedOut, len(late)), float64(timedOut))
	tr.SetMetric("pool: cancelled acquires (pgxpool.Stat)", fmt.Sprint(stat.CanceledAcquireCount()), float64(stat.CanceledAcquireCount()))
	tr.Note(fmt.Sprintf("%d users logged in while %d held every connection: up to %d requests waited in Acquire at once, and %d of them gave up after %d ms (context deadline exceeded); pgxpool counts %d cancelled acquires.",
		len(late), held, maxWaiting, timedOut, timeout.Milliseconds(), stat.CanceledAcquireCount()))
	return timedOut, served, env.Step(ctx, fmt.Sprintf("%d of %d late users got no connection within %d ms, while the %d connections sat idle in other users' sessions.", timedOut, len(late), timeout.Milliseconds(), held))
}
