package sessions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rlslab/rlslab"
)

// The budget of one PostgreSQL server is shared by every rlslab instance
// that uses it. Each instance holds a lease in rlslab's own tables
// (rlslab.leases): its own connections (the admin pool, its lock, the
// maintenance connections) and the connections its admitted runs may hold.
// The sum of the live leases of a server never exceeds the server's
// budget, so any number of instances together stay within
// max_connections − reserved − margin. A lease lives as long as its
// instance's heartbeat (rlslab.instances.expires_at) and its advisory
// lock; another instance deletes the lease of a dead one (see reapDead).
//
// The local admission queue (admission.go) stays what decides which run
// goes next; it may admit only within the instance's lease. The leaser, one
// goroutine per instance, grows the lease when runs wait and shrinks it to
// what is used when none does, in one short transaction that locks the
// server's row. Instances wake each other with NOTIFY on budgetChannel
// when a lease shrinks or a queue changes, and poll with backoff as well,
// in case a notification is lost.

const (
	// budgetChannel is the LISTEN/NOTIFY channel of lease changes; the
	// payload is the server's id.
	budgetChannel = "rlslab_budget"
	// instanceTTL is how long an instance's heartbeat lasts; it is renewed
	// every instanceTTL/4.
	instanceTTL = 15 * time.Second
	// leasePollMax bounds the backoff of the leaser's polling while runs
	// wait and no notification comes.
	leasePollMax   = 2 * time.Second
	leaseTxTimeout = 5 * time.Second
)

// leased is the admission queue's side of the shared budget: the
// connections of the budget this instance has leased for runs, and how to
// ask the leaser for more. Its zero value means the budget is not shared.
type leased struct {
	on        bool
	lease     int         // connections leased for runs
	room      int         // what the lease could grow to now: the budget the other instances leave
	elsewhere []time.Time // since when the runs waiting at other instances wait, sorted
	wake      chan struct{}
}

