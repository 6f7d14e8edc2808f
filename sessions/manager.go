// Package sessions owns labs: each learner's isolated sandbox database with
// its own roles and data, its live state, the scenario run going on in it
// and the browsers watching it. (Labs are not Postgres sessions; the package
// name follows the layout in DESIGN.md.)
package sessions

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Bounds and defaults of Config.
const (
	DefaultMaxLabs    = 20
	MaxMaxLabs        = 500
	DefaultTTL        = 30 * time.Minute
	DefaultConnLimit  = 12
	MinConnLimit      = 4
	MaxConnLimit      = 100
	AdminConns        = 3
	connCloseTimeout  = 5 * time.Second
	serverCountsEvery = 250 * time.Millisecond
)

// FrameRenderer turns a lab's state into one frame for the watching
// browsers (package web renders HTML fragments).
type FrameRenderer interface {
	Frame(engine.State) []byte
}

// Config configures a Manager.
type Config struct {
	AdminURL  string                // a superuser URL (from internal/pgenv)
	MaxLabs   int                   // labs open at once; 0 means DefaultMaxLabs
	TTL       time.Duration         // an idle lab is dropped after this; 0 means DefaultTTL
	ConnLimit int                   // each lab app role's CONNECTION LIMIT; 0 means DefaultConnLimit
	Bouncers  engine.BouncerStarter // how PgBouncer lessons get one; nil: they say none is available
	Catalog   *engine.Catalog
	Renderer  FrameRenderer // nil: frames are the empty byte slice
	Logger    *slog.Logger
}

// withDefaults fills zero fields and checks bounds.
func (c Config) withDefaults() (Config, error) {
	if c.MaxLabs == 0 {
		c.MaxLabs = DefaultMaxLabs
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.ConnLimit == 0 {
		c.ConnLimit = DefaultConnLimit
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
	if c.Catalog == nil {
		c.Catalog = scenarios.DefaultCatalog()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// ConnectionBudget is the most Postgres connections rlslab can hold with
// this configuration: the admin pool, plus for each lab its app role's
// CONNECTION LIMIT (which Postgres enforces) and its one admin connection.
func ConnectionBudget(maxLabs, connLimit int) int {
	return AdminConns + maxLabs*(connLimit+1)
}

// Manager creates, finds and expires labs.
type Manager struct {
	cfg   Config
	admin *pgxpool.Pool
	log   *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	labs     map[string]*Lab
	pending  int
	sems     map[string]chan struct{}
	closed   bool
	maxConns int
}

// Open connects the admin pool, checks the server can hold the budget, and
// starts the reaper that drops idle labs.
func Open(ctx context.Context, cfg Config) (*Manager, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(cfg.AdminURL)
	if err != nil {
		return nil, fmt.Errorf("admin URL: %w", err)
	}
	pcfg.MaxConns, pcfg.MinConns = AdminConns, 1
	pcfg.ConnConfig.RuntimeParams["application_name"] = "rlslab admin"
	admin, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("admin pool: %w", err)
	}
	if err := admin.Ping(ctx); err != nil {
		admin.Close()
		return nil, fmt.Errorf("admin pool: %w", err)
	}
	var super bool
	var maxConns, reserved int
	err = admin.QueryRow(ctx, `SELECT rolsuper, current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int
		FROM pg_roles WHERE rolname = current_user`).Scan(&super, &maxConns, &reserved)
	if err != nil {
		admin.Close()
		return nil, fmt.Errorf("admin pool: %w", err)
	}
	if !super {
		admin.Close()
		return nil, rlslab.Errorf(rlslab.EUNAVAILABLE, "the database user must be a superuser: rlslab creates a database and two roles per lab, and some lessons show what a superuser sees")
	}
	budget := ConnectionBudget(cfg.MaxLabs, cfg.ConnLimit)
	if budget > maxConns-reserved {
		admin.Close()
		return nil, rlslab.Errorf(rlslab.EUNAVAILABLE,
			"rlslab may need %d connections (%d admin + %d labs × (%d app + 1 admin)) but the server allows %d (max_connections %d - %d reserved): lower -max-labs or -lab-conn-limit, or raise max_connections",
			budget, AdminConns, cfg.MaxLabs, cfg.ConnLimit, maxConns-reserved, maxConns, reserved)
	}
	m := &Manager{cfg: cfg, admin: admin, log: cfg.Logger, labs: map[string]*Lab{}, sems: map[string]chan struct{}{}, maxConns: maxConns}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.wg.Add(1)
	go m.reap()
	cfg.Logger.Info("labs ready", "max_labs", cfg.MaxLabs, "lab_conn_limit", cfg.ConnLimit, "ttl", cfg.TTL,
		"connection_budget", budget, "server_max_connections", maxConns)
	return m, nil
}

// Budget returns the computed bound on rlslab's own Postgres connections.
func (m *Manager) Budget() int { return ConnectionBudget(m.cfg.MaxLabs, m.cfg.ConnLimit) }

// Catalog returns the scenarios labs can run.
func (m *Manager) Catalog() *engine.Catalog { return m.cfg.Catalog }

// Admin returns the admin pool (read-only use: server counts, tests).
func (m *Manager) Admin() *pgxpool.Pool { return m.admin }

// MaxLabs returns the cap on open labs.
func (m *Manager) MaxLabs() int { return m.cfg.MaxLabs }

// Create makes a new lab owned by the holder of owner (a secret token the
// browser keeps in a cookie). It fails with EUNAVAILABLE when the cap is
// reached.
func (m *Manager) Create(ctx context.Context, owner string) (*Lab, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, rlslab.Errorf(rlslab.EUNAVAILABLE, "rlslab is shutting down")
	}
	if len(m.labs)+m.pending >= m.cfg.MaxLabs {
		m.mu.Unlock()
		return nil, rlslab.Errorf(rlslab.EUNAVAILABLE, "all %d labs are in use; an idle lab is closed after %s, try again later", m.cfg.MaxLabs, m.cfg.TTL)
	}
	m.pending++
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.pending--
		m.mu.Unlock()
	}()

	id, err := randomHex(4)
	if err != nil {
		return nil, err
	}
	password, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := m.createSandbox(ctx, id, password); err != nil {
		return nil, err
	}
	n := labNames(id)
	sb := engine.Sandbox{
		Lab: id, Database: n.db, AppURL: appURL(m.admin, id, password), AppRole: n.app, OwnerRole: n.owner,
		ConnLimit: m.cfg.ConnLimit, Tenants: Tenants(), Bouncers: m.cfg.Bouncers,
		Admin: func(ctx context.Context) (*pgx.Conn, func(), error) { return m.labAdmin(ctx, id) },
	}
	l := newLab(m, id, owner, sb)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		l.close(context.WithoutCancel(ctx))
		return nil, rlslab.Errorf(rlslab.EUNAVAILABLE, "rlslab is shutting down")
	}
	m.labs[id] = l
	m.mu.Unlock()
	m.log.Info("lab created", "lab", id, "took", time.Since(start).Round(time.Millisecond))
	return l, nil
}

