// Package sessions owns who is here and what they own: labs (each learner's
// sandbox database with its own roles and data), the lifecycle of the runs
// in them, the server-wide connection budget and its admission queue, and
// the spare sandboxes that make a new lab ready at once; and, on rlslab's
// own tables (package store), the services around them: workshops,
// learners' progress and predictions, and recordings of finished runs. The
// manager tells its subscribers (the Keeper, Progress) of every run that
// ends. (Labs are not Postgres sessions; the package name is the project's
// agreed layout.)
package sessions

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Bounds and defaults of Config.
const (
	DefaultMaxLabs     = 250
	MaxMaxLabs         = 2000
	DefaultTTL         = 30 * time.Minute
	DefaultMaxLifetime = 8 * time.Hour
	DefaultConnLimit   = 12
	MinConnLimit       = 4
	MaxConnLimit       = 100
	DefaultSpares      = 4
	// DefaultLabsPerAddress is how many labs one client address may hold
	// outside a workshop (a room behind one address joins a workshop).
	DefaultLabsPerAddress = 10
	// recycleIdle is how long a lab must have been idle before a new lab
	// may take its place when every lab is in use.
	recycleIdle   = 5 * time.Minute
	MaxSpares     = 500
	DefaultMargin = 10
	// AdminConns is the size of rlslab's admin pool (lab creation, server
	// counts, health); one more connection holds the instance's lock.
	AdminConns = 6
	// MaintConns bounds the direct connections to lab databases that
	// building and reseeding sandboxes use at once.
	MaintConns = 4
	// ownConns is what the budget sets aside before runs: the admin pool,
	// the instance lock and the maintenance connections.
	ownConns = AdminConns + 1 + MaintConns

	connCloseTimeout = 5 * time.Second
	dropTimeout      = 30 * time.Second
	stopTimeout      = 5 * time.Second
	dbTimeout        = 5 * time.Second
)

// Config configures a Manager.
type Config struct {
	AdminURL string // a superuser URL (from internal/pgenv)
	// Admin, if set, is the admin pool (from OpenAdmin on AdminURL), which
	// the caller shares with rlslab's own tables and closes itself; nil
	// makes Open open one of its own and Close close it.
	Admin       *pgxpool.Pool
	MaxLabs     int           // labs open at once; 0 means DefaultMaxLabs
	TTL         time.Duration // a lab without its owner's activity is dropped after this; 0 means DefaultTTL
	MaxLifetime time.Duration // no lab lives longer; 0 means DefaultMaxLifetime
	ConnLimit   int           // each lab app role's CONNECTION LIMIT; 0 means DefaultConnLimit
	// Budget is the most connections rlslab may hold on the server; 0
	// computes it as max_connections − superuser_reserved_connections −
	// Margin.
	Budget int
	// Margin is what the computed budget leaves for other clients; a
	// negative value means none, 0 means DefaultMargin.
	Margin int
	// Spares is how many sandboxes are kept ready in advance; a negative
	// value means none, 0 means DefaultSpares.
	Spares int
	// LabsPerAddress caps the labs one client address may hold outside a
	// workshop; at the cap, that address's least recently active idle lab
	// is recycled for the new one. 0 means DefaultLabsPerAddress, a
	// negative value no cap.
	LabsPerAddress int
	Bouncers       engine.BouncerStarter // how PgBouncer lessons get one; nil: they say none is available
	Catalog        *engine.Catalog
	// Subscribers are told of every run of every lab that ends (done,
	// failed or cancelled), with its final state and its frames, in order,
	// once the run's connections are back in the budget. They run on the
	// run's goroutine: keep them short (Lab.Wait returns after them).
	Subscribers []RunSubscriber
	Logger      *slog.Logger
	// SQLTimeout is free play's time limit per call (0: DefaultSQLTimeout);
	// FreePlayIdle closes a free-play pool left idle that long (0:
	// DefaultFreePlayIdle). See freeplay.go.
	SQLTimeout, FreePlayIdle time.Duration
	// Shared, if set, is the pool of rlslab's own tables (migrated by
	// package store), where the instances that share the server register
	// and lease its connection budget (lease.go); nil keeps the budget in
	// this process alone.
	Shared *pgxpool.Pool
	// Instance names this instance among those sharing rlslab's tables;
	// "" makes up a unique name. Address is where it serves HTTP, for
	// the others to forward a lab's requests to; ProxyAddress is where its
	// PostgreSQL proxy is ("" for none), for the others' proxies to forward
	// an app's connection to a lab this instance runs.
	Instance, Address, ProxyAddress string
	// LabServers are the superuser URLs of the PostgreSQL servers labs are
	// made on; none means AdminURL's server alone. Each server has its own
	// budget (computed from its max_connections, or Budget), spares (Spares
	// each) and sweep; a new lab goes to one with a spare ready, else to
	// the least loaded that answers. A URL equal to AdminURL shares Admin.
	LabServers []string
}