// poke tells the leaser that the queue changed; it never blocks.
func (l *leased) poke() {
	if !l.on {
		return
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// capLocked is how many connections runs may hold: the budget for runs,
// and with a shared budget no more than the lease.
func (a *admission) capLocked() int {
	if !a.shared.on {
		return a.limit
	}
	return min(a.limit, a.shared.lease)
}

// countElsewhereLocked tells each waiting ticket how many runs wait at
// other instances since before it.
func (a *admission) countElsewhereLocked(order []*ticket) {
	if !a.shared.on {
		return
	}
	for _, t := range order {
		n, _ := slices.BinarySearchFunc(a.shared.elsewhere, t.since, func(e, s time.Time) int { return e.Compare(s) })
		t.mu.Lock()
		t.elsewhere = n
		t.mu.Unlock()
	}
}

// queueSnapshot is what the leaser reads of the queue.
type queueSnapshot struct {
	used    int
	needs   []int // waiting runs' needs, in turn order
	strict  bool  // the oldest waiting run has waited starveAfter: only it may start
	oldest  time.Time
	oldNeed int
	since   []time.Time // every waiting run's arrival
}

// freezeLease returns the queue's state and lowers the lease to what is
// used, so that nothing is admitted beyond what the leaser then claims.
func (a *admission) freezeLease() queueSnapshot {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := queueSnapshot{used: a.used}
	for _, t := range a.order() {
		s.needs = append(s.needs, t.need)
	}
	if len(a.queue) > 0 {
		s.oldest, s.oldNeed = a.queue[0].since, a.queue[0].need
		s.strict = a.now().Sub(s.oldest) >= starveAfter
		for _, t := range a.queue {
			s.since = append(s.since, t.since)
		}
	}
	a.shared.lease = min(a.shared.lease, a.used)
	return s
}

// setLease sets the lease for runs and what waits elsewhere, admits whoever
// now fits and tells the rest their place (fresh runs included: they have
// now been put to the shared budget).
func (a *admission) setLease(runs, room int, elsewhere []time.Time) {
	a.mu.Lock()
	a.shared.lease = runs
	if room >= 0 {
		a.shared.room = room
	}
	a.shared.elsewhere = elsewhere
	for _, t := range a.queue {
		t.mu.Lock()
		t.fresh = false
		t.mu.Unlock()
	}
	waiting := a.admitLocked()
	a.mu.Unlock()
	tell(waiting)
}

// otherLease is another instance's live lease of the server.
type otherLease struct {
	instance     string
	conns, used  int
	oldest       *time.Time
	oldNeed      int
	waitingSince []time.Time
}

// leaser keeps this instance's lease of one server's budget.
type leaser struct {
	pool     *pgxpool.Pool // rlslab's tables
	server   string        // the server's id (its system identifier)
	instance string
	total    int // the server's budget, as this instance computed it
	base     int // this instance's own connections, always leased
	a        *admission
	log      *slog.Logger
	fails    *failureLog
	reg      registration // to register again if another instance took this one for dead
	ready    func() int   // the spare sandboxes ready on the server, written with the lease

	mu      sync.Mutex
	claimed int         // runs' part of the lease as last written
	since   []time.Time // the waiting runs as last written
}

// serverID returns the system identifier of the server pool is connected
// to: the same for every instance that reaches the same cluster.
func serverID(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	var id string
	err := pool.QueryRow(ctx, `SELECT system_identifier::text FROM pg_control_system()`).Scan(&id)
	return id, err
}

// registration is what an instance registers of itself.
type registration struct {
	address, proxy, tag string
	lockID              int32
}

// registerInstance adds this instance to rlslab.instances with its lock,
// its heartbeat and a tag of its own, which its lab ids begin with (two hex
// digits no live instance has), and returns the tag. A name held by a live
// instance is refused; the row of a dead one (heartbeat over, or lock gone)
// is taken over.
func registerInstance(ctx context.Context, pool *pgxpool.Pool, name string, reg registration) (tag string, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// Registrations one at a time, so that two never pick one tag.
		if _, err := tx.Exec(ctx, `LOCK TABLE rlslab.instances IN SHARE ROW EXCLUSIVE MODE`); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `SELECT t FROM generate_series(0, 255) g, lpad(to_hex(g), 2, '0') t
			WHERE t NOT IN (SELECT tag FROM rlslab.instances WHERE name <> $1 AND expires_at > now())
			ORDER BY random() LIMIT 1`, name).Scan(&tag)
		if errors.Is(err, pgx.ErrNoRows) {
			return rlslab.Errorf(rlslab.EUNAVAILABLE, "256 rlslab instances are registered on this database: no tag is free for another")
		}
		if err != nil {
			return err
		}
		var got string
		err = tx.QueryRow(ctx, `
			INSERT INTO rlslab.instances AS i (name, address, lock_id, tag, expires_at, proxy_address) VALUES ($1, $2, $3, $4, now() + $5::interval, $6)
			ON CONFLICT (name) DO UPDATE SET address = EXCLUDED.address, lock_id = EXCLUDED.lock_id, tag = EXCLUDED.tag, started_at = now(), expires_at = EXCLUDED.expires_at, proxy_address = EXCLUDED.proxy_address
			WHERE i.expires_at < now() OR NOT `+lockHeldSQL("i.lock_id")+`
			RETURNING name`, name, reg.address, int64(uint32(reg.lockID)), tag, instanceTTL.String(), reg.proxy).Scan(&got)
		if errors.Is(err, pgx.ErrNoRows) {
			return rlslab.Errorf(rlslab.EINVALID, "another rlslab instance named %q is running on this database: give this one another -instance name", name)
		}
		return err
	})
	return tag, err
}

// lockHeldSQL is an SQL condition: the instance lock of the lock id in col
// is held.
func lockHeldSQL(col string) string {
	return fmt.Sprintf(`EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %d AND objid = %s::oid AND objsubid = 2 AND granted)`, lockClass, col)
}

// openLeaser claims this instance's own connections of the server's
// budget. It fails when the other instances' leases leave no room for
// them.
func openLeaser(ctx context.Context, pool *pgxpool.Pool, server, instance string, total, base int, a *admission, log *slog.Logger, fails *failureLog) (*leaser, error) {
	l := &leaser{pool: pool, server: server, instance: instance, total: total, base: base, a: a, log: log, fails: fails}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		others, err := l.lockAndRead(ctx, tx)
		if err != nil {
			return err
		}
		held := 0
		for _, o := range others {
			held += o.conns
		}
		if held+base > total {
			return rlslab.Errorf(rlslab.EUNAVAILABLE, "the server's connection budget (%d) is leased by %d other rlslab instances (%d connections): this one needs %d of its own; raise max_connections or stop an instance",
				total, len(others), held, base)
		}
		_, err = tx.Exec(ctx, `INSERT INTO rlslab.leases (server, instance, conns, used) VALUES ($1, $2, $3, $3)
			ON CONFLICT (server, instance) DO UPDATE SET conns = EXCLUDED.conns, used = EXCLUDED.used, oldest_since = NULL, oldest_need = 0, waiting_since = '{}'`,
			server, instance, base)
		return err
	})
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.shared = leased{on: true, room: a.limit, wake: make(chan struct{}, 1)}
	a.mu.Unlock()
	return l, nil
}

