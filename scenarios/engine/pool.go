package engine

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// identityQuery reads what a connection is: its backend PID, the tenant
// setting as the policies would see it, and the role it runs as.
const identityQuery = `SELECT pg_backend_pid(), current_setting('app.current_tenant', true), current_user::text`

// IdentifyTimeout bounds the identity read done at connect and at release.
const IdentifyTimeout = 5 * time.Second

// Identity is what one connection's own backend says about itself.
type Identity struct {
	PID    uint32
	Tenant *string
	Role   string
}

// Identify reads conn's identity from its backend, with the simple protocol
// so that it leaves no prepared statement behind.
func Identify(ctx context.Context, conn *pgx.Conn) (Identity, error) {
	var id Identity
	var pid int32
	err := conn.QueryRow(ctx, identityQuery, pgx.QueryExecModeSimpleProtocol).Scan(&pid, &id.Tenant, &id.Role)
	id.PID = uint32(pid)
	return id, err
}

// PoolOptions configures an instrumented pool.
type PoolOptions struct {
	Name       string // shown when a scenario has several pools
	ConnString string // default: the sandbox's app role URL
	MaxConns   int32
	MinConns   int32
	// Configure may set the scenario's own hooks (AfterRelease, PrepareConn
	// and so on) and other settings; the instrumentation wraps them.
	Configure func(*pgxpool.Config)
}

// Pool is a pgxpool.Pool whose connections are shown in the live view: each
// connection's PID, tenant setting and role are read from the connection
// when it connects and when it is released, and its idle/acquired state
// follows the pool.
type Pool struct {
	*pgxpool.Pool
	name    string
	env     *Env
	waiting atomic.Int32

	mu    sync.Mutex
	slots map[*pgconn.PgConn]int
	next  int
	// out holds the slots handed out and not yet read back by the release
	// hook; changed is closed (and replaced) whenever one comes back or a
	// connection goes away, so that waits are woken, not polled.
	out     map[int]bool
	changed chan struct{}
	// peakWaiting and peakOut are the most requests inside Acquire and
	// the most connections handed out at once since the last TakePeaks.
	peakWaiting, peakOut int32
	// settling holds, per slot whose release hook has ended, the pool's
	// counts at that moment (see waitBackInPool).
	settling map[int]settleMark
	// afterBack, when set (by tests), runs in the release hook after the
	// connection was read back, before pgxpool takes it back: it widens
	// the window in which the pool still counts it as acquired.
	afterBack func()
}

// settleMark is what the pool counted when a connection's release hook
// ended: the connections acquired (that one among them) and the acquires
// so far.
type settleMark struct {
	acquired int32
	acquires int64
}

// OpenPool opens an instrumented pool on the sandbox and fills it to
// MinConns, so that its first frame shows real connections.
func (e *Env) OpenPool(ctx context.Context, o PoolOptions) (*Pool, error) {
	if o.ConnString == "" {
		o.ConnString = e.Sandbox.AppURL
	}
	if o.MaxConns <= 0 {
		return nil, fmt.Errorf("pool %q: MaxConns must be positive", o.Name)
	}
	cfg, err := pgxpool.ParseConfig(o.ConnString)
	if err != nil {
		return nil, fmt.Errorf("pool %q: %w", o.Name, err)
	}
	cfg.MaxConns, cfg.MinConns = o.MaxConns, o.MinConns
	cfg.ConnConfig.RuntimeParams["application_name"] = "rlslab " + e.Sandbox.Lab + " " + o.Name
	if o.Configure != nil {
		o.Configure(cfg)
	}
	p := &Pool{name: o.Name, env: e, slots: map[*pgconn.PgConn]int{}, out: map[int]bool{}, changed: make(chan struct{}), settling: map[int]settleMark{}}
	userConnect, userRelease, userClose := cfg.AfterConnect, cfg.AfterRelease, cfg.BeforeClose
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		if userConnect != nil {
			if err := userConnect(ctx, c); err != nil {
				return err
			}
		}
		id, err := Identify(ctx, c)
		if err != nil {
			return err
		}
		p.record(c, id, ConnIdle, 0)
		return nil
	}
	cfg.AfterRelease = func(c *pgx.Conn) bool {
		keep := true
		if userRelease != nil {
			keep = userRelease(c)
		}
		if keep {
			ctx, cancel := context.WithTimeout(context.Background(), IdentifyTimeout)
			id, err := Identify(ctx, c)
			cancel()
			if err != nil {
				e.log.Warn("identify at release", "pool", o.Name, "err", err)
				keep = false
			} else {
				p.record(c, id, ConnIdle, 0)
			}
		}
		p.released(p.Slot(c))
		if p.afterBack != nil {
			p.afterBack()
		}
		return keep
	}
	cfg.BeforeClose = func(c *pgx.Conn) {
		if userClose != nil {
			userClose(c)
		}
		p.forget(c)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pool %q: %w", o.Name, err)
	}
	p.Pool = pool
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		pool.Close()
		return nil, errEnvClosed
	}
	e.pools = append(e.pools, p)
	e.mu.Unlock()
	if err := p.warm(ctx, int(o.MinConns)); err != nil {
		return nil, err
	}
	e.Refresh(nil)
	return p, nil
}

