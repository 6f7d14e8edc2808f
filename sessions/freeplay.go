package sessions

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Free play: the learner's own statements on a small pool of the lab's
// app role, supervised by rlslab (time, rows, what is refused) and drawn on
// the lab's live view like a scenario's requests.
const (
	// FreePlayScenario is the scenario name the live view shows while the
	// free-play pool is the lab's picture.
	FreePlayScenario = "free-play"
	// FreePlayPool names the free-play pool's connections in the live view.
	FreePlayPool = "free play"
	// DefaultFreePlayConns and MaxFreePlayConns bound the pool's size.
	DefaultFreePlayConns = 2
	MaxFreePlayConns     = 10
	// DefaultFreePlayIdle is how long an unused free-play pool stays open.
	DefaultFreePlayIdle = 3 * time.Minute
	// LessonQuery is what a call without SQL runs: the lesson's invoices,
	// with their owners.
	LessonQuery = "SELECT id, tenant_id, customer, amount FROM invoices ORDER BY id"
	// MaxSQLLen bounds the SQL text of one call.
	MaxSQLLen = 16 << 10
	// admitTimeout bounds the wait for the pool's connections in the
	// connection budget.
	admitTimeout = 10 * time.Second
)

// Free-play patterns beside the engine's: split sends the scope and the
// query as two pool calls; local-role scopes with SET LOCAL ROLE to the
// tenant's role (lab_<id>_t<n>, which only the set-role scenario makes)
// and the tenant setting, in one transaction.
const (
	PatternSplit     = "split"
	PatternLocalRole = "local-role"
)

// FreePlayPatterns are the patterns a free-play call may use.
var FreePlayPatterns = []string{engine.PatternSessionSet, engine.PatternTxLocal, engine.PatternBatchLocal, engine.PatternForgot, PatternSplit, PatternLocalRole}

// SQLRequest is one free-play call.
type SQLRequest struct {
	// Connection is the free-play pool's connection to run on, from 1; 0
	// lets the pool choose (the connection idle longest).
	Connection int
	// PID names a backend a run paused in single-step mode holds: the call
	// is then a read-only look at that connection.
	PID uint32
	// SQL is the learner's SQL; "" runs LessonQuery.
	SQL string
	// Tenant is a tenant's name or id ("" for none); Pattern is how the
	// call scopes its connection to it ("" is session-set with a tenant,
	// forgot without).
	Tenant  string
	Pattern string
	// PoolSize is the pool's size (0: DefaultFreePlayConns, or the open
	// pool's). Another size than the open pool's opens a new pool.
	PoolSize int
}

// freePlay is a lab's free-play pool: open from its first call until it
// has been idle for a while, admitted against the connection budget.
type freePlay struct {
	lab *Lab

	mu       sync.Mutex
	conns    []*playConn // nil while closed
	env      *engine.Env
	changed  chan struct{} // closed and replaced when a connection comes back or the pool closes
	inflight int
	idleAt   time.Time
	timer    *time.Timer
	rec      *recorder // the pool's frames, kept as a recording when it closes
	started  time.Time
	roles    bool // the pool made the tenant roles, and drops them when it closes

	rolesMu sync.Mutex // serialises making the tenant roles
}

// playConn is one connection of the free-play pool.
type playConn struct {
	slot     int
	conn     *pgx.Conn // nil after the connection was lost: the next call opens another
	busy     bool
	lastUsed time.Time
}

// freePlay returns the lab's free-play pool (closed until its first call).
func (l *Lab) freePlay() *freePlay {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.free == nil {
		l.free = &freePlay{lab: l, changed: make(chan struct{})}
	}
	return l.free
}

// closeFreePlay closes the lab's free-play pool, if open. Callers hold the
// lab's control lock.
func (l *Lab) closeFreePlay(why string) {
	l.mu.Lock()
	fp := l.free
	l.mu.Unlock()
	if fp != nil {
		fp.close(why)
	}
}

// sqlTimeout returns free play's time limit per call.
func (m *Manager) sqlTimeout() time.Duration {
	if m.cfg.SQLTimeout > 0 {
		return m.cfg.SQLTimeout
	}
	return DefaultSQLTimeout
}

// freePlayIdle returns how long an unused free-play pool stays open.
func (m *Manager) freePlayIdle() time.Duration {
	if m.cfg.FreePlayIdle > 0 {
		return m.cfg.FreePlayIdle
	}
	return DefaultFreePlayIdle
}

// tenantByName finds the lab's tenant whose name (any case) or id is v.
func (l *Lab) tenantByName(v string) (engine.Tenant, bool) {
	for _, t := range l.Sandbox.Tenants {
		if strings.EqualFold(t.Name, v) || t.Setting() == v {
			return t, true
		}
	}
	return engine.Tenant{}, false
}