// lockAndRead locks the server's row (made if missing) and returns the
// live leases of the other instances.
func (l *leaser) lockAndRead(ctx context.Context, tx pgx.Tx) ([]otherLease, error) {
	if _, err := tx.Exec(ctx, `INSERT INTO rlslab.servers (id, budget) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET budget = EXCLUDED.budget, updated_at = now()`, l.server, l.total); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, `SELECT l.instance, l.conns, l.used, l.oldest_since, l.oldest_need, l.waiting_since
		FROM rlslab.leases l JOIN rlslab.instances i ON i.name = l.instance
		WHERE l.server = $1 AND l.instance <> $2 AND i.expires_at > now()`, l.server, l.instance)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (otherLease, error) {
		var o otherLease
		err := r.Scan(&o.instance, &o.conns, &o.used, &o.oldest, &o.oldNeed, &o.waitingSince)
		return o, err
	})
}

// decide returns the runs' part of the lease for the queue q, given the
// other instances' leases: what is used, plus the waiting runs, in turn,
// that fit in what the others leave. A run that has waited starveAfter
// anywhere has the connections kept for it: the instance where the oldest
// such run waits gathers them as they free up, and every other instance
// leaves them alone.
func decide(q queueSnapshot, others []otherLease, total, base int, now time.Time) int {
	held := base
	for _, o := range others {
		held += o.conns
	}
	room := total - held // for this instance's runs
	// The run that waited longest anywhere, if it has waited starveAfter.
	var starving *otherLease
	mine := q.strict
	for i, o := range others {
		if o.oldest == nil || now.Sub(*o.oldest) < starveAfter {
			continue
		}
		if (mine && o.oldest.Before(q.oldest)) || (!mine && (starving == nil || o.oldest.Before(*starving.oldest))) {
			starving, mine = &others[i], false
		}
	}
	if mine {
		// Gather connections for this instance's oldest run.
		return max(q.used, min(q.used+q.oldNeed, room))
	}
	if starving != nil {
		// Keep for another instance's oldest run what it still lacks.
		room -= max(0, starving.oldNeed-(starving.conns-starving.used))
	}
	if q.strict {
		// Only this instance's oldest run may start here.
		if q.used+q.oldNeed <= room {
			return q.used + q.oldNeed
		}
		return q.used
	}
	runs := q.used
	for _, n := range q.needs {
		if runs+n <= room {
			runs += n
		}
	}
	return runs
}