// poolCloseTimeout bounds how long closing a pool waits for connections to
// come back.
const poolCloseTimeout = 10 * time.Second

// close closes the pool. pgxpool's Close waits until every connection has
// been released; a scenario that lost one (a pool.QueryRow never scanned,
// say) would hang the lab forever, so after poolCloseTimeout this logs the
// bug and goes on: the lab's database is dropped with FORCE in the end.
func (p *Pool) close(log *slog.Logger) {
	done := make(chan struct{})
	go func() {
		p.Pool.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(poolCloseTimeout):
		log.Error("pool did not close: a connection was never released", "pool", p.name, "acquired", p.Stat().AcquiredConns())
	}
}

// Name returns the pool's name.
func (p *Pool) Name() string { return p.name }

// warm acquires n connections at once and releases them, so that the pool
// holds n open connections before the scenario starts.
func (p *Pool) warm(ctx context.Context, n int) error {
	conns := make([]*pgxpool.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			p.ReleaseAndWait(ctx, c)
		}
	}()
	for range n {
		c, err := p.Pool.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("pool %q: open connection: %w", p.name, err)
		}
		conns = append(conns, c)
	}
	return nil
}

// handOut records that the connection in slot is out of the pool.
func (p *Pool) handOut(slot int) {
	p.mu.Lock()
	p.out[slot] = true
	p.peakOut = max(p.peakOut, int32(len(p.out)))
	p.mu.Unlock()
}

// TakePeaks returns the most requests that waited inside Acquire at once
// and the most connections handed out at once since the last call (or the
// pool's opening), and starts counting again from now.
func (p *Pool) TakePeaks() (waiting, acquired int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	waiting, acquired = p.peakWaiting, p.peakOut
	p.peakWaiting, p.peakOut = p.waiting.Load(), int32(len(p.out))
	return waiting, acquired
}

// back records that the connection in slot came back (or went away) and
// wakes the waits.
func (p *Pool) back(slot int) {
	p.mu.Lock()
	delete(p.out, slot)
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// released records, from the release hook, that the connection in slot was
// read back, with the pool's counts while it still counts it as acquired,
// and wakes the waits.
func (p *Pool) released(slot int) {
	st := p.Stat()
	p.mu.Lock()
	p.settling[slot] = settleMark{acquired: st.AcquiredConns(), acquires: st.AcquireCount()}
	p.mu.Unlock()
	p.back(slot)
}

// WaitReleased waits until the release hook has read the connection in slot
// again (it runs in its own goroutine) or the pool let it go, and then
// until the pool has taken it back, for at most IdentifyTimeout each. The
// first wait is woken by the hook, not by polling.
func (p *Pool) WaitReleased(ctx context.Context, slot int) {
	p.waitUntil(ctx, func() bool { return !p.out[slot] })
	p.waitBackInPool(ctx, slot)
}

// waitBackInPool waits until pgxpool no longer counts the connection in
// slot as acquired. pgxpool takes a connection back only after its release
// hook returns, in the hook's goroutine, and tells nobody: a frame taken as
// soon as the hook has read the connection showed it idle in its box and
// still acquired in the pool's counts (the run's last frame too). The
// pool's count of acquired connections, less the acquires since the hook
// ended, drops below what it was then once the connection is back; this
// looks with a backoff from 20 µs (the gap is a few instructions, unless
// the machine is busy).
func (p *Pool) waitBackInPool(ctx context.Context, slot int) {
	p.mu.Lock()
	m, ok := p.settling[slot]
	delete(p.settling, slot)
	p.mu.Unlock()
	if !ok {
		return
	}
	deadline := time.Now().Add(IdentifyTimeout)
	pause := 20 * time.Microsecond
	for {
		st := p.Stat()
		if st.AcquiredConns()-int32(st.AcquireCount()-m.acquires) < m.acquired {
			return
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return
		}
		time.Sleep(pause)
		pause = min(2*pause, 5*time.Millisecond)
	}
}

// WaitGone waits until the pool has closed its connection to backend pid,
// for at most IdentifyTimeout (pgxpool closes a destroyed connection in its
// own goroutine).
func (p *Pool) WaitGone(ctx context.Context, pid uint32) {
	p.waitUntil(ctx, func() bool {
		for c := range p.slots {
			if c.PID() == pid {
				return false
			}
		}
		return true
	})
}

// waitUntil waits until done, evaluated under the pool's lock, holds; it
// is evaluated again each time a connection comes back or goes away.
func (p *Pool) waitUntil(ctx context.Context, done func() bool) {
	timer := time.NewTimer(IdentifyTimeout)
	defer timer.Stop()
	for {
		p.mu.Lock()
		ok, changed := done(), p.changed
		p.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		case <-timer.C:
			return
		}
	}
}

