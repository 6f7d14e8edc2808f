package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

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

	mu       sync.Mutex
	pools    []*Pool
	counters []func() PoolCounts        // pools the engine does not instrument (CountPool)
	held     map[*Request]*pgxpool.Conn // requests holding a connection, and the connection (for Look)
	onClose  []func()
	closed   bool
}

// hold records that r holds a connection.
func (e *Env) hold(r *Request) {
	e.mu.Lock()
	if e.held == nil {
		e.held = map[*Request]*pgxpool.Conn{}
	}
	e.held[r] = r.conn
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
	narration = Scrub(narration)
	e.Refresh(func(s *State) {
		s.Narration = narration
		e.tracker.frame++ // under the tracker's lock: Refresh runs f in Update
		s.Frame = e.tracker.frame
	})
	e.tracker.stepped()
	return e.pace.Wait(ctx)
}

// Refresh reads every open pool's counts into the state, applies f, and
// samples the time series, in one update.
func (e *Env) Refresh(f func(*State)) {
	e.mu.Lock()
	pools := append([]*Pool(nil), e.pools...)
	counters := append([]func() PoolCounts(nil), e.counters...)
	e.mu.Unlock()
	counts := make([]PoolCounts, 0, len(pools)+len(counters))
	for _, p := range pools {
		counts = append(counts, p.counts())
	}
	for _, count := range counters {
		counts = append(counts, count())
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

// CountPool adds a pool that no instrumented pool stands for (an
// application's own pool seen through rlslab's proxy) to the counts every
// Refresh reads: counts returns its counts at that moment.
func (e *Env) CountPool(counts func() PoolCounts) {
	e.mu.Lock()
	e.counters = append(e.counters, counts)
	e.mu.Unlock()
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
	return play(ctx, sc, variant, env, false)
}

// PlayAndClose is Play, but it closes env (its pools and whatever the run
// started) before it records the final status: when the state says the run
// is over, the run holds no connection. The last picture of the run's
// connections stays in the state, marked closed.
func PlayAndClose(ctx context.Context, sc *Scenario, variant string, env *Env) error {
	return play(ctx, sc, variant, env, true)
}

func play(ctx context.Context, sc *Scenario, variant string, env *Env, closeFirst bool) error {
	stop := context.AfterFunc(ctx, env.pace.Stop)
	defer stop()
	defer env.pace.Stop()
	v, ok := sc.Variant(variant)
	var err error
	switch {
	case !ok:
		err = sc.CheckVariant(variant)
	case len(env.Sandbox.Tenants) < sc.MinTenants:
		err = fmt.Errorf("%s needs %d tenants in the sandbox, it has %d", sc.ID, sc.MinTenants, len(env.Sandbox.Tenants))
	default:
		env.Params = sc.Defaults(env.Params)
		err = v.Run(ctx, env)
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, ErrStopped) {
		err = errors.New("run cancelled")
	}
	env.Refresh(nil)
	if closeFirst {
		final := env.tracker.Snapshot()
		env.Close()
		for i := range final.Connections {
			final.Connections[i].State = ConnClosed
		}
		env.tracker.Update(func(s *State) {
			s.Connections, s.Pool, s.Pools = final.Connections, final.Pool, final.Pools
		})
	}
	env.tracker.Finish(err)
	return err
}

// ShowConn puts a connection that no instrumented pool holds (a user's own
// connection, the lab's superuser connection) into the live view, or
// updates the one shown with the same pool and slot.
func (e *Env) ShowConn(c Connection) {
	e.Refresh(func(s *State) {
		if i := findConn(s, c.Pool, c.Slot); i >= 0 {
			s.Connections[i] = c
			return
		}
		s.Connections = append(s.Connections, c)
	})
}

// HideConn takes the connection (pool, slot) out of the live view.
func (e *Env) HideConn(pool string, slot int) {
	e.Refresh(func(s *State) {
		if i := findConn(s, pool, slot); i >= 0 {
			s.Connections = append(s.Connections[:i], s.Connections[i+1:]...)
		}
	})
}

// Notable keeps the requests worth a note in a run about leaks: those that
// leaked, failed, or got no rows.
func Notable(r RequestRow) bool { return r.Leak || r.Error != "" || r.Rows == 0 }

// NoteRequests adds one note per request of the run's log that keep
// accepts (nil keeps all), in the words of RequestNote. Requests that never
// got past waiting are left out.
func (e *Env) NoteRequests(keep func(RequestRow) bool) {
	e.tracker.mu.Lock()
	rows := append([]RequestRow(nil), e.tracker.st.Requests...)
	e.tracker.mu.Unlock()
	for _, r := range rows {
		if r.Phase == "waiting" || (keep != nil && !keep(r)) {
			continue
		}
		e.tracker.Note(e.RequestNote(r))
	}
}

// RequestNote says in one sentence what request r did: where it ran (its
// backend, the role when it is not the app role, the tenant setting it
// found there) and what came back (its own rows, another tenant's, none,
// or the server's error with its SQLSTATE).
func (e *Env) RequestNote(r RequestRow) string {
	who := fmt.Sprintf("#%d (%s, %s", r.Seq, e.tenantOf(r), r.Pattern)
	if r.Pool != "" && r.Pool != "app" {
		who += ", " + r.Pool
	}
	who += ")"
	where := ""
	if r.PID != 0 {
		where = fmt.Sprintf(" on backend %d", r.PID)
	}
	if r.Role != "" && r.Role != e.Sandbox.AppRole {
		where += " as " + r.Role
	}
	held := ", which " + DescribeSetting(e.Sandbox, r.SeenTenant, "held")
	switch {
	case r.Error != "":
		code := ""
		if r.SQLState != "" && !strings.Contains(r.Error, r.SQLState) {
			code = " [SQLSTATE " + r.SQLState + "]"
		}
		return fmt.Sprintf("Request %s%s failed: %s%s", who, where, r.Error, code)
	case r.Leak:
		return fmt.Sprintf("LEAK: request %s ran%s%s, and got %d rows of another tenant (%d rows in all).", who, where, held, r.ForeignRows, r.Rows)
	case r.Rows == 0:
		return fmt.Sprintf("Request %s ran%s%s: 0 rows, it failed closed.", who, where, held)
	default:
		return fmt.Sprintf("Request %s ran%s%s: %d rows, all its own.", who, where, held, r.Rows)
	}
}

// tenantOf names the tenant a request row was made for.
func (e *Env) tenantOf(r RequestRow) string {
	if r.Tenant == nil {
		return "no tenant"
	}
	return e.Sandbox.TenantName(*r.Tenant)
}
