package scenarios

import (
	"context"
	"fmt"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// Variants of lost-context (stable names: tools and lessons rely on them).
const (
	LostContextBackground  = "background"
	LostContextWorkerReuse = "worker-reuse"
	LostContextPropagated  = "propagated"
)

// withTenant returns a copy of ctx that carries t (under wrong-scope's
// context key).
func withTenant(ctx context.Context, t engine.Tenant) context.Context {
	return context.WithValue(ctx, tenantKey{}, t)
}

// tenantFrom returns the tenant ctx carries, if any.
func tenantFrom(ctx context.Context) (engine.Tenant, bool) {
	t, ok := ctx.Value(tenantKey{}).(engine.Tenant)
	return t, ok
}

// LostContext returns the lost-context scenario: a request handler hands
// work to a goroutine (an e-mail of the tenant's invoices), and the tenant
// id travels in the context.Context. Started with context.Background(), the
// job has no tenant and silently finds nothing; a long-lived worker that
// keeps the last tenant it saw serves the next job with the previous
// tenant's rows; with the request's context passed on (its cancellation
// detached by context.WithoutCancel), each job gets its own tenant.
func LostContext() *engine.Scenario {
	return &engine.Scenario{
		ID:     "lost-context",
		Pacing: engine.PacingReplay,
		Title:  "The tenant across an async boundary: goroutines and background jobs",
		Variants: []engine.Variant{
			{Name: LostContextBackground, Conns: engine.Fixed(1), Run: runLostBackground,
				Summary: "The handler starts the job with go job(context.Background())."},
			{Name: LostContextWorkerReuse, Conns: engine.Fixed(1), Run: runLostWorkerReuse,
				Summary: "A long-lived worker keeps the tenant of its last job in a field; the next job arrives without a tenant."},
			{Name: LostContextPropagated, Conns: engine.Fixed(1), Run: runLostPropagated,
				Summary: "Each job gets context.WithoutCancel(r.Context()) from its request."},
		},
		MinTenants: 2,
	}
}

// jobWorker runs the app's background jobs one after the other on one
// goroutine, like a worker of a job queue.
type jobWorker struct {
	jobs chan workItem
	// last is the tenant of the previous job: the bug of the worker-reuse
	// variant keeps it across jobs.
	last engine.Tenant
}

// workItem is one queued job: the context it was enqueued with, the tenant
// it is for (what the log compares with, not what the job can see), and
// where to report when it is done.
type workItem struct {
	ctx    context.Context
	tenant engine.Tenant
	done   chan error
}

// invoiceJob is the job: look up the tenant's invoices for an e-mail. The
// tenant comes from where the app's code gets it (scope); the query runs
// with the run's context, so that stopping the run stops it.
func invoiceJob(ctx context.Context, env *engine.Env, pool *engine.Pool, intended engine.Tenant, setting, source string) error {
	r := pool.NewRequest(intended, engine.PatternTxLocal)
	defer r.ReleaseQuiet(context.WithoutCancel(ctx))
	tx, err := scopedTx(ctx, r, setting)
	if err != nil {
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("%s is the background job for %s. It takes the tenant from %s and scopes with set_config('app.current_tenant', '%s', true).", r.Label(), intended.Name, source, setting)); err != nil {
		return err
	}
	if err := r.Observe(ctx, tx); err != nil {
		r.Fail(err)
		return err
	}
	if err := r.Commit(ctx); err != nil {
		return err
	}
	if err := env.Step(ctx, r.Verdict()); err != nil {
		return err
	}
	return r.Release(ctx)
}

// handler is the request handler of the app: it answers its tenant's
// request and prepares the e-mail job with the context it chooses (job
// returns the job's body). The response is sent and the request's context
// cancelled before the job runs, on a goroutine of its own.
func handler(ctx context.Context, env *engine.Env, pool *engine.Pool, t engine.Tenant, job func(reqCtx context.Context) func() error) error {
	reqCtx, cancel := context.WithCancel(withTenant(ctx, t))
	r := pool.NewRequest(t, engine.PatternTxLocal)
	if err := r.Do(reqCtx); err != nil {
		cancel()
		return err
	}
	body := job(reqCtx)
	cancel() // the response is sent: the request's context ends here
	done := make(chan error, 1)
	go func() { done <- body() }()
	return <-done
}

// jobMetrics records how many jobs ran without their tenant and notes
// every request.
func jobMetrics(env *engine.Env, lost int) {
	env.Tracker().SetMetric("jobs_without_tenant", fmt.Sprint(lost), float64(lost))
	env.NoteRequests(nil)
}

// openJobPool opens lost-context's pool of one connection.
func openJobPool(ctx context.Context, env *engine.Env) (*engine.Pool, error) {
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 1, MinConns: 1})
	if err != nil {
		return nil, err
	}
	return pool, env.Step(ctx, "A pool of one connection as the app role. Each request handler keeps its tenant in its context.Context; the job after it runs on a goroutine of its own.")
}

