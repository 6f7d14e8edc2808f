package pgproxy

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
)

func TestMain(m *testing.M) { pgenvtest.Main(m) }

// The client password the proxy expects, and the database name clients use.
const (
	clientPassword = "proxy-Secret-1"
	labDB          = "lab"
)

// fixture is a role with a password, a schema with an RLS table of three
// tenants, and a proxy in front of them.
type fixture struct {
	admin     *pgxpool.Pool
	role      string
	schema    string
	directURL string // the app role, straight to PostgreSQL over TCP
	proxyURL  string // the same role's data through the proxy
	proxyAddr string
	events    *recorder
	srv       *Server
}

// newFixture builds a fixture; cfg may adjust the proxy's Config.
func newFixture(t testing.TB, cfg func(*Config)) *fixture {
	t.Helper()
	s := pgenvtest.MustServer(t)
	admin := pgenvtest.MustConnect(t)
	ctx := context.Background()
	suffix := strings.ToLower(rand.Text()[:8])
	f := &fixture{admin: admin, role: "proxy_app_" + suffix, schema: "proxy_" + suffix, events: newRecorder()}
	password := "up-" + suffix
	stmts := []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s' NOSUPERUSER NOBYPASSRLS", f.role, password),
		fmt.Sprintf("CREATE SCHEMA %s", f.schema),
		fmt.Sprintf("CREATE TABLE %s.items (id int PRIMARY KEY, tenant_id int NOT NULL, name text NOT NULL)", f.schema),
		fmt.Sprintf("INSERT INTO %s.items SELECT i, 1 + (i - 1) %% 3, 'item ' || i FROM generate_series(1, 9) i", f.schema),
		fmt.Sprintf("ALTER TABLE %s.items ENABLE ROW LEVEL SECURITY", f.schema),
		fmt.Sprintf("ALTER TABLE %s.items FORCE ROW LEVEL SECURITY", f.schema),
		fmt.Sprintf("CREATE POLICY tenant ON %s.items USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::int)", f.schema),
		fmt.Sprintf("CREATE TABLE %s.notes (tenant_id int, body text)", f.schema),
		fmt.Sprintf("GRANT USAGE ON SCHEMA %s TO %s", f.schema, f.role),
		fmt.Sprintf("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %s TO %s", f.schema, f.role),
		fmt.Sprintf("ALTER ROLE %s SET search_path = %s", f.role, f.schema),
		fmt.Sprintf("ALTER ROLE %s SET statement_timeout = '20s'", f.role),
	}
	for _, q := range stmts {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, _ = admin.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", f.role)
		_, _ = admin.Exec(ctx, "DROP SCHEMA "+f.schema+" CASCADE")
		for range 50 {
			if _, err := admin.Exec(ctx, "DROP ROLE "+f.role); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond) // the terminated backends are going
		}
	})

	tcp, err := url.Parse(s.TCPURL)
	if err != nil {
		t.Fatal(err)
	}
	direct := *tcp
	direct.User = url.UserPassword(f.role, password)
	q := direct.Query()
	q.Set("sslmode", "disable")
	direct.RawQuery = q.Encode()
	f.directURL = direct.String()

	c := Config{
		Events: f.events,
		Lookup: func(ctx context.Context, database, user string) (Target, error) {
			if database != labDB {
				return Target{}, ErrUnknownDatabase
			}
			if user != f.role {
				return Target{}, ErrRefused
			}
			return Target{URL: f.directURL, ClientPassword: clientPassword}, nil
		},
	}
	if cfg != nil {
		cfg(&c)
	}
	f.srv, f.proxyAddr = serveWith(t, c, func(s *Server) { s.probed = f.events.probed })
	f.proxyURL = f.url(clientPassword, labDB, "disable")
	return f
}

// serve starts a proxy with cfg on a loopback port until the test ends and
// returns its address.
func serve(t testing.TB, cfg Config) string {
	_, addr := serveWith(t, cfg, nil)
	return addr
}

// serveWith is serve with a hook to set the Server's test fields first.
func serveWith(t testing.TB, cfg Config, set func(*Server)) (*Server, string) {
	t.Helper()
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if set != nil {
		set(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, ln.Addr().String()
}

// url is a URL through the proxy.
func (f *fixture) url(password, database, sslmode string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(f.role, password), Host: f.proxyAddr, Path: "/" + database, RawQuery: "sslmode=" + sslmode}
	return u.String()
}

// connect opens a pgx connection with the given exec mode.
func connect(t testing.TB, connString string, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = mode
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// recorder keeps every event and wakes waiters.
type recorder struct {
	mu      sync.Mutex
	opened  []ConnInfo
	sent    []Statement
	results []Result
	// resultPIDs are the backend PIDs of results, index for index.
	resultPIDs []uint32
	// settings by PID, in order.
	settings  map[uint32][]Setting
	closed    []ConnInfo
	probes    map[uint32]int
	probeErrs int
	changed   chan struct{}
}

func newRecorder() *recorder {
	return &recorder{settings: map[uint32][]Setting{}, probes: map[uint32]int{}, changed: make(chan struct{})}
}

func (r *recorder) notify() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder) Opened(c ConnInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opened = append(r.opened, c)
	r.notify()
}

func (r *recorder) Sent(c ConnInfo, s Statement) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, s)
	r.notify()
}

func (r *recorder) Finished(c ConnInfo, res Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results = append(r.results, res)
	r.resultPIDs = append(r.resultPIDs, c.PID)
	r.notify()
}

func (r *recorder) Setting(c ConnInfo, s Setting) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.settings[c.PID] = append(r.settings[c.PID], s)
	r.notify()
}

func (r *recorder) probed(pid uint32, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.probes[pid]++
	if err != nil {
		r.probeErrs++
	}
	r.notify()
}

func (r *recorder) Closed(c ConnInfo, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = append(r.closed, c)
	r.notify()
}

// waitFor waits until cond (called under the recorder's lock) holds, or
// fails the test after d.
func (r *recorder) waitFor(t testing.TB, d time.Duration, what string, cond func(r *recorder) bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok := cond(r)
		ch := r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("waited %v for %s", d, what)
		}
	}
}

// result returns the last result whose text contains s.
func (r *recorder) result(s string) (Result, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.results) - 1; i >= 0; i-- {
		if strings.Contains(r.results[i].Text, s) {
			return r.results[i], true
		}
	}
	return Result{}, false
}

// lastSetting returns the last setting reported for pid.
func (r *recorder) lastSetting(pid uint32) (Setting, bool) {
	ss := r.settings[pid]
	if len(ss) == 0 {
		return Setting{}, false
	}
	return ss[len(ss)-1], true
}

// waitProbe waits until the backend pid has finished more than n probes
// (the connection went idle and was read) and returns the count.
func (f *fixture) waitProbe(t testing.TB, pid uint32, n int) int {
	t.Helper()
	var m int
	f.events.waitFor(t, 10*time.Second, fmt.Sprintf("a probe on backend %d after %d", pid, n), func(r *recorder) bool {
		m = r.probes[pid]
		return m > n
	})
	return m
}

// errCode returns the SQLSTATE of err, or "".
func errCode(err error) string {
	var pe interface{ SQLState() string }
	if errors.As(err, &pe) {
		return pe.SQLState()
	}
	return ""
}
