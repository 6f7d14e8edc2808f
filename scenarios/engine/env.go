package engine

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"

	"github.com/jackc/pgx/v5"
)

// SettingName is the tenant setting the RLS policies read.
const SettingName = "app.current_tenant"

// Tenant is one of the lab's seeded tenants.
type Tenant struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
}

// Setting returns the value of the tenant setting that scopes to t.
func (t Tenant) Setting() string { return strconv.Itoa(t.ID) }

// Sandbox is what a scenario may use of its lab: the lab's database, its
// roles and its seeded tenants.
type Sandbox struct {
	Lab       string
	Database  string
	AppURL    string // the app login role's URL to the lab's database
	AppRole   string
	OwnerRole string
	ConnLimit int // the app role's CONNECTION LIMIT
	// Bouncers starts a PgBouncer for the scenarios that need one; nil when
	// none can be had.
	Bouncers BouncerStarter
	Tenants  []Tenant
	// Admin opens a superuser connection to the lab's database for the
	// variants that show what a privileged role sees; release closes it. At
	// most one is open per lab at a time (it counts in the lab's connection
	// budget), and it is never handed to a simulated request.
	Admin func(ctx context.Context) (conn *pgx.Conn, release func(), err error)
}

// TenantName returns the name of the tenant whose setting value is v, or v
// itself when no tenant has it.
func (sb Sandbox) TenantName(v string) string {
	for _, t := range sb.Tenants {
		if t.Setting() == v {
			return t.Name
		}
	}
	return v
}

// AdminTx runs f in a transaction on the lab's superuser connection and
// commits it when f returns nil (the connection is released either way).
func (e *Env) AdminTx(ctx context.Context, f func(tx pgx.Tx) error) error {
	if e.Sandbox.Admin == nil {
		return errors.New("this sandbox has no admin connection")
	}
	conn, release, err := e.Sandbox.Admin(ctx)
	if err != nil {
		return err
	}
	defer release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// Env is one run of a scenario against a lab: the sandbox, the run's
// parameters, its pace and the pools it opened. Close releases everything.
type Env struct {
	Sandbox Sandbox
	Params  Params
	tracker *Tracker
	pace    *Pace
	log     *slog.Logger

	mu      sync.Mutex
	pools   []*Pool
	held    map[*Request]struct{} // requests holding a connection
	onClose []func()
	closed  bool
}

// hold records that r holds a connection.
func (e *Env) hold(r *Request) {
	e.mu.Lock()
	if e.held == nil {
		e.held = map[*Request]struct{}{}
	}
	e.held[r] = struct{}{}
	e.mu.Unlock()
}

// unhold records that r gave its connection back.
func (e *Env) unhold(r *Request) {
	e.mu.Lock()
	delete(e.held, r)
	e.mu.Unlock()
}

// NewEnv returns an environment for one run. The tracker receives the run's
// events; the pace decides how long each frame stays on screen.
func NewEnv(sb Sandbox, params Params, tr *Tracker, pace *Pace, log *slog.Logger) *Env {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if params == nil {
		params = Params{}
	}
	return &Env{Sandbox: sb, Params: params, tracker: tr, pace: pace, log: log}
}

// Tracker returns the state the run writes to.
func (e *Env) Tracker() *Tracker { return e.tracker }

// Logger returns the run's logger.
func (e *Env) Logger() *slog.Logger { return e.log }

// Step ends a frame: it records the narration, samples the pools and holds
// the scenario for as long as the pace says.
func (e *Env) Step(ctx context.Context, narration string) error {
	e.Refresh(func(s *State) { s.Narration = narration })
	return e.pace.Wait(ctx)
}

// refresh reads every open pool's counts into the state, applies f, and
// samples the time series, in one update.
func (e *Env) Refresh(f func(*State)) {
	e.mu.Lock()
	pools := append([]*Pool(nil), e.pools...)
	e.mu.Unlock()
	counts := make([]PoolCounts, len(pools))
	for i, p := range pools {
		counts[i] = p.counts()
	}
	e.tracker.Update(func(s *State) {
		s.Pool, s.Pools = PoolCounts{}, nil
		switch {
		case len(counts) == 1:
			s.Pool = counts[0]
		case len(counts) > 1:
			// Several pools (app instances): the headline counts are their sum.
			s.Pools = counts
			s.Pool.Name = "all pools"
			for _, c := range counts {
				s.Pool.Max += c.Max
				s.Pool.Total += c.Total
				s.Pool.Idle += c.Idle
				s.Pool.Acquired += c.Acquired
				s.Pool.Waiting += c.Waiting
			}
		}
		if f != nil {
			f(s)
		}
		e.tracker.sample(s)
	})
}

// OnClose registers f to run when the environment closes, after its pools
// are closed (for example: stop a PgBouncer the run started). If the
// environment is already closed, f runs at once.
func (e *Env) OnClose(f func()) {
	e.mu.Lock()
	if !e.closed {
		e.onClose = append(e.onClose, f)
		e.mu.Unlock()
		return
	}
	e.mu.Unlock()
	f()
}

// Close gives back every connection a request of the run still holds,
// closes every pool the run opened, then runs the OnClose functions in
// reverse order. It is safe to call more than once; call it after the run
// has returned.
func (e *Env) Close() {
	e.mu.Lock()
	pools, hooks, held := e.pools, e.onClose, e.held
	e.pools, e.onClose, e.held = nil, nil, nil
	e.closed = true
	e.mu.Unlock()
	for r := range held {
		r.Abandon()
	}
	for _, p := range pools {
		p.close(e.log)
	}
	for i := len(hooks) - 1; i >= 0; i-- {
		hooks[i]()
	}
	e.Refresh(nil)
}

// errEnvClosed is returned by OpenPool after Close.
var errEnvClosed = errors.New("scenario environment closed")

// Play runs the variant of sc against env and records the final status in
// env's tracker. The tracker must have been begun by the caller. Pacing
// follows the run's own lifetime: once ctx ends, or Play returns, no frame
// waits any more, so a cleanup path that still calls Step cannot hang.
func Play(ctx context.Context, sc *Scenario, variant string, env *Env) error {
	stop := context.AfterFunc(ctx, env.pace.Stop)
	defer stop()
	defer env.pace.Stop()
	v, ok := sc.Variant(variant)
	var err error
	if !ok {
		err = sc.CheckVariant(variant)
	} else {
		err = v.Run(ctx, env)
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, ErrStopped) {
		err = errors.New("run cancelled")
	}
	env.Refresh(nil)
	env.tracker.Finish(err)
	return err
}
