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
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Bounds and defaults of Config.
const (
	DefaultMaxLabs     = 100
	MaxMaxLabs         = 2000
	DefaultTTL         = 30 * time.Minute
	DefaultMaxLifetime = 8 * time.Hour
	DefaultConnLimit   = 12
	MinConnLimit       = 4
	MaxConnLimit       = 100
	DefaultSpares      = 4
	MaxSpares          = 500
	DefaultMargin      = 10
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
	Spares   int
	Bouncers engine.BouncerStarter // how PgBouncer lessons get one; nil: they say none is available
	Catalog  *engine.Catalog
	// Subscribers are told of every run of every lab that ends (done,
	// failed or cancelled), with its final state and its frames, in order,
	// once the run's connections are back in the budget. They run on the
	// run's goroutine: keep them short (Lab.Wait returns after them).
	Subscribers []RunSubscriber
	Logger      *slog.Logger
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
	admin    *pgxpool.Pool
	ownAdmin bool    // Open opened admin, and Close closes it
	prober   *prober // asks whether the server answers (see guard)
	log      *slog.Logger
	capa     Capacity
	admit    *admission
	maintSem chan struct{} // one token per maintenance connection
	counts   *serverCounts
	inst     *instance
	spare    *spares

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	labs     map[string]*Lab
	byOwner  map[string]*Lab
	creating map[string]*creation // by owner token
	retry    map[string]bool      // lab ids whose drop failed
	sems     map[string]chan struct{}
	closed   bool
}

// creation is a lab being made for one owner; concurrent requests of the
// same owner wait for it instead of making another.
type creation struct {
	done chan struct{}
	lab  *Lab
	err  error
}

// Open connects the admin pool, computes the connection budget from the
// server, drops what crashed rlslab processes left behind, and starts the
// reaper and the spare sandboxes.
func Open(ctx context.Context, cfg Config) (*Manager, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	admin, own := cfg.Admin, false
	if admin == nil {
		if admin, err = OpenAdmin(ctx, cfg.AdminURL); err != nil {
			return nil, err
		}
		own = true
	}
	closeAdmin := func() {
		if own {
			admin.Close()
		}
	}
	m := &Manager{cfg: cfg, admin: admin, ownAdmin: own, prober: newProber(admin), log: cfg.Logger, labs: map[string]*Lab{}, byOwner: map[string]*Lab{},
		creating: map[string]*creation{}, retry: map[string]bool{}, sems: map[string]chan struct{}{},
		maintSem: make(chan struct{}, MaintConns)}
	m.counts = &serverCounts{m: m}
	if err := m.computeCapacity(ctx); err != nil {
		closeAdmin()
		return nil, err
	}
	m.admit = newAdmission(m.capa.Runs)
	if m.inst, err = lockInstance(ctx, admin.Config().ConnConfig); err != nil {
		closeAdmin()
		return nil, err
	}
	m.sweep(ctx, true)
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.spare = newSpares(m, cfg.Spares)
	m.wg.Add(2)
	go func() { defer m.wg.Done(); m.reap() }()
	go func() { defer m.wg.Done(); m.spare.refill(m.ctx) }()
	cfg.Logger.Info("labs ready", "max_labs", cfg.MaxLabs, "lab_conn_limit", cfg.ConnLimit, "ttl", cfg.TTL, "max_lifetime", cfg.MaxLifetime,
		"spares", cfg.Spares, "connection_budget", m.capa.Budget, "for_runs", m.capa.Runs, "server_max_connections", m.capa.MaxConnections,
		"formula", "budget = max_connections − reserved − margin; runs = budget − admin pool − instance lock − maintenance")
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

// computeCapacity reads the server's limits and sets the budget.
func (m *Manager) computeCapacity(ctx context.Context) error {
	var super bool
	var maxConns, reserved int
	err := m.admin.QueryRow(ctx, `SELECT rolsuper, current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int
		FROM pg_roles WHERE rolname = current_user`).Scan(&super, &maxConns, &reserved)
	if err != nil {
		return fmt.Errorf("admin pool: %w", err)
	}
	if !super {
		return rlslab.Errorf(rlslab.EUNAVAILABLE, "the database user must be a superuser: rlslab creates a database and two roles per lab, and some lessons show what a superuser sees")
	}
	limit := maxConns - reserved
	budget := limit - m.cfg.Margin
	if m.cfg.Budget > 0 {
		if m.cfg.Budget > limit {
			return rlslab.Errorf(rlslab.EUNAVAILABLE, "connection budget %d is more than the server allows (max_connections %d − %d reserved = %d)", m.cfg.Budget, maxConns, reserved, limit)
		}
		budget = m.cfg.Budget
	}
	runs := budget - ownConns
	// The largest run any variant may need: the app role's CONNECTION
	// LIMIT plus the lab's superuser connection.
	biggest := m.cfg.ConnLimit + 1
	if runs < biggest {
		return rlslab.Errorf(rlslab.EUNAVAILABLE,
			"the connection budget %d leaves %d connections for runs (after %d of rlslab's own), less than one run may need (%d = lab connection limit %d + 1): lower -lab-conn-limit, lower -conn-margin, or raise max_connections (now %d, %d reserved)",
			budget, runs, ownConns, biggest, m.cfg.ConnLimit, maxConns, reserved)
	}
	m.capa = Capacity{MaxConnections: maxConns, Reserved: reserved, Budget: budget, Runs: runs}
	return nil
}

// Instance returns the number that marks this manager's databases and
// roles on the server (see the sweep).
func (m *Manager) Instance() int32 { return m.inst.id }

// Capacity returns the connection budget computed at Open.
func (m *Manager) Capacity() Capacity { return m.capa }

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
	used, queued := m.admit.usage()
	return Usage{Labs: n, MaxLabs: m.cfg.MaxLabs, Spares: m.spare.count(), RunConns: used, Queued: queued, Budget: m.capa.Budget}
}