func runLostBackground(ctx context.Context, env *engine.Env) error {
	acme := env.Sandbox.Tenants[0]
	pool, err := openJobPool(ctx, env)
	if err != nil {
		return err
	}
	lost := 0
	err = handler(ctx, env, pool, acme, func(reqCtx context.Context) func() error {
		// The bug: the job must outlive the request, so the handler gives
		// it a context that nobody cancels, and with it loses the tenant.
		jobCtx := context.Background()
		return func() error {
			t, ok := tenantFrom(jobCtx)
			if !ok {
				lost++
			}
			return invoiceJob(ctx, env, pool, acme, t.Setting(), "context.Background() (it holds none, so the zero Tenant, id 0)")
		}
	})
	if err != nil {
		return err
	}
	jobMetrics(env, lost)
	return env.Conclude(ctx, fmt.Sprintf("The job for %s ran with no tenant: RLS failed closed, so the e-mail went out empty and nothing reported an error.", acme.Name))
}

func runLostWorkerReuse(ctx context.Context, env *engine.Env) error {
	acme, globex := env.Sandbox.Tenants[0], env.Sandbox.Tenants[1]
	pool, err := openJobPool(ctx, env)
	if err != nil {
		return err
	}
	w := &jobWorker{jobs: make(chan workItem)}
	lost := 0
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for it := range w.jobs {
			// The bug: the worker remembers the tenant of its last job and
			// uses it when a job comes without one.
			source := "the job's context"
			if t, ok := tenantFrom(it.ctx); ok {
				w.last = t
			} else {
				lost++
				source = "the worker's field, left by its previous job (the job's context has none)"
			}
			it.done <- invoiceJob(ctx, env, pool, it.tenant, w.last.Setting(), source)
		}
	}()
	defer func() { close(w.jobs); <-stopped }()
	enqueue := func(jobCtx context.Context, t engine.Tenant) error {
		done := make(chan error, 1)
		w.jobs <- workItem{ctx: jobCtx, tenant: t, done: done}
		return <-done
	}
	if err := handler(ctx, env, pool, acme, func(reqCtx context.Context) func() error {
		jobCtx := context.WithoutCancel(reqCtx)
		return func() error { return enqueue(jobCtx, acme) }
	}); err != nil {
		return err
	}
	// Globex's job is enqueued from a retry loop that kept only the job's
	// payload, not the request's context.
	if err := handler(ctx, env, pool, globex, func(context.Context) func() error {
		return func() error { return enqueue(context.Background(), globex) }
	}); err != nil {
		return err
	}
	jobMetrics(env, lost)
	return env.Conclude(ctx, fmt.Sprintf("%s's job ran with %s's tenant, which the worker kept from the job before.", globex.Name, acme.Name))
}

func runLostPropagated(ctx context.Context, env *engine.Env) error {
	acme, globex := env.Sandbox.Tenants[0], env.Sandbox.Tenants[1]
	pool, err := openJobPool(ctx, env)
	if err != nil {
		return err
	}
	lost := 0
	for _, t := range []engine.Tenant{acme, globex} {
		err := handler(ctx, env, pool, t, func(reqCtx context.Context) func() error {
			// The job keeps the request's values and drops its
			// cancellation: it runs after the response is sent.
			jobCtx := context.WithoutCancel(reqCtx)
			return func() error {
				if err := jobCtx.Err(); err != nil {
					return fmt.Errorf("job for %s: its context ended with the request: %w", t.Name, err)
				}
				jt, ok := tenantFrom(jobCtx)
				if !ok {
					lost++
					return fmt.Errorf("job for %s: no tenant in its context", t.Name)
				}
				return invoiceJob(ctx, env, pool, t, jt.Setting(), "context.WithoutCancel(r.Context())")
			}
		})
		if err != nil {
			return err
		}
	}
	jobMetrics(env, lost)
	return env.Conclude(ctx, "Each job carried its request's tenant across the goroutine boundary.")
}