// cycle puts the queue to the shared budget once: it writes the lease
// (and the heartbeat), and hands the result to the queue. It returns
// whether runs still wait.
func (l *leaser) cycle(ctx context.Context) (waiting bool, err error) {
	q := l.a.freezeLease()
	if q.since == nil {
		q.since = []time.Time{} // an empty array, not NULL
	}
	runs, granted := q.used, q.used
	room := -1 // unknown until the other leases are read
	var elsewhere []time.Time
	defer func() {
		// On failure nothing more was claimed: the runs keep what they use.
		l.a.setLease(runs, room, elsewhere)
	}()
	ctx, cancel := context.WithTimeout(ctx, leaseTxTimeout)
	defer cancel()
	err = pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		// The heartbeat; a registration another instance deleted (this
		// one's heartbeat was late) is made again.
		tag, err := tx.Exec(ctx, `UPDATE rlslab.instances SET expires_at = now() + $2::interval WHERE name = $1`, l.instance, instanceTTL.String())
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			l.log.Warn("this instance's registration was gone (its heartbeat was late); registering again", "instance", l.instance)
			if _, err := tx.Exec(ctx, `INSERT INTO rlslab.instances (name, address, lock_id, tag, expires_at, proxy_address) VALUES ($1, $2, $3, $4, now() + $5::interval, $6)
				ON CONFLICT (name) DO UPDATE SET expires_at = EXCLUDED.expires_at`,
				l.instance, l.reg.address, int64(uint32(l.reg.lockID)), l.reg.tag, instanceTTL.String(), l.reg.proxy); err != nil {
				return err
			}
		}
		others, err := l.lockAndRead(ctx, tx)
		if err != nil {
			return err
		}
		want := decide(q, others, l.total, l.base, time.Now())
		room = l.total - l.base
		for _, o := range others {
			room -= o.conns
		}
		var oldest *time.Time
		if len(q.since) > 0 {
			oldest = &q.oldest
		}
		ready := 0
		if l.ready != nil {
			ready = l.ready()
		}
		tag, err = tx.Exec(ctx, `UPDATE rlslab.leases SET conns = $3, used = $4, oldest_since = $5, oldest_need = $6, waiting_since = $7, ready = $8
			WHERE server = $1 AND instance = $2`, l.server, l.instance, l.base+want, l.base+q.used, oldest, q.oldNeed, q.since, ready)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			// Another instance took this one for dead (its heartbeat was
			// late): register again.
			l.log.Warn("this instance's lease was gone (its heartbeat was late); leasing again", "instance", l.instance)
			if _, err := tx.Exec(ctx, `INSERT INTO rlslab.leases (server, instance, conns, used, oldest_since, oldest_need, waiting_since, ready)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, l.server, l.instance, l.base+want, l.base+q.used, oldest, q.oldNeed, q.since, ready); err != nil {
				return err
			}
		}
		l.mu.Lock()
		// Other instances are told when connections free up, and when
		// what waits here changes (their queue messages count it).
		tell := want < l.claimed || !slices.Equal(q.since, l.since)
		l.mu.Unlock()
		if tell {
			if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, budgetChannel, l.server); err != nil {
				return err
			}
		}
		granted = want
		for _, o := range others {
			elsewhere = append(elsewhere, o.waitingSince...)
		}
		slices.SortFunc(elsewhere, func(a, b time.Time) int { return a.Compare(b) })
		return nil
	})
	if err != nil {
		return len(q.needs) > 0, err
	}
	runs = granted
	l.mu.Lock()
	l.claimed, l.since = granted, q.since
	l.mu.Unlock()
	return runs < q.used+sum(q.needs), nil
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// run keeps the lease until ctx ends: after every change of the queue,
// every notification of another instance (when runs wait here), with
// backoff while runs wait, and at least every instanceTTL/4 (the
// heartbeat).
func (l *leaser) run(ctx context.Context, notified <-chan struct{}) {
	beat := instanceTTL / 4
	poll := 50 * time.Millisecond
	waiting := false
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.a.shared.wake:
		case <-notified:
			if !waiting {
				continue
			}
		case <-timer.C:
		}
		w, err := l.cycle(ctx)
		if err != nil && ctx.Err() == nil {
			l.fails.Warn("connection budget lease", "err", err)
		}
		next := beat
		if w || err != nil {
			if waiting || err != nil {
				poll = min(2*poll, leasePollMax)
			} else {
				poll = 50 * time.Millisecond
			}
			next = poll/2 + rand.N(poll/2+1) // jittered, so instances do not poll in step
		}
		waiting = w
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// release gives back the whole lease and the instance's registration.
func (l *leaser) release(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, leaseTxTimeout)
	defer cancel()
	return pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM rlslab.instances WHERE name = $1`, l.instance); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, budgetChannel, l.server)
		return err
	})
}

// listen waits for notifications on conn (an instance lock's connection,
// which does nothing else) until ctx ends, and passes each on to the lab
// server whose id is its payload (every server for an empty payload),
// without blocking. A broken connection ends it: the leasers' polling goes
// on.
func listen(ctx context.Context, conn *pgx.Conn, servers []*labServer, log *slog.Logger) {
	if _, err := conn.Exec(ctx, "LISTEN "+budgetChannel); err != nil {
		if ctx.Err() == nil {
			log.Warn("listen for lease changes; polling instead", "err", err)
		}
		return
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("listen for lease changes; polling instead", "err", err)
			}
			return
		}
		for _, s := range servers {
			if n.Payload != "" && n.Payload != s.id {
				continue
			}
			select {
			case s.notified <- struct{}{}:
			default:
			}
		}
	}
}