// RunSubscriber is told of every run that ends (see Config.Subscribers).
type RunSubscriber interface {
	RunEnded(r RunRecord)
}

// RunEndFunc is a function that is a RunSubscriber.
type RunEndFunc func(r RunRecord)

// RunEnded calls f(r).
func (f RunEndFunc) RunEnded(r RunRecord) { f(r) }

// withDefaults fills zero fields and checks bounds.
func (c Config) withDefaults() (Config, error) {
	if c.MaxLabs == 0 {
		c.MaxLabs = DefaultMaxLabs
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.MaxLifetime == 0 {
		c.MaxLifetime = DefaultMaxLifetime
	}
	if c.ConnLimit == 0 {
		c.ConnLimit = DefaultConnLimit
	}
	switch {
	case c.Margin == 0:
		c.Margin = DefaultMargin
	case c.Margin < 0:
		c.Margin = 0
	}
	switch {
	case c.LabsPerAddress == 0:
		c.LabsPerAddress = DefaultLabsPerAddress
	case c.LabsPerAddress < 0:
		c.LabsPerAddress = 0
	}
	switch {
	case c.Spares == 0:
		c.Spares = DefaultSpares
	case c.Spares < 0:
		c.Spares = 0
	}
	if c.MaxLabs < 1 || c.MaxLabs > MaxMaxLabs {
		return c, rlslab.Errorf(rlslab.EINVALID, "max labs %d: want 1 to %d", c.MaxLabs, MaxMaxLabs)
	}
	if c.ConnLimit < MinConnLimit || c.ConnLimit > MaxConnLimit {
		return c, rlslab.Errorf(rlslab.EINVALID, "lab connection limit %d: want %d to %d", c.ConnLimit, MinConnLimit, MaxConnLimit)
	}
	if c.TTL < time.Second {
		return c, rlslab.Errorf(rlslab.EINVALID, "lab TTL %s: want at least 1s", c.TTL)
	}
	if c.MaxLifetime < c.TTL {
		return c, rlslab.Errorf(rlslab.EINVALID, "lab lifetime %s: want at least the TTL (%s)", c.MaxLifetime, c.TTL)
	}
	if c.Spares > MaxSpares {
		return c, rlslab.Errorf(rlslab.EINVALID, "spares %d: want 0 to %d", c.Spares, MaxSpares)
	}
	if c.Budget < 0 {
		return c, rlslab.Errorf(rlslab.EINVALID, "connection budget %d: want a positive number, or 0 to compute it from the server", c.Budget)
	}
	if c.Catalog == nil {
		return c, errors.New("sessions: Config.Catalog is required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Capacity is what the manager may use of the server, as computed at Open.
type Capacity struct {
	MaxConnections int `json:"max_connections"` // the server's max_connections
	Reserved       int `json:"reserved"`        // superuser_reserved_connections
	Budget         int `json:"budget"`          // the most connections rlslab holds at once
	Runs           int `json:"runs"`            // the part of the budget runs are admitted against
}

// Manager creates, finds and expires labs, and admits their runs against
// the connection budget.
type Manager struct {
	cfg      Config
	admin    *pgxpool.Pool // the server of AdminURL (rlslab's tables, by default the one lab server)
	ownAdmin bool          // Open opened admin, and Close closes it
	prober   *prober       // asks whether admin's server answers
	log      *slog.Logger
	fails    *failureLog  // failures that recur while the database is down
	servers  []*labServer // where labs are made (servers.go)
	shared   *sharedState // nil: the budget is this process's alone

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	labs     map[string]*Lab
	byOwner  map[string]*Lab
	creating map[string]*creation // by owner token
	sems     map[string]chan struct{}
	closed   bool
}

// creation is a lab being made for one owner; concurrent requests of the
// same owner wait for it instead of making another.
type creation struct {
	addr  string
	srv   *labServer   // where the lab is made
	ahead atomic.Int64 // labs waiting ahead of it for a sandbox
	done  chan struct{}
	lab   *Lab
	err   error
}

// Open connects the admin pool and the lab servers' own, computes each
// lab server's connection budget, drops what crashed rlslab processes left
// behind, and starts the reaper and the spare sandboxes.
func Open(ctx context.Context, cfg Config) (*Manager, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.AdminURL == "" && cfg.Admin == nil && len(cfg.LabServers) > 0 {
		cfg.AdminURL = cfg.LabServers[0]
	}
	admin, own := cfg.Admin, false
	if admin == nil {
		if admin, err = OpenAdmin(ctx, cfg.AdminURL); err != nil {
			return nil, err
		}
		own = true
	}
	m := &Manager{cfg: cfg, admin: admin, ownAdmin: own, prober: newProber(admin), log: cfg.Logger, fails: newFailureLog(cfg.Logger, failLogEvery), labs: map[string]*Lab{}, byOwner: map[string]*Lab{},
		creating: map[string]*creation{}, sems: map[string]chan struct{}{}}
	fail := func(err error) (*Manager, error) {
		for _, s := range m.servers {
			s.inst.unlock()
			s.closeAdmin()
		}
		if own {
			admin.Close()
		}
		return nil, err
	}
	urls := cfg.LabServers
	if len(urls) == 0 {
		urls = []string{cfg.AdminURL}
	}
	adminID := ""
	for _, url := range urls {
		var pool *pgxpool.Pool
		if url == cfg.AdminURL {
			pool = admin
		}
		s, err := m.openServer(ctx, url, pool)
		if err != nil {
			return fail(err)
		}
		if s.ownAdmin && adminID == "" {
			if adminID, err = serverID(ctx, admin); err != nil {
				s.inst.unlock()
				s.closeAdmin()
				return fail(fmt.Errorf("server id: %w", err))
			}
		}
		if s.ownAdmin && s.id == adminID {
			// AdminURL's server by another URL: one admin pool for it.
			s.admin.Close()
			s.admin, s.ownAdmin, s.prober = admin, false, newProber(admin)
		}
		for _, o := range m.servers {
			if o.id == s.id {
				s.inst.unlock()
				s.closeAdmin()
				return fail(rlslab.Errorf(rlslab.EINVALID, "lab servers %s and %s are one PostgreSQL server: give each once", o.where, s.where))
			}
		}
		m.servers = append(m.servers, s)
	}
	for _, s := range m.servers {
		s.spare = newSpares(s, cfg.Spares, min(MaxSpares, cfg.MaxLabs))
	}
	if cfg.Shared != nil {
		if m.shared, err = m.openShared(ctx); err != nil {
			return fail(err)
		}
		m.reapDeadInstances(ctx)
		m.countLive(ctx)
	}
	for _, s := range m.servers {
		s.sweepDead(ctx, true)
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.reap() }()
	for _, s := range m.servers {
		s.spare.start(m.ctx, &m.wg)
		cfg.Logger.Info("lab server ready", "server", s.where, "lock", s.inst.id, "connection_budget", s.capa.Budget, "for_runs", s.capa.Runs, "server_max_connections", s.capa.MaxConnections,
			"spares", cfg.Spares, "formula", "budget = max_connections − reserved − margin; runs = budget − admin pool − instance lock − maintenance")
	}
	cfg.Logger.Info("labs ready", "instance", m.servers[0].inst.id, "lab_servers", len(m.servers), "max_labs", cfg.MaxLabs, "lab_conn_limit", cfg.ConnLimit, "ttl", cfg.TTL, "max_lifetime", cfg.MaxLifetime)
	return m, nil
}

// OpenAdmin connects rlslab's admin pool to the superuser URL: AdminConns
// connections at most, counted in the connection budget. The caller that
// opens it hands it to Open (Config.Admin) and to rlslab's own tables, and
// closes it after both.
func OpenAdmin(ctx context.Context, url string) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("admin URL: %w", err)
	}
	pcfg.MaxConns, pcfg.MinConns = AdminConns, 0
	pcfg.MaxConnIdleTime = time.Minute
	pcfg.ConnConfig.RuntimeParams["application_name"] = "rlslab admin"
	// rlslab's own writes (learners, progress, recordings) need not wait
	// for the disk: a server crash may lose the last fraction of a second
	// of them, never leave them half-written. Fifty learners arriving at
	// once then do not queue behind each other's WAL flush.
	pcfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	pcfg.ConnConfig.ConnectTimeout = dbTimeout
	pcfg.ConnConfig.Tracer = &liveness{} // the outage guard's sign of life
	admin, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("admin pool: %w", err)
	}
	return admin, nil
}

// Instance returns the number that marks this manager's databases and
// roles on its first lab server (see the sweep).
func (m *Manager) Instance() int32 { return m.servers[0].inst.id }

// Capacity returns the connection budget computed at Open: with several
// lab servers, the sum of theirs.
func (m *Manager) Capacity() Capacity {
	var c Capacity
	for _, s := range m.servers {
		c.MaxConnections += s.capa.MaxConnections
		c.Reserved += s.capa.Reserved
		c.Budget += s.capa.Budget
		c.Runs += s.capa.Runs
	}
	return c
}

// Usage is what the manager holds right now.
type Usage struct {
	Labs     int `json:"labs"`
	MaxLabs  int `json:"max_labs"`
	Spares   int `json:"spares"`
	RunConns int `json:"run_connections"` // connections admitted runs may hold
	Queued   int `json:"queued_runs"`
	Budget   int `json:"budget"`
}

// Usage returns the labs and connections in use.
func (m *Manager) Usage() Usage {
	m.mu.Lock()
	n := len(m.labs)
	m.mu.Unlock()
	u := Usage{Labs: n, MaxLabs: m.cfg.MaxLabs}
	for _, s := range m.servers {
		used, queued := s.admit.usage()
		u.Spares += s.spare.count()
		u.RunConns += used
		u.Queued += queued
		u.Budget += s.capa.Budget
	}
	return u
}

// Catalog returns the scenarios labs can run.
func (m *Manager) Catalog() *engine.Catalog { return m.cfg.Catalog }

// Admin returns the admin pool (read-only use: server counts, tests).
func (m *Manager) Admin() *pgxpool.Pool { return m.admin }

// MaxLabs returns the cap on open labs.
func (m *Manager) MaxLabs() int { return m.cfg.MaxLabs }

// Ping checks within a second that the database answers (rlslab's admin
// server), and that at least one lab server does; the error says so in
// words (the driver's error, with host and port, goes to the log). It
// asks the server itself (see prober), not a pool: a loaded instance whose
// pool is busy still answers that its database is there.
func (m *Manager) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := m.prober.probe(ctx); err != nil {
		return m.dbError("ping", err)
	}
	var err error
	for _, s := range m.servers {
		if s.admin == m.admin {
			return nil
		}
		if err = s.prober.probe(ctx); err == nil {
			return nil
		}
	}
	return m.dbError("ping", err)
}