// isTenantRole reports whether name is one of the lab's tenant roles.
func (l *Lab) isTenantRole(name string) bool {
	for _, t := range l.Sandbox.Tenants {
		if name == l.tenantRole(t) {
			return true
		}
	}
	return false
}

// tenantRole is the name of t's role in the lab (the set-role scenario's).
func (l *Lab) tenantRole(t engine.Tenant) string { return engine.TenantRole(l.Sandbox, t) }

// SQL runs one free-play call and returns what the database said. A
// statement the guard refuses comes back as a result with Refused set and
// nothing sent. With a PID it is a read-only look at a connection of a run
// paused in single-step mode; otherwise it runs on the free-play pool,
// which opens on the first call (waiting for the connection budget) and is
// drawn on the live view. It fails with EINVALID on a bad request and
// ECONFLICT while a run is going (unless the call is a look).
func (l *Lab) SQL(ctx context.Context, q SQLRequest) (SQLResult, error) {
	tenant, hasTenant := engine.Tenant{}, false
	if q.Tenant != "" {
		if tenant, hasTenant = l.tenantByName(q.Tenant); !hasTenant {
			return SQLResult{}, rlslab.Errorf(rlslab.EINVALID, "no tenant %q in this lab: want one of %s", q.Tenant, l.tenantList())
		}
	}
	if q.Pattern == "" {
		q.Pattern = engine.PatternForgot
		if hasTenant {
			q.Pattern = engine.PatternSessionSet
		}
	}
	if !validPattern(q.Pattern) {
		return SQLResult{}, rlslab.Errorf(rlslab.EINVALID, "pattern %q: want one of %s", q.Pattern, strings.Join(FreePlayPatterns, ", "))
	}
	if q.Pattern != engine.PatternForgot && !hasTenant {
		return SQLResult{}, rlslab.Errorf(rlslab.EINVALID, "pattern %s scopes to a tenant: give one (%s)", q.Pattern, l.tenantList())
	}
	size := q.PoolSize
	if size < 0 || size > MaxFreePlayConns || size > l.Sandbox.ConnLimit {
		return SQLResult{}, rlslab.Errorf(rlslab.EINVALID, "pool size %d: want 1 to %d", size, min(MaxFreePlayConns, l.Sandbox.ConnLimit))
	}
	if q.Connection < 0 || q.Connection > MaxFreePlayConns {
		return SQLResult{}, rlslab.Errorf(rlslab.EINVALID, "connection %d: want 1 to %d, or none to let the pool choose", q.Connection, MaxFreePlayConns)
	}
	if len(q.SQL) > MaxSQLLen {
		return SQLResult{}, rlslab.Errorf(rlslab.EINVALID, "the SQL is %d bytes; free play takes at most %d", len(q.SQL), MaxSQLLen)
	}
	sql := q.SQL
	if strings.TrimSpace(sql) == "" {
		sql = LessonQuery
	}
	if r := checkSQL(sql, l.Sandbox.AppRole, l.isTenantRole); r != nil {
		return refusedResult(r), nil
	}
	l.Touch()
	if q.PID != 0 {
		if r := checkReadOnly(sql); r != nil {
			return refusedResult(r), nil
		}
		return l.look(ctx, q.PID, sql)
	}
	changes := mayChangeRows(sql)
	if changes {
		// Set before the call: a call cut off mid-way may have changed
		// rows too.
		l.rowsChanged.Store(true)
	}
	fp := l.freePlay()
	if err := fp.open(ctx, size); err != nil {
		return SQLResult{}, err
	}
	if q.Connection > fp.size() {
		return SQLResult{}, rlslab.Errorf(rlslab.EINVALID, "connection %d: the free-play pool has %d", q.Connection, fp.size())
	}
	res, err := fp.call(ctx, q, tenant, hasTenant, sql)
	if err == nil && changes {
		res.Notice = strings.TrimSpace(res.Notice + " " + RowsPutBackNotice)
	}
	return res, err
}

// RowsPutBackNotice is said after free play that may have changed the lab's
// rows.
const RowsPutBackNotice = "This may have changed the lab's rows: they stay changed for free play, and the next lesson run puts them back as seeded first (Reset lab does it at once)."

// tenantList names the lab's tenants for error messages.
func (l *Lab) tenantList() string {
	names := make([]string, len(l.Sandbox.Tenants))
	for i, t := range l.Sandbox.Tenants {
		names[i] = fmt.Sprintf("%s (%d)", t.Name, t.ID)
	}
	return strings.Join(names, ", ")
}

func validPattern(p string) bool {
	for _, v := range FreePlayPatterns {
		if p == v {
			return true
		}
	}
	return false
}

