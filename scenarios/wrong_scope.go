package scenarios

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Variants of wrong-scope (stable names: tools rely on them).
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
	return &engine.Scenario{
		ID:    "wrong-scope",
		Title: "Where the tenant id lives: a shared field, the request's context, a connection per user",
		Variants: withRun(runWrongScope, []engine.Variant{
			{Name: WrongScopeGlobal, Summary: "Each handler writes its tenant into one field shared by all requests and reads it back before its query: a concurrent request overwrites it."},
			{Name: WrongScopeContext, Summary: "The tenant travels in each request's context.Context (context.WithValue): each request reads its own."},
			{Name: WrongScopeConnPerUser, Summary: "Each logged-in user keeps one pooled connection, scoped once: with more users than connections, later users wait and their acquires time out."},
		}),
		Params: []engine.Param{
			{Name: "delay_ms", Summary: "milliseconds a handler works between storing the tenant and its query (global, context)", Min: 0, Max: 2000, Default: 300},
			{Name: "users", Summary: "users who log in (conn-per-user)", Min: 2, Max: 50, Default: 6},
			{Name: "pool", Summary: "connections in the pool (conn-per-user)", Min: 2, Max: 8, Default: 3},
			{Name: "acquire_timeout_ms", Summary: "how long one acquire may wait for a connection (conn-per-user)", Min: 100, Max: 5000, Default: 1000},
		},
	}
}

func runWrongScope(ctx context.Context, env *engine.Env, variant string) error {
	if len(env.Sandbox.Tenants) < 3 {
		return errors.New("wrong-scope needs three tenants in the sandbox")
	}
	switch variant {
	case WrongScopeGlobal, WrongScopeContext:
		return runScopeRace(ctx, env, variant)
	case WrongScopeConnPerUser:
		return runConnPerUser(ctx, env)
	}
	return fmt.Errorf("wrong-scope: unknown variant %q", variant)
}