// ErrDatabaseDown is the message of an outage.
const ErrDatabaseDown = "the database is not answering; retrying"

// ErrDatabaseBusy is the message of a call that ran out of time on a
// database that still answers (a loaded machine, many requests at once).
const ErrDatabaseBusy = "the database is answering slowly right now; retrying"

// dbError turns a failure to reach the database into an EUNAVAILABLE error
// that says so in words, and logs the driver's error; other errors pass
// through.
func (m *Manager) dbError(what string, err error) error {
	if err == nil || rlslab.ErrorCode(err) != rlslab.EINTERNAL {
		return err
	}
	if isOutage(err) {
		m.fails.Warn("database not answering", "op", what, "err", err)
		return rlslab.Errorf(rlslab.EUNAVAILABLE, "%s", ErrDatabaseDown)
	}
	return err
}

// Create returns the lab of the browser that holds owner (a secret token
// it keeps in a cookie), making one if it has none: one lab per browser,
// even under concurrent requests. A spare sandbox makes it ready at once.
// When every lab is in use, a lab idle for a while is recycled for it; it
// fails with EUNAVAILABLE when none is.
func (m *Manager) Create(ctx context.Context, owner string) (*Lab, error) {
	return m.CreateFor(ctx, owner, "")
}

// CreateFor is Create for a browser at client address addr: an address
// holds at most Config.LabsPerAddress labs, and at that cap its least
// recently active idle lab is recycled for the new one (its learner keeps
// what rlslab's tables hold and gets a new lab on the next action). An
// empty addr has no cap (workshop participants share a room's address).
func (m *Manager) CreateFor(ctx context.Context, owner, addr string) (*Lab, error) {
	if owner == "" {
		return nil, rlslab.Errorf(rlslab.EINVALID, "a lab needs an owner")
	}
	var srv *labServer
	m.mu.Lock()
	known := m.byOwner[owner] != nil || m.creating[owner] != nil
	m.mu.Unlock()
	if !known {
		// Where the new lab goes: a server with a spare ready, else one
		// that answers (a lab that would wait in line for a sandbox is
		// not put behind an outage that no build gets past).
		var err error
		if srv, err = m.choose(ctx); err != nil {
			return nil, err
		}
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, rlslab.Errorf(rlslab.EUNAVAILABLE, "rlslab is shutting down")
	}
	if l := m.byOwner[owner]; l != nil {
		m.mu.Unlock()
		l.Touch()
		return l, nil
	}
	if c := m.creating[owner]; c != nil {
		m.mu.Unlock()
		return c.wait(ctx)
	}
	var recycled *Lab
	if n := m.cfg.LabsPerAddress; addr != "" && n > 0 && m.addrLabsLocked(addr) >= n {
		recycled = m.leastActiveLocked(func(l *Lab) bool { return l.addr == addr }, 0)
		if recycled == nil {
			m.mu.Unlock()
			return nil, rlslab.Errorf(rlslab.ETOOMANY, "this address already has %d labs with runs going; reset one or wait for a run to end", n)
		}
	}
	if recycled == nil && len(m.labs)+len(m.creating) >= m.cfg.MaxLabs {
		recycled = m.leastActiveLocked(func(*Lab) bool { return true }, recycleIdle)
		if recycled == nil {
			next := m.nextFreeLocked()
			m.mu.Unlock()
			if m.cfg.MaxLabs == 1 {
				return nil, rlslab.Errorf(rlslab.EUNAVAILABLE, "the only lab is in use; %s", next)
			}
			return nil, rlslab.Errorf(rlslab.EUNAVAILABLE, "all %d labs are in use; %s", m.cfg.MaxLabs, next)
		}
	}
	if recycled != nil {
		m.forgetLocked(recycled)
		m.wg.Add(1) // under m.mu: Close waits for it only after marking closed
	}
	c := &creation{done: make(chan struct{}), addr: addr, srv: srv}
	m.creating[owner] = c
	m.wg.Add(1) // for finishCreate, under m.mu as above
	m.mu.Unlock()
	if recycled != nil {
		m.log.Info("lab recycled for a new one", "lab", recycled.ID, "idle", recycled.IdleFor().Round(time.Second))
		go func() {
			defer m.wg.Done()
			dctx, cancel := context.WithTimeout(context.Background(), dropTimeout)
			defer cancel()
			recycled.close(dctx)
		}()
	}

	// The lab is made on a deadline of its own: a caller that stops
	// waiting (its request timed out while the lab waits in line for a
	// sandbox) finds it made, or still in line, when it asks again.
	go func() {
		defer m.wg.Done()
		cctx, cancel := context.WithTimeout(m.ctx, createDeadline)
		defer cancel()
		m.finishCreate(cctx, owner, addr, c)
	}()
	return c.wait(ctx)
}