// sharedState is this instance's part in the budgets it shares: its name,
// its tag, and the goroutines that keep its lease of each lab server's
// budget.
type sharedState struct {
	name    string
	tag     string // this instance's lab ids begin with it
	mu      sync.Mutex
	located map[string]located // other instances by tag, as last read
	// sameServer: rlslab's tables are on a lab server, where the instance
	// lock named in the registration is.
	sameServer bool
	live       atomic.Int32 // live instances, as last counted
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// openShared registers the instance in rlslab's tables and leases its own
// connections of each lab server's budget, then keeps the leases (see
// leaser).
func (m *Manager) openShared(ctx context.Context) (*sharedState, error) {
	pool := m.cfg.Shared
	name := m.cfg.Instance
	if name == "" {
		name = defaultInstanceName()
	}
	// The registration names the instance lock held on the server of
	// rlslab's tables, when that is a lab server: a killed instance's
	// lock goes at once, and the sweep sees it gone.
	tables, err := serverID(ctx, pool)
	if err != nil {
		return nil, fmt.Errorf("server id: %w", err)
	}
	home := m.servers[0]
	s := &sharedState{name: name, located: map[string]located{}}
	for _, srv := range m.servers {
		if srv.id == tables {
			home, s.sameServer = srv, true
		}
	}
	reg := registration{address: m.cfg.Address, proxy: m.cfg.ProxyAddress, lockID: home.inst.id}
	tag, err := registerInstance(ctx, pool, name, reg)
	if err != nil {
		return nil, err
	}
	s.tag = tag
	reg.tag = tag
	var leased []*labServer
	release := func() {
		for _, srv := range leased {
			_ = srv.leaser.release(context.WithoutCancel(ctx))
		}
	}
	for _, srv := range m.servers {
		l, err := openLeaser(ctx, pool, srv.id, name, srv.capa.Budget, ownConns, srv.admit, m.log, m.fails)
		if err != nil {
			release()
			return nil, fmt.Errorf("lab server %s: %w", srv.where, err)
		}
		l.reg = reg
		l.ready = srv.spare.count
		srv.leaser = l
		leased = append(leased, srv)
	}
	lctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	// The instance lock's connection on the tables' server listens, when
	// that is a lab server; else the leasers poll alone.
	if s.sameServer {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); listen(lctx, home.inst.conn, m.servers, m.log) }()
	}
	for _, srv := range m.servers {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); srv.leaser.run(lctx, srv.notified) }()
		m.log.Info("connection budget shared through rlslab's tables", "instance", name, "tag", tag, "server", srv.where, "server_id", srv.id, "budget", srv.capa.Budget, "own", ownConns)
	}
	return s, nil
}

// closeShared stops keeping the leases and gives them back.
func (m *Manager) closeShared() {
	s := m.shared
	if s == nil {
		return
	}
	s.cancel()
	s.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), leaseTxTimeout)
	defer cancel()
	for _, srv := range m.servers {
		if err := srv.leaser.release(ctx); err != nil {
			m.log.Warn("give back the connection budget lease; it expires by itself", "server", srv.where, "err", err)
		}
	}
}

// Name returns the instance's name among those sharing rlslab's tables
// ("" when the budget is not shared).
func (m *Manager) Name() string {
	if m.shared == nil {
		return ""
	}
	return m.shared.name
}

// Tag returns the tag this instance's lab ids begin with ("" when the
// budget is not shared).
func (m *Manager) Tag() string {
	if m.shared == nil {
		return ""
	}
	return m.shared.tag
}

// defaultInstanceName makes up a name unique enough: the host's name and
// a random suffix.
func defaultInstanceName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "rlslab"
	}
	return host + "-" + randomHex(3)
}

// sweepEvery is how often an instance looks for dead instances: their
// registrations and leases are deleted, their labs and roles dropped.
const sweepEvery = 5 * time.Second

// sweepLockKey is the advisory lock one instance holds while it sweeps
// for all (so two do not drop the same labs at once).
const sweepLockKey = lockClass + 1

// reapDead deletes the registrations of dead instances, and with them
// their leases: those whose heartbeat is over, and, when rlslab's tables
// are on a lab server, those whose lock is gone (a killed instance's
// connections close at once, so it is found within sweepEvery). It
// returns their names.
func (m *Manager) reapDead(ctx context.Context) ([]string, error) {
	cond := `expires_at < now()`
	if m.shared.sameServer {
		cond += ` OR NOT ` + lockHeldSQL("lock_id")
	}
	rows, err := m.cfg.Shared.Query(ctx, `DELETE FROM rlslab.instances WHERE name <> $1 AND (`+cond+`) RETURNING name`, m.shared.name)
	if err != nil {
		return nil, err
	}
	gone, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	if len(gone) > 0 {
		if _, err := m.cfg.Shared.Exec(ctx, `SELECT pg_notify($1, '')`, budgetChannel); err != nil {
			return gone, err
		}
	}
	return gone, nil
}