// Get returns the lab with that id, or ENOTFOUND.
func (m *Manager) Get(id string) (*Lab, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.labs[id]; ok {
		return l, nil
	}
	return nil, rlslab.Errorf(rlslab.ENOTFOUND, "no lab %q (it may have expired)", id)
}

// ForOwner returns the newest lab owned by the holder of token, or nil.
func (m *Manager) ForOwner(token string) *Lab {
	if token == "" {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var best *Lab
	for _, l := range m.labs {
		if l.IsOwner(token) && (best == nil || l.created.After(best.created)) {
			best = l
		}
	}
	return best
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

// CloseLab stops the lab's run and watchers and drops its database and
// roles.
func (m *Manager) CloseLab(ctx context.Context, id string) error {
	m.mu.Lock()
	l, ok := m.labs[id]
	delete(m.labs, id)
	m.mu.Unlock()
	if !ok {
		return rlslab.Errorf(rlslab.ENOTFOUND, "no lab %q", id)
	}
	l.close(ctx)
	return nil
}

// Close closes every lab (dropping their databases and roles), stops the
// reaper and closes the admin pool.
func (m *Manager) Close(ctx context.Context) {
	m.mu.Lock()
	m.closed = true
	labs := m.labs
	m.labs = map[string]*Lab{}
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	var wg sync.WaitGroup
	for _, l := range labs {
		wg.Add(1)
		go func() { defer wg.Done(); l.close(ctx) }()
	}
	wg.Wait()
	m.admin.Close()
}

// reap drops labs that have been idle longer than the TTL.
func (m *Manager) reap() {
	defer m.wg.Done()
	every := min(m.cfg.TTL/4, 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		var idle []string
		for id, l := range m.labs {
			if l.idleFor() > m.cfg.TTL {
				idle = append(idle, id)
			}
		}
		m.mu.Unlock()
		for _, id := range idle {
			m.log.Info("lab expired", "lab", id, "ttl", m.cfg.TTL)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			err := m.CloseLab(ctx, id)
			cancel()
			if err != nil {
				m.log.Warn("expire lab", "lab", id, "err", err)
			}
		}
	}
}

// adminSem returns the semaphore that keeps a lab to one admin connection.
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
func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// equalToken compares two secrets in constant time.
func equalToken(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