// createDeadline bounds how long a lab may wait in line for a sandbox.
const createDeadline = 5 * time.Minute

// wait waits for the creation to end, or for ctx: then it says the lab is
// being prepared, and how many labs wait ahead of it.
func (c *creation) wait(ctx context.Context) (*Lab, error) {
	select {
	case <-c.done:
		return c.lab, c.err
	case <-ctx.Done():
		select {
		case <-c.done:
			return c.lab, c.err
		default:
		}
		return nil, errPreparing(int(c.ahead.Load()))
	}
}

// finishCreate makes the lab of a creation and registers it.
func (m *Manager) finishCreate(ctx context.Context, owner, addr string, c *creation) {
	c.lab, c.err = m.create(ctx, c.srv, owner, func(ahead int) { c.ahead.Store(int64(ahead)) })
	if c.lab != nil {
		c.lab.addr = addr
	}
	m.mu.Lock()
	delete(m.creating, owner)
	if c.err == nil {
		if m.closed {
			c.err = rlslab.Errorf(rlslab.EUNAVAILABLE, "rlslab is shutting down")
			m.mu.Unlock()
			c.lab.close(context.WithoutCancel(ctx))
			c.lab = nil
		} else {
			m.labs[c.lab.ID] = c.lab
			m.byOwner[owner] = c.lab
			m.mu.Unlock()
		}
	} else {
		m.mu.Unlock()
	}
	close(c.done)
}