// reapDeadInstances deletes the dead instances' registrations and leases
// (see reapDead) and logs them.
func (m *Manager) reapDeadInstances(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, dropTimeout)
	defer cancel()
	gone, err := m.reapDead(ctx)
	if err != nil {
		m.fails.Warn("sweep: dead instances", "err", err)
	}
	for _, name := range gone {
		m.log.Info("an rlslab instance is gone: its connection budget leases are released", "instance", name)
	}
}

// sweepDead is the periodic sweep of one lab server (and the one at
// start-up): under the server's sweep lock (else another instance is at
// it), the labs and roles of dead instances are dropped.
func (s *labServer) sweepDead(ctx context.Context, startup bool) {
	ctx, cancel := context.WithTimeout(ctx, dropTimeout)
	defer cancel()
	conn, err := s.admin.Acquire(ctx)
	if err != nil {
		s.m.fails.Warn("sweep", "server", s.where, "err", err)
		return
	}
	defer conn.Release()
	// At start-up the sweep waits for one under way to end (what it
	// drops must be gone when Open returns); later it leaves the sweep to
	// the instance at it.
	got := true
	if startup {
		_, err = conn.Exec(ctx, `SELECT pg_advisory_lock($1, 0)`, sweepLockKey)
	} else {
		err = conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, 0)`, sweepLockKey).Scan(&got)
	}
	if err != nil || !got {
		if err != nil {
			s.m.fails.Warn("sweep", "server", s.where, "err", err)
		}
		return
	}
	defer func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1, 0)`, sweepLockKey); err != nil {
			conn.Conn().Close(ctx) // the lock goes with the connection
		}
	}()
	s.sweep(ctx, startup)
}

// labIDLen is the length of a lab id: eight hex digits; with a shared
// budget the first two are the tag of the instance that runs the lab.
const labIDLen = 8

// newLabID returns a new lab id: with a shared budget, this instance's tag
// and six random hex digits, else eight.
func (m *Manager) newLabID() string {
	if m.shared == nil {
		return randomHex(labIDLen / 2)
	}
	return m.shared.tag + randomHex(labIDLen/2-1)
}

// located is where another instance serves, as read at a time.
type located struct {
	name, address, proxy string
	at                   time.Time
}

// locateFor is how long a lookup of an instance by tag is reused.
const locateFor = 2 * time.Second

// Locate returns the name and the HTTP address of the instance that runs
// lab id when that is another live instance; "" and no error when it is
// this one, when the budget is not shared, or when no live instance has
// the id's tag (the lab is gone: this instance answers for it).
func (m *Manager) Locate(ctx context.Context, id string) (name, address string, err error) {
	l, err := m.locate(ctx, id)
	return l.name, l.address, err
}

// locate returns the instance that runs lab id when that is another live
// instance, as Locate does, with where its proxy is.
func (m *Manager) locate(ctx context.Context, id string) (located, error) {
	s := m.shared
	if s == nil || len(id) != labIDLen || id[:2] == s.tag {
		return located{}, nil
	}
	tag := id[:2]
	s.mu.Lock()
	l, ok := s.located[tag]
	s.mu.Unlock()
	if ok && time.Since(l.at) < locateFor {
		return l, nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	stale := l
	err := m.cfg.Shared.QueryRow(ctx, `SELECT name, address, proxy_address FROM rlslab.instances WHERE tag = $1 AND expires_at > now()`, tag).Scan(&l.name, &l.address, &l.proxy)
	if errors.Is(err, pgx.ErrNoRows) {
		l, err = located{}, nil
	}
	if err != nil {
		if ok && time.Since(stale.at) < instanceTTL {
			// rlslab's tables answer late (a loaded server): where the
			// instance was a moment ago is where it still is, unless
			// its heartbeat has lapsed since.
			return stale, nil
		}
		return located{}, m.dbError("locate a lab", err)
	}
	l.at = time.Now()
	s.mu.Lock()
	s.located[tag] = l
	s.mu.Unlock()
	return l, nil
}