// ReleaseAndWait gives c back to the pool without a frame and waits until
// the release hook has read it again: when it returns, the connection's box
// shows what its backend holds after the release.
func (p *Pool) ReleaseAndWait(ctx context.Context, c *pgxpool.Conn) {
	slot := p.Slot(c.Conn())
	p.handOut(slot)
	c.Release()
	p.WaitReleased(ctx, slot)
}

// Setting returns the tenant setting last read on the pool's connection
// with backend pid (nil when none is shown).
func (p *Pool) Setting(pid uint32) *string {
	c, _ := p.env.tracker.ConnByPID(p.name, pid)
	return c.Tenant
}

// counts reads the pool-side counts.
func (p *Pool) counts() PoolCounts {
	s := p.Stat()
	return PoolCounts{Name: p.name, Max: s.MaxConns(), Total: s.TotalConns(), Idle: s.IdleConns(),
		Acquired: s.AcquiredConns(), Waiting: p.waiting.Load()}
}

// AcquireFor takes a connection for request seq and shows it as acquired.
func (p *Pool) AcquireFor(ctx context.Context, seq int) (*pgxpool.Conn, error) {
	n := p.waiting.Add(1)
	p.mu.Lock()
	p.peakWaiting = max(p.peakWaiting, n)
	p.mu.Unlock()
	p.env.Refresh(nil)
	c, err := p.Pool.Acquire(ctx)
	p.waiting.Add(-1)
	if err != nil {
		p.env.Refresh(nil)
		return nil, err
	}
	p.Mark(c.Conn(), ConnAcquired, seq)
	return c, nil
}

// Slot returns the stable number of conn within the pool.
func (p *Pool) Slot(c *pgx.Conn) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, ok := p.slots[c.PgConn()]
	if !ok {
		p.next++
		n = p.next
		p.slots[c.PgConn()] = n
	}
	return n
}

// record stores a freshly read identity of conn.
func (p *Pool) record(c *pgx.Conn, id Identity, state string, seq int) {
	slot := p.Slot(c)
	p.env.Refresh(func(s *State) {
		i := findConn(s, p.name, slot)
		if i < 0 {
			s.Connections = append(s.Connections, Connection{Pool: p.name, Slot: slot})
			i = len(s.Connections) - 1
		}
		cn := &s.Connections[i]
		isNew := cn.PID == 0
		cn.PID, cn.Tenant, cn.Role, cn.State, cn.Request = id.PID, id.Tenant, id.Role, state, seq
		s.timelineRecord(p, *cn, isNew, state)
	})
}

// Mark changes the shown state of conn without reading it.
func (p *Pool) Mark(c *pgx.Conn, state string, seq int) {
	slot := p.Slot(c)
	if state == ConnAcquired {
		p.handOut(slot)
	}
	p.env.Refresh(func(s *State) {
		i := findConn(s, p.name, slot)
		if i >= 0 {
			s.Connections[i].State, s.Connections[i].Request = state, seq
		}
		s.timelineMark(p, i, state, seq)
	})
}

// observe stores what a request's own query read on conn.
func (p *Pool) observe(c *pgx.Conn, id Identity, seq int) {
	p.record(c, id, ConnAcquired, seq)
}

// forget removes a closed connection from the state.
func (p *Pool) forget(c *pgx.Conn) {
	p.mu.Lock()
	slot, ok := p.slots[c.PgConn()]
	delete(p.slots, c.PgConn())
	p.mu.Unlock()
	if !ok {
		return
	}
	p.back(slot)
	p.env.Refresh(func(s *State) {
		i := findConn(s, p.name, slot)
		s.timelineClose(p, i)
		if i >= 0 {
			s.Connections = append(s.Connections[:i], s.Connections[i+1:]...)
		}
	})
}

// findConn returns the index of the connection (pool, slot) in s, or -1.
func findConn(s *State, pool string, slot int) int {
	for i, c := range s.Connections {
		if c.Pool == pool && c.Slot == slot {
			return i
		}
	}
	return -1
}

// Waiting returns how many requests are inside Acquire right now.
func (p *Pool) Waiting() int32 { return p.waiting.Load() }