// addrLabsLocked counts the labs held and being made for addr.
func (m *Manager) addrLabsLocked(addr string) int {
	n := 0
	for _, l := range m.labs {
		if l.addr == addr {
			n++
		}
	}
	for _, c := range m.creating {
		if c.addr == addr {
			n++
		}
	}
	return n
}

// leastActiveLocked returns the lab among those that match with no run
// going, idle at least minIdle, whose owner was active least recently; nil
// if there is none.
func (m *Manager) leastActiveLocked(match func(*Lab) bool, minIdle time.Duration) *Lab {
	var pick *Lab
	var pickIdle time.Duration
	for _, l := range m.labs {
		if !match(l) || l.Running() {
			continue
		}
		if idle := l.IdleFor(); idle >= minIdle && (pick == nil || idle > pickIdle) {
			pick, pickIdle = l, idle
		}
	}
	return pick
}

// forgetLocked removes l from the manager's maps (it is about to close).
func (m *Manager) forgetLocked(l *Lab) {
	delete(m.labs, l.ID)
	if m.byOwner[l.owner] == l {
		delete(m.byOwner, l.owner)
	}
}

// nextFreeLocked says when a lab frees up: the soonest expiry of a lab.
func (m *Manager) nextFreeLocked() string {
	var soonest time.Time
	for _, l := range m.labs {
		if at := l.expiresAt(m.cfg.TTL, m.cfg.MaxLifetime); soonest.IsZero() || at.Before(soonest) {
			soonest = at
		}
	}
	if soonest.IsZero() {
		return "try again in a minute"
	}
	wait := time.Until(soonest).Round(time.Second)
	if wait < time.Second {
		wait = time.Second
	}
	return fmt.Sprintf("the next one frees up in about %s, unless its owner comes back", wait)
}