// paramOr returns the named parameter, or def when the run has none (a run
// built without ParseParams).
func paramOr(env *engine.Env, name string, def int) int {
	if v, ok := env.Params[name]; ok {
		return v
	}
	return def
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

// withTenant returns ctx carrying t.
func withTenant(ctx context.Context, t engine.Tenant) context.Context {
	return context.WithValue(ctx, tenantKey{}, t)
}

// tenantFrom returns the tenant ctx carries.
func tenantFrom(ctx context.Context) (engine.Tenant, bool) {
	t, ok := ctx.Value(tenantKey{}).(engine.Tenant)
	return t, ok
}

// scopedRequest is one simulated HTTP request: its request-log row and its
// own context.
type scopedRequest struct {
	r   *engine.Request
	ctx context.Context
}

// dropConn gives back a request's connection without a frame (cleanup on
// the way out).
func dropConn(r *engine.Request) {
	r.Abandon()
}

// runScopeRace plays two concurrent requests whose handlers store the tenant
// (in a shared field, or in their context), work for delay_ms, and then
// scope a transaction with whatever tenant they read back.
func runScopeRace(ctx context.Context, env *engine.Env, variant string) error {
	a, b := env.Sandbox.Tenants[0], env.Sandbox.Tenants[1]
	delay := time.Duration(paramOr(env, "delay_ms", 300)) * time.Millisecond
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 2, MinConns: 2})
	if err != nil {
		return err
	}
	where := "a field of the app's service struct, shared by every request (the same as a package-level variable)"
	if variant == WrongScopeContext {
		where = "each request's own context.Context, with context.WithValue"
	}
	if err := env.Step(ctx, fmt.Sprintf("The pool has opened its 2 connections. Two requests arrive close together; each handler reads its tenant from the request and keeps it in %s.", where)); err != nil {
		return err
	}
	shared := &sharedTenant{}
	reqs := []*scopedRequest{{r: pool.NewRequest(a, variant), ctx: ctx}, {r: pool.NewRequest(b, variant), ctx: ctx}}
	defer func() {
		for _, q := range reqs {
			dropConn(q.r)
		}
	}()
	// Both handlers store their tenant before either queries: request B
	// arrives while request A's handler is still working.
	for _, q := range reqs {
		t := q.r.Tenant
		var narration string
		if variant == WrongScopeGlobal {
			shared.set(t)
			narration = fmt.Sprintf("%s: the handler stores tenant %s in the shared field; it now says %s.", q.r.Label(), t.Name, shared.get().Name)
		} else {
			q.ctx = withTenant(q.ctx, t)
			narration = fmt.Sprintf("%s: the handler stores tenant %s in its request's context.", q.r.Label(), t.Name)
		}
		q.r.SetPhase("tenant stored")
		if err := env.Step(ctx, narration); err != nil {
			return err
		}
	}
	if delay > 0 {
		env.Tracker().Narrate(fmt.Sprintf("Both handlers do other work for %d ms before they query (a call to another service, a cache lookup).", delay.Milliseconds()))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	read := make([]engine.Tenant, len(reqs))
	for i, q := range reqs {
		r := q.r
		var t engine.Tenant
		var from string
		if variant == WrongScopeGlobal {
			t, from = shared.get(), "the shared field"
		} else {
			var ok bool
			if t, ok = tenantFrom(q.ctx); !ok {
				return fmt.Errorf("%s: no tenant in the request's context", r.Label())
			}
			from = "its context"
		}
		read[i] = t
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
			mark = fmt.Sprintf(", not %s", r.Tenant.Name)
		}
		if err := env.Step(ctx, fmt.Sprintf("%s reads the tenant from %s: %s%s. It runs BEGIN; set_config('app.current_tenant', '%s', true) on backend %d.",
			r.Label(), from, t.Name, mark, t.Setting(), r.PID())); err != nil {
			return err
		}
		err = r.Observe(ctx, r.Tx())
		if err == nil {
			err = r.Commit(ctx)
		}
		if err != nil {
			r.Fail(err)
			return err
		}
		r.SetPhase("queried")
		scopeWhy(env, r, t, from)
		if err := env.Step(ctx, r.Verdict()); err != nil {
			return err
		}
		if err := r.Release(ctx); err != nil {
			return err
		}
	}
	st := env.Tracker().Snapshot()
	leaks := 0
	for i, q := range reqs {
		for _, row := range st.Requests {
			if row.Seq != q.r.Seq {
				continue
			}
			if row.Leak {
				leaks++
			}
			env.Tracker().Note(fmt.Sprintf("Request #%d (%s, %s scope) read tenant %s back, scoped backend %d with '%s' and got %d rows, %d of another tenant.",
				row.Seq, q.r.Tenant.Name, variant, read[i].Name, row.PID, read[i].Setting(), row.Rows, row.ForeignRows))
		}
	}
	verdict := "each request read its own tenant back and got only its own rows."
	if leaks > 0 {
		verdict = fmt.Sprintf("%d request(s) got another tenant's rows: the shared field holds one tenant, the last one written.", leaks)
	}
	return env.Step(ctx, "Done: "+verdict)
}

