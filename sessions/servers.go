package sessions

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/internal/pgproxy"
)

// labServer is one PostgreSQL server that labs are made on. Each keeps
// what is its own: its admin pool, its connection budget and the admission
// queue of its labs' runs, its instance lock (which marks the databases
// and roles made on it), its spare sandboxes, its lease of the budget
// shared with other instances, and its sweep.
type labServer struct {
	m        *Manager
	where    string // host:port/database, for logs (no password)
	admin    *pgxpool.Pool
	ownAdmin bool    // openServer opened admin, and close closes it
	prober   *prober // asks whether the server answers
	capa     Capacity
	admit    *admission
	maintSem chan struct{} // one token per maintenance connection
	counts   *serverCounts
	inst     *instance
	spare    *spares
	id       string // the server's system identifier
	leaser   *leaser
	notified chan struct{} // another instance changed this server's leases
	retry    map[string]bool
	crowds   sharedCrowds // the shared crowd runs going here (shared.go)
}

// openServer connects to one lab server: its admin pool (admin, when the
// caller shares one, else its own on url), its budget and its instance
// lock.
func (m *Manager) openServer(ctx context.Context, url string, admin *pgxpool.Pool) (*labServer, error) {
	s := &labServer{m: m, admin: admin, maintSem: make(chan struct{}, MaintConns), notified: make(chan struct{}, 1), retry: map[string]bool{}}
	if admin == nil {
		var err error
		if s.admin, err = OpenAdmin(ctx, url); err != nil {
			return nil, err
		}
		s.ownAdmin = true
	}
	c := s.admin.Config().ConnConfig
	s.where = fmt.Sprintf("%s:%d/%s", c.Host, c.Port, c.Database)
	s.prober = newProber(s.admin)
	s.counts = &serverCounts{s: s}
	fail := func(err error) (*labServer, error) {
		s.closeAdmin()
		return nil, err
	}
	if err := s.computeCapacity(ctx); err != nil {
		return fail(err)
	}
	id, err := serverID(ctx, s.admin)
	if err != nil {
		return fail(fmt.Errorf("server %s: %w", s.where, err))
	}
	s.id = id
	s.admit = newAdmission(s.capa.Runs)
	if s.inst, err = lockInstance(ctx, s.admin.Config().ConnConfig); err != nil {
		return fail(err)
	}
	return s, nil
}

// closeAdmin closes the server's admin pool if it is its own.
func (s *labServer) closeAdmin() {
	if s.ownAdmin {
		s.admin.Close()
	}
}

// computeCapacity reads the server's limits and sets its budget.
func (s *labServer) computeCapacity(ctx context.Context) error {
	cfg := s.m.cfg
	var super bool
	var maxConns, reserved int
	err := s.admin.QueryRow(ctx, `SELECT rolsuper, current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int
		FROM pg_roles WHERE rolname = current_user`).Scan(&super, &maxConns, &reserved)
	if err != nil {
		return fmt.Errorf("admin pool: %w", err)
	}
	if !super {
		return rlslab.Errorf(rlslab.EUNAVAILABLE, "the database user must be a superuser: rlslab creates a database and two roles per lab, and some lessons show what a superuser sees")
	}
	limit := maxConns - reserved
	budget := limit - cfg.Margin
	if cfg.Budget > 0 {
		if cfg.Budget > limit {
			return rlslab.Errorf(rlslab.EUNAVAILABLE, "connection budget %d is more than the server allows (max_connections %d − %d reserved = %d)", cfg.Budget, maxConns, reserved, limit)
		}
		budget = cfg.Budget
	}
	runs := budget - ownConns
	// The largest run any variant may need: the app role's CONNECTION
	// LIMIT plus the lab's superuser connection.
	biggest := cfg.ConnLimit + 1
	if runs < biggest {
		return rlslab.Errorf(rlslab.EUNAVAILABLE,
			"the connection budget %d leaves %d connections for runs (after %d of rlslab's own), less than one run may need (%d = lab connection limit %d + 1): lower -lab-conn-limit, lower -conn-margin, or raise max_connections (now %d, %d reserved)",
			budget, runs, ownConns, biggest, cfg.ConnLimit, maxConns, reserved)
	}
	s.capa = Capacity{MaxConnections: maxConns, Reserved: reserved, Budget: budget, Runs: runs}
	return nil
}

// ping checks within a second that the server answers.
func (s *labServer) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return s.admin.Ping(ctx)
}

// serverLoad is what choosing a server for a new lab weighs of one.
type serverLoad struct {
	s     *labServer
	ready int // spare sandboxes ready and not promised to a lab in line
	labs  int // labs open on it and being made for it
}