// create makes a lab on srv (nil: the server choose picks) from a spare
// sandbox, or from the next one built.
func (m *Manager) create(ctx context.Context, srv *labServer, owner string, place func(ahead int)) (*Lab, error) {
	start := time.Now()
	if srv == nil {
		var err error
		if srv, err = m.choose(ctx); err != nil {
			return nil, err
		}
	}
	sb, spare, err := srv.spare.take(ctx, place)
	if err != nil {
		if m.ctx.Err() != nil {
			return nil, rlslab.Errorf(rlslab.EUNAVAILABLE, "rlslab is shutting down")
		}
		if perr := srv.ping(context.Background()); perr != nil {
			return nil, m.dbError("create lab", perr)
		}
		return nil, rlslab.Errorf(rlslab.EUNAVAILABLE, "no lab could be prepared in %s; try again", createDeadline)
	}
	l := newLab(srv, sb, owner)
	m.log.Info("lab created", "lab", l.ID, "server", srv.where, "spare", spare, "took", time.Since(start).Round(time.Microsecond))
	return l, nil
}

// Get returns the lab with that id, or ENOTFOUND.
func (m *Manager) Get(id string) (*Lab, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.labs[id]; ok {
		return l, nil
	}
	return nil, rlslab.Errorf(rlslab.ENOTFOUND, "no lab %q: it expired or rlslab restarted", id)
}

// Resume returns the lab with that id or, when that lab is gone (it
// expired, closed with its workshop, or rlslab restarted since) and owner
// names a learner, the learner's lab in its place: the one they have now,
// or a new one made as CreateFor makes it. replaced says the lab returned
// is not the one asked for. A lab that is there is returned whoever owns
// it: the caller checks that. Without an owner, a gone lab is ENOTFOUND.
func (m *Manager) Resume(ctx context.Context, id, owner, addr string) (lab *Lab, replaced bool, err error) {
	if l, err := m.Get(id); err == nil {
		return l, false, nil
	}
	if owner == "" {
		return nil, false, rlslab.Errorf(rlslab.ENOTFOUND, "no lab %q: it expired or rlslab restarted; open the lesson again for a new one", id)
	}
	l, err := m.CreateFor(ctx, owner, addr)
	if err != nil {
		return nil, false, err
	}
	m.log.Info("lab gone, its owner carries on in another", "gone", id, "lab", l.ID)
	return l, true, nil
}