// Catalog returns the scenarios labs can run.
func (m *Manager) Catalog() *engine.Catalog { return m.cfg.Catalog }

// Admin returns the admin pool (read-only use: server counts, tests).
func (m *Manager) Admin() *pgxpool.Pool { return m.admin }

// MaxLabs returns the cap on open labs.
func (m *Manager) MaxLabs() int { return m.cfg.MaxLabs }

// Ping checks within a second that the database answers; the error says so
// in words (the driver's error, with host and port, goes to the log).
func (m *Manager) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := m.admin.Ping(ctx); err != nil {
		return m.dbError("ping", err)
	}
	return nil
}

// ErrDatabaseDown is the message of an outage.
const ErrDatabaseDown = "the database is not answering; retrying"

// dbError turns a failure to reach the database into an EUNAVAILABLE error
// that says so in words, and logs the driver's error; other errors pass
// through.
func (m *Manager) dbError(what string, err error) error {
	if err == nil || rlslab.ErrorCode(err) != rlslab.EINTERNAL {
		return err
	}
	if isOutage(err) {
		m.log.Warn("database not answering", "op", what, "err", err)
		return rlslab.Errorf(rlslab.EUNAVAILABLE, "%s", ErrDatabaseDown)
	}
	return err
}

// Create returns the lab of the browser that holds owner (a secret token
// it keeps in a cookie), making one if it has none: one lab per browser,
// even under concurrent requests. A spare sandbox makes it ready at once.
// It fails with EUNAVAILABLE when every lab is in use.
func (m *Manager) Create(ctx context.Context, owner string) (*Lab, error) {
	if owner == "" {
		return nil, rlslab.Errorf(rlslab.EINVALID, "a lab needs an owner")
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
		select {
		case <-c.done:
			return c.lab, c.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if len(m.labs)+len(m.creating) >= m.cfg.MaxLabs {
		next := m.nextFreeLocked()
		m.mu.Unlock()
		return nil, rlslab.Errorf(rlslab.EUNAVAILABLE, "all %d labs are in use; %s", m.cfg.MaxLabs, next)
	}
	c := &creation{done: make(chan struct{})}
	m.creating[owner] = c
	m.mu.Unlock()

	c.lab, c.err = m.create(ctx, owner)
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
	return c.lab, c.err
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

// create makes a lab from a spare sandbox or a new one.
func (m *Manager) create(ctx context.Context, owner string) (*Lab, error) {
	start := time.Now()
	sb, spare := m.spare.take()
	if !spare {
		var err error
		if sb, err = m.newSandbox(ctx); err != nil {
			return nil, m.dbError("create lab", err)
		}
	}
	l := newLab(m, sb, owner)
	m.log.Info("lab created", "lab", l.ID, "spare", spare, "took", time.Since(start).Round(time.Microsecond))
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
// sandboxes, stops the reaper and closes the admin pool. It returns when
// done or when ctx ends, whichever is first.
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
	m.wg.Wait()
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for _, l := range labs {
			wg.Add(1)
			go func() { defer wg.Done(); l.close(ctx) }()
		}
		m.spare.drain(ctx)
		wg.Wait()
	}()
	select {
	case <-done:
	case <-ctx.Done():
		m.log.Warn("closing labs took too long; the next start sweeps what is left")
	}
	m.inst.unlock()
	if m.ownAdmin {
		m.admin.Close()
	}
}

// reap drops labs whose owner has been away longer than the TTL, and labs
// older than the lifetime cap, and retries failed drops.
func (m *Manager) reap() {
	every := min(max(m.cfg.TTL/4, 100*time.Millisecond), 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		labs := make([]*Lab, 0, len(m.labs))
		for _, l := range m.labs {
			labs = append(labs, l)
		}
		retry := len(m.retry) > 0
		m.mu.Unlock()
		now := time.Now()
		for _, l := range labs {
			if at := l.expiresAt(m.cfg.TTL, m.cfg.MaxLifetime); now.After(at) {
				m.log.Info("lab expired", "lab", l.ID, "ttl", m.cfg.TTL, "age", now.Sub(l.created).Round(time.Second))
				_ = m.CloseLab(m.ctx, l.ID)
			}
		}
		if retry {
			m.sweep(m.ctx, false)
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