// refusedResult is the answer to SQL the guard refused.
func refusedResult(r *refusal) SQLResult {
	return SQLResult{Refused: true, Error: r.Error(), Columns: []string{}, Rows: [][]*string{}}
}

// size returns the open pool's size (0 when closed).
func (fp *freePlay) size() int {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return len(fp.conns)
}

// awaitShownEnd waits, two seconds at most, for a run whose last state is
// already on screen (done, failed or cancelled) to let go of the lab: a
// replayed run shows its end a moment before it is over, and a learner who
// sees it ended may start free play at once.
func (fp *freePlay) awaitShownEnd(ctx context.Context) {
	l := fp.lab
	deadline := time.Now().Add(2 * time.Second)
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		l.mu.Lock()
		going := l.run != nil
		l.mu.Unlock()
		if !going || time.Now().After(deadline) {
			return
		}
		switch l.tracker.Snapshot().Status {
		case engine.StatusDone, engine.StatusFailed, engine.StatusCancelled:
		default:
			return // still running or queued: free play waits for no one
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// open opens the pool with size connections (0: the open pool's size, or
// DefaultFreePlayConns), admitted against the connection budget. A pool
// open with another size is closed first. It serialises with runs and
// resets through the lab's control lock.
func (fp *freePlay) open(ctx context.Context, size int) error {
	l := fp.lab
	fp.awaitShownEnd(ctx)
	l.ctl.Lock()
	defer l.ctl.Unlock()
	l.mu.Lock()
	closed, running := l.closed, l.run != nil
	appErr := l.appBusyLocked("free play opens")
	l.mu.Unlock()
	switch {
	case closed:
		return rlslab.Errorf(rlslab.ENOTFOUND, "lab %s is closed", l.ID)
	case appErr != nil:
		return appErr
	case running:
		return rlslab.Errorf(rlslab.ECONFLICT, "a run is going in lab %s: free play starts once it ends (or pause it in single-step mode and look at one of its connections by its pid)", l.ID)
	}
	fp.mu.Lock()
	open := len(fp.conns)
	fp.mu.Unlock()
	if open > 0 && (size == 0 || size == open) {
		return nil
	}
	if open > 0 {
		fp.close("the pool is opened again with another size")
	}
	if size == 0 {
		size = DefaultFreePlayConns
	}
	return fp.start(ctx, size)
}

// start admits and connects a new pool of size connections. Callers hold
// the lab's control lock.
func (fp *freePlay) start(ctx context.Context, size int) error {
	l := fp.lab
	log := l.mgr.log.With("lab", l.ID)
	if st := l.tracker.Snapshot(); st.Scenario != FreePlayScenario {
		l.tracker.Begin(FreePlayScenario, "pool", "")
	} else {
		// A new pool: the closed one's boxes go; its requests stay in the log.
		l.tracker.Update(func(s *engine.State) {
			s.Status, s.Error = engine.StatusRunning, ""
			kept := s.Connections[:0]
			for _, c := range s.Connections {
				if c.Pool != FreePlayPool {
					kept = append(kept, c)
				}
			}
			s.Connections = kept
		})
	}
	actx, cancel := context.WithTimeout(ctx, admitTimeout)
	defer cancel()
	queued := false
	err := l.srv.admit.acquire(actx, l.owner, size, func(ahead int) {
		queued = true
		l.tracker.SetQueue(&engine.Queue{Need: size, Ahead: ahead})
	})
	if queued {
		l.tracker.SetQueue(nil)
	}
	if err != nil {
		l.tracker.Finish(nil)
		if rlslab.ErrorCode(err) == rlslab.EINTERNAL {
			err = rlslab.Errorf(rlslab.EUNAVAILABLE, "the server's connection budget has no %d connections free for free play right now; try again in a moment", size)
		}
		return err
	}
	env := engine.NewEnv(l.Sandbox, nil, l.tracker, engine.NewPace(engine.Speed{Max: true}), log)
	// The connections are opened before the pool is published, so that no
	// call finds one half made.
	conns := make([]*playConn, size)
	ids := make([]engine.Identity, size)
	for i := range conns {
		conns[i] = &playConn{slot: i + 1}
		if err = fp.connect(ctx, conns[i]); err == nil {
			ids[i], err = fp.identify(conns[i].conn.PgConn())
		}
		if err != nil {
			break
		}
	}
	if err != nil {
		for _, pc := range conns {
			if pc != nil && pc.conn != nil {
				l.srv.closeAndWait(pc.conn)
			}
		}
		l.srv.admit.release(l.owner, size)
		err = l.mgr.dbError("free play", err)
		l.tracker.Update(func(s *engine.State) {
			s.Status, s.Error = engine.StatusFailed, "free play could not open its pool: "+rlslab.ErrorMessage(err)
		})
		return err
	}
	fp.mu.Lock()
	fp.conns, fp.env, fp.inflight = conns, env, 0
	fp.rec, fp.started = record(l.tracker), time.Now()
	fp.mu.Unlock()
	for i, pc := range conns {
		fp.show(pc, ids[i], engine.ConnIdle, 0)
	}
	l.tracker.Narrate(fmt.Sprintf("Free play: a pool of %d connections as the lab's app role, app. Send a request, or SQL on one connection.", size))
	fp.armIdle()
	log.Info("free play opened", "connections", size)
	return nil
}

// connect opens pc's connection as the lab's app role.
func (fp *freePlay) connect(ctx context.Context, pc *playConn) error {
	cfg, err := pgx.ParseConfig(fp.lab.Sandbox.AppURL)
	if err != nil {
		return err
	}
	cfg.RuntimeParams["application_name"] = "rlslab " + fp.lab.ID + " free play"
	cfg.ConnectTimeout = dbTimeout
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	conn.PgConn().Frontend().SetMaxBodyLen(maxMessage)
	fp.mu.Lock() // close reads it to cancel a call in flight
	pc.conn = conn
	fp.mu.Unlock()
	return nil
}

// close closes the pool: calls in flight are cancelled and waited for,
// the connections closed (their backends gone) and their budget given
// back. The last picture of the connections stays on the live view,
// marked closed. Callers hold the lab's control lock.
func (fp *freePlay) close(why string) {
	fp.mu.Lock()
	conns := fp.conns
	if conns == nil {
		fp.mu.Unlock()
		return
	}
	if fp.timer != nil {
		fp.timer.Stop()
	}
	for _, pc := range conns {
		if pc.busy && pc.conn != nil {
			go func(c *pgconn.PgConn) {
				ctx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
				defer cancel()
				_ = c.CancelRequest(ctx)
			}(pc.conn.PgConn())
		}
	}
	deadline := time.NewTimer(fp.lab.mgr.sqlTimeout() + backstop + cancelTimeout)
	defer deadline.Stop()
	for fp.inflight > 0 {
		changed := fp.changed
		fp.mu.Unlock()
		late := false
		select {
		case <-changed:
		case <-deadline.C:
			late = true
			fp.lab.mgr.log.Error("free-play calls did not end; closing their connections", "lab", fp.lab.ID)
		}
		fp.mu.Lock()
		if late {
			break
		}
	}
	rec, started, env, roles := fp.rec, fp.started, fp.env, fp.roles
	fp.conns, fp.env, fp.rec, fp.roles = nil, nil, nil, false
	fp.wake()
	fp.mu.Unlock()
	for _, pc := range conns {
		if pc.conn != nil {
			fp.lab.srv.closeAndWait(pc.conn)
		}
	}
	if roles {
		// On a connection of the pool's budget, its own backends gone.
		ctx, cancel := context.WithTimeout(context.Background(), dropTimeout)
		if err := env.DropTenantRoles(ctx); err != nil {
			fp.lab.mgr.log.Error("free play: drop the tenant roles", "lab", fp.lab.ID, "err", err)
		}
		cancel()
	}
	fp.lab.srv.admit.release(fp.lab.owner, len(conns))
	fp.lab.tracker.Update(func(s *engine.State) {
		if s.Scenario != FreePlayScenario {
			return
		}
		for i := range s.Connections {
			if s.Connections[i].Pool == FreePlayPool {
				s.Connections[i].State = engine.ConnClosed
			}
		}
		s.Pool.Total, s.Pool.Idle, s.Pool.Acquired = 0, 0, 0
		s.Status = engine.StatusDone
		s.Narration = "The free-play pool closed (" + why + "): it holds no connection now; the last picture of its connections stays."
	})
	fp.lab.mgr.log.Info("free play closed", "lab", fp.lab.ID, "why", why)
	// Kept like a run, once its connections are back in the budget: the
	// learner can replay it and compare it with another.
	if rec != nil {
		frames := rec.finish()
		fp.lab.mgr.publish(&RunRecord{Lab: fp.lab, Scenario: FreePlayScenario, Variant: "pool", Started: started,
			Ended: time.Now(), Final: fp.lab.tracker.Snapshot(), Frames: frames})
	}
}

// makeRoles makes the lab's tenant roles for local-role calls, once per
// open pool, on the lab's superuser connection, admitted against the
// connection budget for as long as it takes. It says whether it made them
// now.
func (fp *freePlay) makeRoles(ctx context.Context) (bool, error) {
	fp.rolesMu.Lock()
	defer fp.rolesMu.Unlock()
	fp.mu.Lock()
	made, env := fp.roles, fp.env
	fp.mu.Unlock()
	if made || env == nil {
		return false, nil
	}
	l := fp.lab
	actx, cancel := context.WithTimeout(ctx, admitTimeout)
	defer cancel()
	if err := l.srv.admit.acquire(actx, l.owner, 1, func(int) {}); err != nil {
		return false, rlslab.Errorf(rlslab.EUNAVAILABLE, "the server's connection budget has no connection free to make the tenant roles right now; try again in a moment")
	}
	err := env.MakeTenantRoles(ctx)
	l.srv.admit.release(l.owner, 1)
	if err != nil {
		return false, l.mgr.dbError("free play", err)
	}
	fp.mu.Lock()
	fp.roles = fp.env == env // the pool may have closed meanwhile
	fp.mu.Unlock()
	return true, nil
}

// wake tells waiters that a connection came back or the pool closed.
// Callers hold fp.mu.
func (fp *freePlay) wake() {
	close(fp.changed)
	fp.changed = make(chan struct{})
}

// armIdle (re)starts the idle timer: the pool closes once no call has come
// for the idle time. Callers need not hold fp.mu.
func (fp *freePlay) armIdle() {
	idle := fp.lab.mgr.freePlayIdle()
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.conns == nil {
		return
	}
	fp.idleAt = time.Now().Add(idle)
	if fp.timer == nil {
		fp.timer = time.AfterFunc(idle, fp.idleCheck)
		return
	}
	fp.timer.Reset(idle)
}

// idleCheck closes the pool if it has been idle long enough.
func (fp *freePlay) idleCheck() {
	l := fp.lab
	l.ctl.Lock()
	defer l.ctl.Unlock()
	fp.mu.Lock()
	due := fp.conns != nil && fp.inflight == 0 && !time.Now().Before(fp.idleAt)
	left := time.Until(fp.idleAt)
	if fp.conns != nil && !due && fp.inflight == 0 && left > 0 {
		fp.timer.Reset(left)
	}
	fp.mu.Unlock()
	if due {
		fp.close(fmt.Sprintf("idle for %s", l.mgr.freePlayIdle()))
	}
}

// acquire takes connection slot (0: the one idle longest) for a call,
// waiting while it (or every one) is busy. ok is false once the pool has
// closed.
func (fp *freePlay) acquire(ctx context.Context, slot int) (*playConn, *engine.Env, error) {
	fp.mu.Lock()
	for {
		if fp.conns == nil {
			fp.mu.Unlock()
			return nil, nil, rlslab.Errorf(rlslab.ECONFLICT, "the free-play pool closed; send the request again")
		}
		var pick *playConn
		for _, pc := range fp.conns {
			if pc.busy || (slot != 0 && pc.slot != slot) {
				continue
			}
			if pick == nil || pc.lastUsed.Before(pick.lastUsed) {
				pick = pc
			}
		}
		if pick != nil {
			pick.busy = true
			fp.inflight++
			env := fp.env
			fp.mu.Unlock()
			return pick, env, nil
		}
		changed := fp.changed
		fp.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, nil, rlslab.Errorf(rlslab.ECONFLICT, "every free-play connection stayed busy")
		}
		fp.mu.Lock()
	}
}

// release gives pc back to the pool.
func (fp *freePlay) release(pc *playConn) {
	fp.mu.Lock()
	pc.busy = false
	pc.lastUsed = time.Now()
	fp.inflight--
	fp.wake()
	fp.mu.Unlock()
}

// counts are the pool's counts for the live view. Callers hold fp.mu.
func (fp *freePlay) countsLocked() engine.PoolCounts {
	c := engine.PoolCounts{Name: FreePlayPool, Max: int32(len(fp.conns))}
	for _, pc := range fp.conns {
		if pc.conn == nil {
			continue
		}
		c.Total++
		if pc.busy {
			c.Acquired++
		} else {
			c.Idle++
		}
	}
	return c
}

// show draws pc's box on the live view as last read, with the pool's
// counts.
func (fp *freePlay) show(pc *playConn, id engine.Identity, state string, seq int) {
	fp.mu.Lock()
	counts := fp.countsLocked()
	fp.mu.Unlock()
	ev := engine.TimelineEvent{Kind: engine.TimelineRelease, Pool: FreePlayPool, Slot: pc.slot, PID: id.PID, Read: true, Tenant: id.Tenant, Role: id.Role}
	if state == engine.ConnAcquired {
		// Read as the request took it: what the connection held before.
		ev.Kind, ev.Seq = engine.TimelineObserve, seq
	}
	fp.lab.tracker.AddTimeline(fp.lab.Sandbox.AppRole, ev)
	fp.lab.tracker.Update(func(s *engine.State) {
		s.Pool = counts
		c := engine.Connection{Pool: FreePlayPool, Slot: pc.slot, PID: id.PID, State: state, Tenant: id.Tenant, Role: id.Role, Request: seq}
		for i := range s.Connections {
			if s.Connections[i].Pool == FreePlayPool && s.Connections[i].Slot == pc.slot {
				s.Connections[i] = c
				return
			}
		}
		s.Connections = append(s.Connections, c)
	})
}

// identityAfterSQL reads a connection's identity after a call, and first
// undoes what would outlive it unseen: LISTEN and session-level advisory
// locks (the guard refuses both; dynamic SQL could still reach them).
const identityAfterSQL = "UNLISTEN *; SELECT pg_advisory_unlock_all(); " +
	"SELECT pg_backend_pid(), current_setting('app.current_tenant', true), current_user::text"

// identify reads conn's identity with the simple protocol.
func (fp *freePlay) identify(conn *pgconn.PgConn) (engine.Identity, error) {
	return readIdentity(conn, "SELECT pg_backend_pid(), current_setting('app.current_tenant', true), current_user::text", fp.lab.mgr.sqlTimeout())
}

// readIdentity runs sql (whose last result is pid, tenant setting, role)
// under the time limit; a stray cancel meant for the call before is
// answered by asking once more.
func readIdentity(conn *pgconn.PgConn, sql string, timeout time.Duration) (engine.Identity, error) {
	var out execResult
	for try := 0; try < 2; try++ {
		out = superviseExec(conn, sql, limits{timeout: timeout}, false)
		var pe *pgconn.PgError
		if !(errors.As(out.err, &pe) && pe.Code == "57014") {
			break
		}
	}
	if out.err != nil {
		return engine.Identity{}, out.err
	}
	if len(out.rows) != 1 || len(out.rows[0]) != 3 || out.rows[0][0] == nil {
		return engine.Identity{}, errors.New("identity read returned no row")
	}
	pid, err := strconv.ParseUint(*out.rows[0][0], 10, 32)
	if err != nil {
		return engine.Identity{}, err
	}
	id := engine.Identity{PID: uint32(pid), Tenant: out.rows[0][1]}
	if out.rows[0][2] != nil {
		id.Role = *out.rows[0][2]
	}
	return id, nil
}

// call runs one free-play call on the pool: acquire, scope as the pattern
// says, the SQL under rlslab's limits, end any transaction left open,
// release; each step is drawn on the live view.
func (fp *freePlay) call(ctx context.Context, q SQLRequest, tenant engine.Tenant, hasTenant bool, sql string) (SQLResult, error) {
	l := fp.lab
	timeout := l.mgr.sqlTimeout()
	defer fp.armIdle()
	var notices []string
	setting := ""
	if hasTenant {
		setting = tenant.Setting()
	}
	if q.Pattern == PatternSplit {
		// The scope is a pool call of its own: the pool picks its
		// connection, and the query's may be another.
		pc, _, err := fp.acquire(ctx, 0)
		if err != nil {
			return SQLResult{}, err
		}
		out := superviseExec(pc.conn.PgConn(), "SELECT set_config('app.current_tenant', "+quoteLiteral(setting)+", false)", limits{timeout: timeout}, false)
		if id, err := fp.identify(pc.conn.PgConn()); err == nil {
			fp.show(pc, id, engine.ConnIdle, 0)
		}
		fp.release(pc)
		if out.err != nil {
			return SQLResult{}, l.mgr.dbError("free play", out.err)
		}
		notices = append(notices, fmt.Sprintf("The scope went out as its own pool call, on connection %d; the query as another.", pc.slot))
	}
	pc, env, err := fp.acquire(ctx, q.Connection)
	if err != nil {
		return SQLResult{}, err
	}
	defer fp.release(pc)
	if q.Pattern == PatternLocalRole {
		// Made while this call holds a connection: a close waits for the
		// call, so it finds the roles made and drops them.
		made, err := fp.makeRoles(ctx)
		if err != nil {
			return SQLResult{}, err
		}
		if made {
			notices = append(notices, fmt.Sprintf("rlslab made the tenant roles (%s), granted them to %s and added the policy %s, as the set-role lesson does; they are dropped when the free-play pool closes.",
				strings.Join(engine.TenantRoleNames(l.Sandbox), ", "), l.Sandbox.AppRole, engine.TenantRolePolicy))
		}
	}
	if pc.conn == nil || pc.conn.IsClosed() {
		if err := fp.connect(ctx, pc); err != nil {
			return SQLResult{}, l.mgr.dbError("free play", err)
		}
		notices = append(notices, "The connection had been lost; rlslab opened a new one.")
	}
	conn := pc.conn.PgConn()
	req := env.NewRequest(tenant, q.Pattern, FreePlayPool, "acquired")
	if !hasTenant {
		req.Update(func(r *engine.RequestRow) { r.Tenant = nil })
	}
	res := SQLResult{Connection: pc.slot, Request: req.Seq}
	before, err := fp.identify(conn)
	if err != nil {
		req.Fail(err)
		return SQLResult{}, l.mgr.dbError("free play", err)
	}
	res.PID, res.TenantBefore, res.Role = before.PID, before.Tenant, before.Role
	req.Update(func(r *engine.RequestRow) { r.PID = before.PID })
	fp.show(pc, before, engine.ConnAcquired, req.Seq)

	lit := quoteLiteral(setting)
	var scope, wrapped string
	inTx := false
	switch q.Pattern {
	case engine.PatternSessionSet:
		scope = "SELECT set_config('app.current_tenant', " + lit + ", false)"
	case engine.PatternTxLocal:
		scope, inTx = "BEGIN; SELECT set_config('app.current_tenant', "+lit+", true)", true
	case PatternLocalRole:
		scope, inTx = "BEGIN; SET LOCAL ROLE "+pgx.Identifier{l.tenantRole(tenant)}.Sanitize()+"; SELECT set_config('app.current_tenant', "+lit+", true)", true
	case engine.PatternBatchLocal:
		wrapped = "SELECT set_config('app.current_tenant', " + lit + ", true);\n" + sql
	}
	var out execResult
	if scope != "" {
		out = superviseExec(conn, scope, limits{timeout: timeout}, false)
	}
	seen := before.Tenant
	if q.Pattern != engine.PatternForgot && q.Pattern != PatternSplit {
		seen = &setting
	}
	if out.err == nil {
		req.SetPhase("scoped")
		text := sql
		if wrapped != "" {
			text = wrapped
		}
		out = superviseExec(conn, text, limits{timeout: timeout, owner: setting}, false)
	}
	out.describe(&res, timeout)
	queryRole := ""
	if inTx && conn.TxStatus() == 'T' && out.err == nil {
		// The role the query ran as, read before the transaction ends
		// (SET LOCAL ROLE ends with it).
		if in, err := fp.identify(conn); err == nil {
			queryRole = in.Role
		}
		if c := superviseExec(conn, "COMMIT", limits{timeout: timeout}, false); c.err != nil {
			c.describe(&res, timeout)
		}
	}
	if s := conn.TxStatus(); !conn.IsClosed() && (s == 'T' || s == 'E') {
		superviseExec(conn, "ROLLBACK", limits{timeout: timeout}, false)
		if !inTx || out.err == nil {
			notices = append(notices, "rlslab rolled back the transaction the call left open: free play ends every transaction with its call.")
		}
	}
	after, aerr := engine.Identity{}, errors.New("the connection was lost")
	if !conn.IsClosed() {
		after, aerr = readIdentity(conn, identityAfterSQL, timeout)
	}
	if aerr != nil {
		notices = append(notices, "The connection was lost; the next call opens a new one.")
		fp.mu.Lock()
		lost := pc.conn
		pc.conn = nil
		fp.mu.Unlock()
		if lost != nil {
			l.srv.closeAndWait(lost)
		}
		after = engine.Identity{PID: before.PID}
	} else {
		res.TenantAfter, res.Role = after.Tenant, after.Role
	}
	if queryRole == "" {
		queryRole = after.Role
	} else if queryRole != after.Role && aerr == nil {
		notices = append(notices, fmt.Sprintf("The query ran as %s, set for its transaction only; with the COMMIT the backend is %s again.", queryRole, after.Role))
	}
	res.ForeignRows = out.foreign
	res.Leak = hasTenant && out.foreign > 0
	res.Notice = strings.Join(notices, " ")
	done := time.Now().UnixMilli()
	why := fp.why(tenant, hasTenant, seen, res, out)
	req.Update(func(r *engine.RequestRow) {
		r.PID, r.SeenTenant, r.Role = before.PID, seen, queryRole
		r.Rows, r.ForeignRows, r.Leak = out.count, out.foreign, res.Leak
		r.Error, r.SQLState, r.FinishedAt, r.Why = res.Error, res.SQLState, done, why
		r.Phase = "released"
		if res.Error != "" {
			r.Phase = "failed"
		}
	})
	state := engine.ConnIdle
	if aerr != nil {
		state = engine.ConnClosed
	}
	fp.show(pc, after, state, 0)
	label := "no tenant"
	if hasTenant {
		label = tenant.Name
	}
	l.tracker.EndFrame(fmt.Sprintf("Free play: request #%d (%s, %s) on connection %d, backend %d: %s", req.Seq, label, q.Pattern, pc.slot, before.PID, why))
	return res, nil
}

// why says in a sentence what a call saw.
func (fp *freePlay) why(t engine.Tenant, hasTenant bool, seen *string, res SQLResult, out execResult) string {
	sb := fp.lab.Sandbox
	hasOwner := false
	for _, c := range out.columns {
		hasOwner = hasOwner || c == "tenant_id"
	}
	switch {
	case res.Error != "":
		return "failed: " + res.Error
	case res.Leak && seen != nil && *seen != t.Setting():
		return fmt.Sprintf("LEAK: the backend %s, so RLS returned %d rows of another tenant to %s.", engine.DescribeSetting(sb, seen, "held"), out.foreign, t.Name)
	case res.Leak:
		return fmt.Sprintf("LEAK: %d rows of another tenant came back to %s.", out.foreign, t.Name)
	case len(out.columns) == 0:
		return "done (" + out.tag + ")."
	case !hasOwner:
		return fmt.Sprintf("%d rows; they have no tenant_id column, so whose rows they are is not checked.", out.count)
	case !hasTenant:
		return fmt.Sprintf("%d rows, for a request of no tenant; the backend %s.", out.count, engine.DescribeSetting(sb, seen, "held"))
	case out.count == 0:
		return "0 rows: the backend " + engine.DescribeSetting(sb, seen, "held") + "; the policy matched nothing."
	default:
		return fmt.Sprintf("%d rows, all %s's own.", out.count, t.Name)
	}
}

// look runs one read-only statement on the connection with backend pid
// that the lab's run, paused in single-step mode, holds: in a read-only
// transaction that is rolled back, or inside the run's own transaction in
// a read-only subtransaction that is rolled back, so the run finds its
// connection as it left it.
func (l *Lab) look(ctx context.Context, pid uint32, sql string) (SQLResult, error) {
	l.mu.Lock()
	run := l.run
	l.mu.Unlock()
	var env *engine.Env
	if run != nil {
		env = run.environment()
		if run.isReplayed() {
			return SQLResult{}, rlslab.Errorf(rlslab.ECONFLICT, "the run in lab %s ran at full speed and is shown at your pace: its connections are closed already; run in single-step mode to look at a paused run's connections", l.ID)
		}
	}
	if env == nil {
		return SQLResult{}, rlslab.Errorf(rlslab.ECONFLICT, "no run is paused in lab %s: a look at a connection needs a run paused in single-step mode", l.ID)
	}
	timeout := l.mgr.sqlTimeout()
	var res SQLResult
	err := env.Look(ctx, pid, func(ctx context.Context, c *pgx.Conn) error {
		conn := c.PgConn()
		var begin, end string
		switch conn.TxStatus() {
		case 'I':
			begin, end = "BEGIN READ ONLY", "ROLLBACK"
		case 'T':
			begin, end = "SAVEPOINT rlslab_look; SET LOCAL transaction_read_only = on", "ROLLBACK TO SAVEPOINT rlslab_look; RELEASE SAVEPOINT rlslab_look"
		default:
			return rlslab.Errorf(rlslab.ECONFLICT, "backend %d is in a failed transaction: nothing runs on it until the run ends that transaction", pid)
		}
		id, err := readIdentity(conn, "SELECT pg_backend_pid(), current_setting('app.current_tenant', true), current_user::text", timeout)
		if err != nil {
			return err
		}
		res.PID, res.TenantBefore, res.Role = id.PID, id.Tenant, id.Role
		if b := superviseExec(conn, begin, limits{timeout: timeout}, false); b.err != nil {
			return b.err
		}
		out := superviseExec(conn, sql, limits{timeout: timeout}, true)
		out.describe(&res, timeout)
		if e := superviseExec(conn, end, limits{timeout: timeout}, false); e.err != nil {
			return e.err
		}
		after, err := readIdentity(conn, "SELECT pg_backend_pid(), current_setting('app.current_tenant', true), current_user::text", timeout)
		if err != nil {
			return err
		}
		res.TenantAfter = after.Tenant
		res.Notice = "A read-only look at a connection the paused run holds; the run finds it as it left it."
		return nil
	})
	switch {
	case errors.Is(err, engine.ErrNotPaused):
		return SQLResult{}, rlslab.Errorf(rlslab.ECONFLICT, "the run in lab %s is not paused in single-step mode: a look at its connections waits for a paused frame", l.ID)
	case err != nil && rlslab.ErrorCode(err) == rlslab.EINTERNAL:
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			return SQLResult{}, rlslab.Errorf(rlslab.ECONFLICT, "the look failed: %s", pe.Message)
		}
		return SQLResult{}, rlslab.Errorf(rlslab.ECONFLICT, "the look failed: %v", err)
	case err != nil:
		return SQLResult{}, err
	}
	return res, nil
}