// ForOwner returns the lab owned by the holder of token, or nil.
func (m *Manager) ForOwner(token string) *Lab {
	if token == "" {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.byOwner[token]
}

// Labs returns the ids of the open labs, sorted.
func (m *Manager) Labs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	ids := make([]string, 0, len(m.labs))
	for id := range m.labs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// CloseLab stops the lab's run and drops its database and roles. The drop
// runs on its own deadline, whatever happens to ctx; if it fails, the
// reaper tries again.
func (m *Manager) CloseLab(ctx context.Context, id string) error {
	m.mu.Lock()
	l, ok := m.labs[id]
	if ok {
		delete(m.labs, id)
		if m.byOwner[l.owner] == l {
			delete(m.byOwner, l.owner)
		}
	}
	m.mu.Unlock()
	if !ok {
		return rlslab.Errorf(rlslab.ENOTFOUND, "no lab %q", id)
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dropTimeout)
	defer cancel()
	l.close(dctx)
	return nil
}

// Close closes every lab (dropping their databases and roles) and the spare
// sandboxes, stops the reaper and closes the admin pool. Every run stops
// first, at once (each is reported as cancelled); then the sandboxes are
// dropped in parallel, on connections of the runs' budget that the stopped
// runs gave back. It returns when done or when ctx ends, whichever is
// first.
func (m *Manager) Close(ctx context.Context) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	labs := m.labs
	m.labs, m.byOwner = map[string]*Lab{}, map[string]*Lab{}
	m.mu.Unlock()
	m.cancel()
	begin := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		var mu sync.Mutex
		ids := map[*labServer][]string{}
		for _, l := range labs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if l.shut() {
					mu.Lock()
					ids[l.srv] = append(ids[l.srv], l.ID)
					mu.Unlock()
				}
			}()
		}
		// The reaper and the spares' builder stop at once unless a
		// build is under way (it has a deadline of its own).
		m.wg.Wait()
		wg.Wait()
		var dropped, all atomic.Int64
		var sw sync.WaitGroup
		for _, s := range m.servers {
			todo := append(ids[s], s.spare.takeAll()...)
			all.Add(int64(len(todo)))
			sw.Add(1)
			go func() { defer sw.Done(); dropped.Add(int64(s.dropAll(ctx, todo))) }()
		}
		sw.Wait()
		m.log.Info("labs closed", "labs", len(labs), "dropped", dropped.Load(), "of", all.Load(), "took", time.Since(begin).Round(time.Millisecond))
	}()
	select {
	case <-done:
	case <-ctx.Done():
		m.log.Warn("closing labs took too long; the next start sweeps what is left")
	}
	m.closeShared()
	for _, s := range m.servers {
		s.inst.unlock()
		s.closeAdmin()
	}
	if m.ownAdmin {
		m.admin.Close()
	}
}

// closeDropConns bounds the connections that drop sandboxes at once when
// the manager closes: every DROP DATABASE forces a checkpoint, and drops
// that run together share one.
const closeDropConns = 32

// dropAll drops the sandboxes ids and returns how many it dropped: first
// their databases, on up to closeDropConns connections taken from the runs'
// budget (MaintConns when that is not free), then all their roles in one
// statement. A failure is left for the next start's sweep.
func (s *labServer) dropAll(ctx context.Context, ids []string) int {
	if len(ids) == 0 {
		return 0
	}
	workers := min(len(ids), closeDropConns, s.capa.Runs)
	actx, cancel := context.WithTimeout(ctx, stopTimeout)
	err := s.admit.acquire(actx, "rlslab shutdown", workers, func(int) {})
	cancel()
	if err != nil {
		// Runs still hold the budget: the maintenance connections only.
		return s.dropEach(ctx, ids, min(len(ids), MaintConns))
	}
	defer s.admit.release("rlslab shutdown", workers)
	begin := time.Now()
	cfg := s.admin.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = "rlslab maintenance"
	todo := make(chan string, len(ids))
	for _, id := range ids {
		todo <- id
	}
	close(todo)
	var mu sync.Mutex
	gone := make([]string, 0, len(ids))
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				s.m.fails.Warn("drop lab; the next start sweeps it", "err", err)
				return
			}
			defer conn.Close(context.WithoutCancel(ctx))
			for id := range todo {
				if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{labNames(id).db}.Sanitize()+" WITH (FORCE)"); err != nil {
					s.m.fails.Warn("drop lab; the next start sweeps it", "lab", id, "err", err)
					continue
				}
				mu.Lock()
				gone = append(gone, id)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	s.m.log.Debug("lab databases dropped", "count", len(gone), "of", len(ids), "connections", workers, "took", time.Since(begin).Round(time.Millisecond))
	if err := dropRolesOf(ctx, s.admin, gone); err != nil {
		s.m.fails.Warn("drop lab roles; the next start sweeps them", "err", err)
		return 0
	}
	for _, id := range gone {
		s.m.forgetSem(id)
	}
	return len(gone)
}