// byPreferenceLocked returns the lab servers in the order a new lab tries
// them: those with a spare ready first, then the least loaded for its
// budget (labs per connection of its budget for runs). Callers hold m.mu.
func (m *Manager) byPreferenceLocked() []serverLoad {
	loads := make([]serverLoad, len(m.servers))
	at := map[*labServer]int{}
	for i, s := range m.servers {
		ready, _, waiting := s.spare.status()
		loads[i] = serverLoad{s: s, ready: max(0, ready-waiting)}
		at[s] = i
	}
	for _, l := range m.labs {
		loads[at[l.srv]].labs++
	}
	for _, c := range m.creating {
		if c.srv != nil {
			loads[at[c.srv]].labs++
		}
	}
	sort.SliceStable(loads, func(i, j int) bool {
		a, b := loads[i], loads[j]
		if (a.ready > 0) != (b.ready > 0) {
			return a.ready > 0
		}
		// a.labs / a.runs < b.labs / b.runs, without division.
		return a.labs*b.s.capa.Runs < b.labs*a.s.capa.Runs
	})
	return loads
}

// answeredLately is how recent a query a server finished must be for
// choose to take it as up without asking: short, so that a spare left on
// a server that has just crashed is not given out, nor a run started on
// it.
const answeredLately = 100 * time.Millisecond

// choose picks the server a new lab goes to: the first, in order of
// preference, that answers (those with a spare ready come first). It
// fails with ErrDatabaseDown when no server answers.
func (m *Manager) choose(ctx context.Context) (*labServer, error) {
	m.mu.Lock()
	order := m.byPreferenceLocked()
	m.mu.Unlock()
	for _, l := range order {
		// A spare ready on a server that crashed is no lab, and a new lab
		// would wait in line for a sandbox behind an outage that no build
		// gets past.
		if l.s.answers(ctx, "create lab") == nil {
			return l.s, nil
		}
	}
	return nil, rlslab.Errorf(rlslab.EUNAVAILABLE, "%s", ErrDatabaseDown)
}

// answers returns nil when the server is up: it finished a query a
// moment ago, or it answers a probe, or the probe timed out while queries
// still finish (a loaded server answers late). Else it returns
// EUNAVAILABLE with ErrDatabaseDown. (The probe has a deadline of its
// own: a caller's short one is not an outage.)
func (s *labServer) answers(ctx context.Context, op string) error {
	if s.prober.answeredSince(time.Now().Add(-answeredLately)) {
		return nil
	}
	asked := time.Now()
	err := s.prober.probe(context.WithoutCancel(ctx))
	if err == nil || timedOut(err) && s.prober.answeredSince(asked.Add(-probeTimeout)) {
		return nil
	}
	s.m.fails.Warn("database not answering", "op", op, "server", s.where, "err", err)
	return rlslab.Errorf(rlslab.EUNAVAILABLE, "%s", ErrDatabaseDown)
}

// timedOut reports whether err is a deadline passing, not a refusal.
func timedOut(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// ServerOf returns where lab id's sandbox is: its server's host, port and
// database (no password), or "" for a lab this instance does not run.
func (m *Manager) ServerOf(id string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l := m.labs[id]; l != nil {
		return l.srv.where
	}
	return ""
}

// Servers returns where the lab servers are (host:port/database), in the
// order they were given.
func (m *Manager) Servers() []string {
	out := make([]string, len(m.servers))
	for i, s := range m.servers {
		out[i] = s.where
	}
	return out
}

// proxyElsewhere is the proxy's answer for lab id when this instance does
// not run it: when another live instance does, the app's connection is
// forwarded to that instance's proxy (which checks the password and admits
// the connection); when no live instance has the lab's tag, or the one
// that runs it has no proxy, the app is told so in words.
func (m *Manager) proxyElsewhere(ctx context.Context, id string) (pgproxy.Target, error) {
	if m.shared == nil || len(id) != labIDLen || id[:2] == m.shared.tag {
		return pgproxy.Target{}, pgproxy.ErrUnknownDatabase
	}
	at, err := m.locate(ctx, id)
	switch {
	case err != nil:
		return pgproxy.Target{}, &pgconn.PgError{Code: "57P03", Message: fmt.Sprintf("rlslab cannot tell now which of its instances runs lab %s (its own tables do not answer); try again in a moment", id)}
	case at.name == "":
		return pgproxy.Target{}, &pgconn.PgError{Code: "3D000", Message: fmt.Sprintf("no running rlslab instance has lab %s: check the database name in your connection settings; if it is right, the instance that ran the lab has stopped, and its labs with it. Open your lab's page again for a new lab, and connect with the database name and password it shows", id)}
	case at.proxy == "":
		return pgproxy.Target{}, &pgconn.PgError{Code: "08001", Message: fmt.Sprintf("lab %s is run by rlslab instance %q, whose PostgreSQL proxy is off", id, at.name)}
	}
	return pgproxy.Target{Forward: at.proxy}, nil
}