// scopeWhy rewrites the why of a scope-race request to say where its tenant
// came from.
func scopeWhy(env *engine.Env, r *engine.Request, used engine.Tenant, from string) {
	env.Tracker().UpdateRequest(r.Seq, func(row *engine.RequestRow) {
		switch {
		case row.Leak:
			row.Why = fmt.Sprintf("LEAK: the handler read tenant %s from %s (a later request wrote it there), scoped its transaction with '%s', and RLS returned %s's rows to %s.",
				used.Name, from, used.Setting(), used.Name, r.Tenant.Name)
		case row.Error == "":
			row.Why = fmt.Sprintf("%d rows, all %s's own: the tenant came from %s.", row.Rows, r.Tenant.Name, from)
		}
	})
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
	users := paramOr(env, "users", 6)
	size := paramOr(env, "pool", 3)
	timeout := time.Duration(paramOr(env, "acquire_timeout_ms", 1000)) * time.Millisecond
	if limit := env.Sandbox.ConnLimit; limit > 0 && size > limit-1 {
		size = max(limit-1, 1)
		env.Tracker().Note(fmt.Sprintf("The pool was cut to %d connections: the lab's app role has CONNECTION LIMIT %d.", size, limit))
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
	reqs := make([]*engine.Request, 0, users*2)
	defer func() {
		for _, r := range reqs {
			dropConn(r)
		}
	}()
	tr := env.Tracker()
	held := []*engine.Request{}
	// The first users log in one after another and keep their connection.
	for i := 0; i < users && i < size; i++ {
		r := pool.NewRequest(tenants[i%len(tenants)], WrongScopeConnPerUser)
		reqs = append(reqs, r)
		if err := acquireWithin(ctx, r, timeout); err != nil {
			return err
		}
		if err := env.Step(ctx, fmt.Sprintf("User %d (%s) logs in: %s takes backend %d and keeps it for the whole login.", i+1, r.Tenant.Name, r.Label(), r.PID())); err != nil {
			return err
		}
		if _, err := r.Conn().Exec(ctx, engine.SetSessionSQL, r.Tenant.Setting()); err != nil {
			r.Fail(err)
			return err
		}
		if err := r.Observe(ctx, r.Conn()); err != nil {
			r.Fail(err)
			return err
		}
		r.SetPhase("held")
		held = append(held, r)
		if err := env.Step(ctx, fmt.Sprintf("User %d's connection is scoped once, set_config('app.current_tenant', '%s', false), and queried: %s. The connection stays with the user, idle between requests.", i+1, r.Tenant.Setting(), whyOf(env, r.Seq))); err != nil {
			return err
		}
	}
	serverIdle, serverAll := 0, 0
	if len(held) > 0 {
		err := held[0].Conn().QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'idle'), count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND usename = current_user AND pid <> pg_backend_pid()`).Scan(&serverIdle, &serverAll)
		if err != nil {
			return err
		}
		tr.Note(fmt.Sprintf("With %d users logged in, the pool counts %d of %d connections acquired; on the server, %d of the other %d app backends are idle (the users are between requests).",
			len(held), pool.Stat().AcquiredConns(), size, serverIdle, serverAll))
		tr.SetMetric("held connections idle on the server", fmt.Sprintf("%d of %d", serverIdle, serverAll), float64(serverIdle))
	}

	// The other users log in at the same moment and wait for a connection.
	late := make([]*engine.Request, 0, users)
	for i := len(held); i < users; i++ {
		r := pool.NewRequest(tenants[i%len(tenants)], WrongScopeConnPerUser)
		reqs = append(reqs, r)
		late = append(late, r)
	}
	timedOut, lateServed := 0, 0
	maxWaiting := int32(0)
	if len(late) > 0 {
		if err := env.Step(ctx, fmt.Sprintf("%d more users log in at the same moment. Every connection is held by a logged-in user, so each of their acquires waits, for at most %d ms.", len(late), timeout.Milliseconds())); err != nil {
			return err
		}
		results := make([]error, len(late))
		var wg sync.WaitGroup
		for i, r := range late {
			wg.Go(func() { results[i] = acquireWithin(ctx, r, timeout) })
		}
		start := time.Now()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		tick := time.NewTicker(20 * time.Millisecond)
	sample:
		for {
			w := pool.Waiting()
			maxWaiting = max(maxWaiting, w)
			ms := float64(time.Since(start).Milliseconds())
			tr.AddPoint("Pool while users hold connections", "ms", "requests", "waiting in Acquire", ms, float64(w))
			tr.AddPoint("Pool while users hold connections", "ms", "requests", "connections acquired", ms, float64(pool.Stat().AcquiredConns()))
			env.Refresh(func(s *engine.State) {
				s.Narration = fmt.Sprintf("%d requests wait in Acquire (%d ms so far); the pool's %d connections are all held by logged-in users.", w, int(ms), size)
			})
			select {
			case <-done:
				break sample
			case <-ctx.Done():
				tick.Stop()
				<-done
				return ctx.Err()
			case <-tick.C:
			}
		}
		tick.Stop()
		for i, err := range results {
			switch {
			case err == nil:
				lateServed++
				late[i].SetPhase("held")
			case errors.Is(err, context.DeadlineExceeded):
				timedOut++
			default:
				return err
			}
		}
		stat := pool.Stat()
		tr.SetMetric("most requests waiting in Acquire", fmt.Sprint(maxWaiting), float64(maxWaiting))
		tr.SetMetric("acquires timed out", fmt.Sprintf("%d of %d", timedOut, len(late)), float64(timedOut))
		tr.SetMetric("pool: cancelled acquires (pgxpool.Stat)", fmt.Sprint(stat.CanceledAcquireCount()), float64(stat.CanceledAcquireCount()))
		tr.Note(fmt.Sprintf("%d users logged in while %d held every connection: up to %d requests waited in Acquire at once, and %d of them gave up after %d ms (context deadline exceeded); pgxpool counts %d cancelled acquires.",
			len(late), len(held), maxWaiting, timedOut, timeout.Milliseconds(), stat.CanceledAcquireCount()))
		if err := env.Step(ctx, fmt.Sprintf("%d of %d late users got no connection within %d ms, while the %d connections sat idle in other users' sessions.", timedOut, len(late), timeout.Milliseconds(), len(held))); err != nil {
			return err
		}
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
	for i := range again {
		again[i] = pool.NewRequest(tenants[i%len(tenants)], WrongScopeContext)
		reqs = append(reqs, again[i])
	}
	waits := make([]time.Duration, users)
	results := make([]error, users)
	var wg sync.WaitGroup
	for i, r := range again {
		wg.Go(func() {
			start := time.Now()
			if err := acquireWithin(ctx, r, timeout); err != nil {
				results[i] = err
				return
			}
			waits[i] = time.Since(start)
			results[i] = txOnHeld(ctx, r)
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	served, leaks := 0, 0
	st := env.Tracker().Snapshot()
	for i, r := range again {
		if results[i] != nil {
			continue
		}
		for _, row := range st.Requests {
			if row.Seq == r.Seq && row.Error == "" && !row.Leak && row.Rows > 0 {
				served++
			}
			if row.Seq == r.Seq && row.Leak {
				leaks++
			}
		}
	}
	sort.Slice(waits, func(i, j int) bool { return waits[i] < waits[j] })
	longest := waits[len(waits)-1]
	tr.SetMetric("per-request: users served", fmt.Sprintf("%d of %d", served, users), float64(served))
	tr.SetMetric("per-request: longest acquire wait", fmt.Sprintf("%.1f ms", float64(longest.Microseconds())/1000), float64(longest.Microseconds())/1000)
	tr.Note(fmt.Sprintf("With a connection per request instead of per user, the same %d users were served by %d connections: %d of %d got their own rows, %d leaks, the longest acquire waited %.1f ms.",
		users, size, served, users, leaks, float64(longest.Microseconds())/1000))
	return env.Step(ctx, fmt.Sprintf("Done. Held per user, %d connections served %d users and turned %d away; lent per request, they served %d of %d.", size, len(held)+lateServed, timedOut, served, users))
}

// txOnHeld scopes, queries and commits in one transaction on r's acquired
// connection and releases it, without frames (many requests at once).
func txOnHeld(ctx context.Context, r *engine.Request) error {
	defer dropConn(r)
	tx, err := r.Begin(ctx)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, engine.SetLocalSQL, r.Tenant.Setting()); err != nil {
		r.Fail(err)
		return err
	}
	if err := r.Observe(ctx, tx); err != nil {
		r.Fail(err)
		return err
	}
	if err := r.Commit(ctx); err != nil {
		return err
	}
	r.ReleaseQuiet(ctx)
	return nil
}

// whyOf returns the why recorded on request seq.
func whyOf(env *engine.Env, seq int) string {
	st := env.Tracker().Snapshot()
	for _, row := range st.Requests {
		if row.Seq == seq {
			return row.Why
		}
	}
	return ""
}