// dropEach drops the sandboxes ids one by one on the maintenance
// connections, workers at once, and returns how many it dropped.
func (s *labServer) dropEach(ctx context.Context, ids []string, workers int) int {
	todo := make(chan string, len(ids))
	for _, id := range ids {
		todo <- id
	}
	close(todo)
	var dropped atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range todo {
				if err := s.dropSandbox(ctx, id); err != nil {
					s.m.fails.Warn("drop lab; will retry", "lab", id, "err", err)
					s.retryDrop(id)
					continue
				}
				s.m.forgetSem(id)
				dropped.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(dropped.Load())
}

// dropRolesOf drops every role of the labs ids (whose databases are gone)
// in one statement.
func dropRolesOf(ctx context.Context, admin *pgxpool.Pool, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	prefixes := make([]string, len(ids))
	for i, id := range ids {
		prefixes[i] = "lab_" + id + "_"
	}
	rows, err := admin.Query(ctx, `SELECT rolname FROM pg_roles WHERE rolname ^@ ANY ($1::text[])`, prefixes)
	if err != nil {
		return err
	}
	roles, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(roles) == 0 {
		return err
	}
	quoted := make([]string, len(roles))
	for i, r := range roles {
		quoted[i] = pgx.Identifier{r}.Sanitize()
	}
	_, err = admin.Exec(ctx, "DROP ROLE IF EXISTS "+strings.Join(quoted, ", "))
	return err
}

// isClosed reports whether Close has begun.
func (m *Manager) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// reap drops labs whose owner has been away longer than the TTL, and labs
// older than the lifetime cap, and retries failed drops.
func (m *Manager) reap() {
	every := min(max(m.cfg.TTL/4, 100*time.Millisecond), 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	sweeps := time.NewTicker(sweepEvery)
	defer sweeps.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-sweeps.C:
			if m.shared != nil {
				m.reapDeadInstances(m.ctx)
				m.countLive(m.ctx)
			}
			for _, s := range m.servers {
				s.sweepDead(m.ctx, false)
			}
			continue
		case <-t.C:
		}
		m.mu.Lock()
		labs := make([]*Lab, 0, len(m.labs))
		for _, l := range m.labs {
			labs = append(labs, l)
		}
		var retry []*labServer
		for _, s := range m.servers {
			if len(s.retry) > 0 {
				retry = append(retry, s)
			}
		}
		m.mu.Unlock()
		now := time.Now()
		for _, l := range labs {
			if at := l.expiresAt(m.cfg.TTL, m.cfg.MaxLifetime); now.After(at) {
				m.log.Info("lab expired", "lab", l.ID, "ttl", m.cfg.TTL, "age", now.Sub(l.created).Round(time.Second))
				_ = m.CloseLab(m.ctx, l.ID)
			}
		}
		for _, s := range retry {
			s.sweep(m.ctx, false)
		}
	}
}

// adminSem returns the semaphore that keeps a lab to one superuser
// connection at a time.
func (m *Manager) adminSem(id string) chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sems[id]
	if !ok {
		s = make(chan struct{}, 1)
		m.sems[id] = s
	}
	return s
}

// forgetSem drops a closed lab's semaphore.
func (m *Manager) forgetSem(id string) {
	m.mu.Lock()
	delete(m.sems, id)
	m.mu.Unlock()
}

// randomHex returns n random bytes as hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b)
}

// equalToken compares two secrets in constant time.
func equalToken(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
