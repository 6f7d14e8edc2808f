// Package bouncer starts a real PgBouncer in front of a PostgreSQL server and
// reads its admin console.
//
// A PgBouncer comes from one of three places, chosen by Options.Mode: a local
// pgbouncer binary run as a child process, a container (Options.Containers,
// which cmd fills with rlslab's Docker adapter), or an existing PgBouncer
// given by URL. The pool mode is
// always transaction, because that is what the lessons are about: a session
// level SET stays on the server connection and the next client inherits it.
package bouncer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Options says how to get a PgBouncer in front of an upstream PostgreSQL.
type Options struct {
	// Mode is "auto" (or "") to use a local pgbouncer binary, else Docker,
	// else fail; "local" or "docker" to insist on one of them; or a
	// postgres:// URL of an existing PgBouncer's admin console, used as is
	// (its user and password are the admin credentials, its database is
	// ignored and Databases, Users, PoolSize and ResetQueryAlways are not
	// applied).
	Mode string
	// Upstream is where PostgreSQL is.
	Upstream Upstream
	// Databases are the database names to expose (same name upstream). When
	// empty, every database is exposed through a "*" fallback entry.
	Databases []string
	// Users maps login role to password. Every role that connects through
	// the bouncer must be listed, even when the upstream trusts it. The
	// auth_file gets a secret derived from the password, not the password
	// (unless the upstream asks for cleartext passwords): see authSecrets.
	Users map[string]string
	// PoolSize is default_pool_size: server connections per user/database
	// pair, 1 to 20.
	PoolSize int
	// ResetQueryAlways sets server_reset_query_always = 1, so DISCARD ALL
	// runs after every transaction even in transaction mode.
	ResetQueryAlways bool
	// Logger receives start and stop messages; nil discards them.
	Logger *slog.Logger
	// Containers runs PgBouncer in a container when there is no local
	// binary ("auto") or when Mode is "docker"; nil means no containers.
	Containers Containers
}

// Upstream is where PostgreSQL listens. Host may be a unix socket directory
// (it then starts with "/").
type Upstream struct {
	Host string
	Port int
}

// Bouncer is a running PgBouncer. Close it when done.
type Bouncer struct {
	kind          string
	host          string
	port          int
	adminUser     string
	adminPassword string
	query         string // URL query parameters for clients; "" means sslmode=disable
	version       string
	logger        *slog.Logger

	local         *localProcess
	stopContainer func() error // a container's; nil for the other kinds

	closeOnce sync.Once
	closeErr  error
}

// Mode values besides a URL.
const (
	ModeAuto   = "auto"
	ModeLocal  = "local"
	ModeDocker = "docker"
)

// Kinds reported by Kind.
const (
	KindLocal  = "local"
	KindDocker = "docker"
	KindURL    = "url"
)

// adminUserName is the admin console user written to the generated config.
const adminUserName = "rlslab_admin"

// readyTimeout bounds how long Start waits for a new PgBouncer to answer.
const readyTimeout = 15 * time.Second

// ErrNoPgBouncer is returned (wrapped) by Start in auto mode when no way to
// get a PgBouncer is available.
var ErrNoPgBouncer = errors.New("no PgBouncer available")

// Start gets a PgBouncer as Options.Mode says and waits until its admin
// console answers SHOW VERSION.
func Start(ctx context.Context, opts Options) (*Bouncer, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.PoolSize < 1 || opts.PoolSize > 20 {
		return nil, fmt.Errorf("bouncer: pool size %d out of range 1..20", opts.PoolSize)
	}
	mode := strings.TrimSpace(opts.Mode)
	if strings.HasPrefix(mode, "postgres://") || strings.HasPrefix(mode, "postgresql://") {
		return startURL(ctx, mode, logger)
	}
	if err := validate(opts); err != nil {
		return nil, err
	}
	switch mode {
	case "", ModeAuto:
		bin, lerr := findBinary()
		if lerr == nil {
			return startLocal(ctx, bin, opts, logger)
		}
		logger.Debug("no local pgbouncer", "err", lerr)
		derr := containersHealthy(ctx, opts.Containers)
		if derr == nil {
			return startContainer(ctx, opts, logger)
		}
		logger.Debug("no Docker", "err", derr)
		return nil, fmt.Errorf("bouncer: %w: install pgbouncer (apt-get install pgbouncer, or scripts/setup-debian.sh) "+
			"[%v]; or run a Docker daemon [%v]; or pass the admin URL of a running PgBouncer "+
			"(-pgbouncer postgres://admin:password@host:port/pgbouncer)", ErrNoPgBouncer, lerr, derr)
	case ModeLocal:
		bin, err := findBinary()
		if err != nil {
			return nil, fmt.Errorf("bouncer: %w (install it: apt-get install pgbouncer, or scripts/setup-debian.sh)", err)
		}
		return startLocal(ctx, bin, opts, logger)
	case ModeDocker:
		if err := containersHealthy(ctx, opts.Containers); err != nil {
			return nil, fmt.Errorf("bouncer: Docker is not available: %w", err)
		}
		return startContainer(ctx, opts, logger)
	default:
		return nil, fmt.Errorf("bouncer: unknown mode %q: want auto, local, docker or a postgres:// URL of a PgBouncer admin console", opts.Mode)
	}
}

var nameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.$-]*$`)

// validate checks what goes into the generated configuration files.
func validate(opts Options) error {
	if opts.Upstream.Host == "" {
		return errors.New("bouncer: upstream host is empty")
	}
	if strings.ContainsAny(opts.Upstream.Host, " \t\r\n'\"=") {
		return fmt.Errorf("bouncer: upstream host %q has characters that cannot go into pgbouncer.ini", opts.Upstream.Host)
	}
	if opts.Upstream.Port < 1 || opts.Upstream.Port > 65535 {
		return fmt.Errorf("bouncer: upstream port %d out of range", opts.Upstream.Port)
	}
	for _, d := range opts.Databases {
		if !nameRE.MatchString(d) || d == "pgbouncer" {
			return fmt.Errorf("bouncer: database name %q is not allowed", d)
		}
	}
	if len(opts.Users) == 0 {
		return errors.New("bouncer: no users: every role that connects through PgBouncer must be in its auth_file")
	}
	for u, p := range opts.Users {
		if !nameRE.MatchString(u) || u == adminUserName {
			return fmt.Errorf("bouncer: user name %q is not allowed", u)
		}
		if strings.ContainsAny(p, "\r\n\x00") {
			return fmt.Errorf("bouncer: password of %q contains a line break or NUL", u)
		}
	}
	return nil
}

// config is what the generated pgbouncer.ini depends on.
type config struct {
	listenAddr     string
	listenPort     int
	upstreamHost   string
	upstreamPort   int
	authFile       string
	logFile        string
	pidFile        string
	databases      []string
	poolSize       int
	resetAlways    bool
	adminUser      string
	maxClientConns int
}

// ini renders pgbouncer.ini.
func (c config) ini() string {
	var b strings.Builder
	b.WriteString("; generated by rlslab internal/bouncer\n[databases]\n")
	target := fmt.Sprintf("host=%s port=%d", c.upstreamHost, c.upstreamPort)
	if len(c.databases) == 0 {
		fmt.Fprintf(&b, "* = %s\n", target)
	}
	for _, d := range c.databases {
		fmt.Fprintf(&b, "%s = %s dbname=%s\n", d, target, d)
	}
	b.WriteString("\n[pgbouncer]\n")
	kv := func(k string, v any) { fmt.Fprintf(&b, "%s = %v\n", k, v) }
	kv("listen_addr", c.listenAddr)
	kv("listen_port", c.listenPort)
	kv("unix_socket_dir", "")
	kv("auth_type", "scram-sha-256")
	kv("auth_file", c.authFile)
	kv("admin_users", c.adminUser)
	kv("stats_users", c.adminUser)
	kv("pool_mode", "transaction")
	kv("default_pool_size", c.poolSize)
	kv("min_pool_size", 0)
	kv("reserve_pool_size", 0)
	kv("max_client_conn", c.maxClientConns)
	kv("server_reset_query", "DISCARD ALL")
	if c.resetAlways {
		kv("server_reset_query_always", 1)
	} else {
		kv("server_reset_query_always", 0)
	}
	// pgx v5 sends no extra startup parameters, but libpq-based and JDBC
	// clients send extra_float_digits, which PgBouncer rejects unless ignored.
	kv("ignore_startup_parameters", "extra_float_digits")
	kv("server_login_retry", 1)
	if c.logFile != "" {
		kv("logfile", c.logFile)
	}
	if c.pidFile != "" {
		kv("pidfile", c.pidFile)
	}
	return b.String()
}

// authFile renders the auth_file: one `"user" "password"` line per user,
// double quotes doubled.
func authFile(users map[string]string, adminUser, adminPassword string) string {
	q := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", q(adminUser), q(adminPassword))
	names := make([]string, 0, len(users))
	for u := range users {
		names = append(names, u)
	}
	slices.Sort(names)
	for _, u := range names {
		fmt.Fprintf(&b, "%s %s\n", q(u), q(users[u]))
	}
	return b.String()
}

func randomPassword() string {
	var p [16]byte
	_, _ = rand.Read(p[:])
	return hex.EncodeToString(p[:])
}

// URL returns a client URL through the bouncer for database, user and
// password. It sets sslmode=disable (a URL bouncer keeps its URL's
// parameters instead) and no query exec mode: PgBouncer 1.18 in
// transaction mode breaks pgx's default statement cache, which is a lesson of
// its own, so callers choose.
func (b *Bouncer) URL(database, user, password string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(user, password),
		Host:     net.JoinHostPort(b.host, strconv.Itoa(b.port)),
		Path:     "/" + database,
		RawQuery: b.query,
	}
	if u.RawQuery == "" {
		u.RawQuery = "sslmode=disable"
	}
	return u.String()
}

// AdminURL returns the admin console URL (database "pgbouncer"), with
// default_query_exec_mode=simple_protocol because the console speaks only the
// simple query protocol.
func (b *Bouncer) AdminURL() string {
	return b.URL("pgbouncer", b.adminUser, b.adminPassword) + "&default_query_exec_mode=simple_protocol"
}

// PID returns the PgBouncer process ID, or 0 if it is not a local process.
func (b *Bouncer) PID() int {
	if b.local == nil {
		return 0
	}
	return b.local.cmd.Process.Pid
}

// Version returns the PgBouncer version read from SHOW VERSION, e.g. "1.18.0".
func (b *Bouncer) Version() string { return b.version }

// Kind returns "local", "docker" or "url".
func (b *Bouncer) Kind() string { return b.kind }

// Dir returns the temporary directory of a local PgBouncer (config, auth
// file, log, pidfile), or "" for the other kinds.
func (b *Bouncer) Dir() string {
	if b.local == nil {
		return ""
	}
	return b.local.dir
}

// Close stops a PgBouncer this package started (SIGINT, a wait, then SIGKILL
// for a local one; terminate for a container) and removes its temporary
// directory. A URL bouncer is left running. Close is idempotent.
func (b *Bouncer) Close() error {
	b.closeOnce.Do(func() {
		switch {
		case b.local != nil:
			b.closeErr = b.local.stop(b.logger)
		case b.stopContainer != nil:
			b.closeErr = b.stopContainer()
		}
		b.logger.Info("pgbouncer stopped", "kind", b.kind)
	})
	return b.closeErr
}

// startURL uses an existing PgBouncer whose admin console is at raw.
func startURL(ctx context.Context, raw string, logger *slog.Logger) (*Bouncer, error) {
	cfg, err := pgx.ParseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("bouncer: bad PgBouncer URL: %w", err)
	}
	b := &Bouncer{
		kind:          KindURL,
		host:          cfg.Host,
		port:          int(cfg.Port),
		adminUser:     cfg.User,
		adminPassword: cfg.Password,
		query:         clientQuery(raw),
		logger:        logger,
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := queryVersion(cctx, b.AdminURL())
	if err != nil {
		return nil, fmt.Errorf("bouncer: PgBouncer at %s: %w", redact(raw), err)
	}
	b.version = v
	logger.Info("pgbouncer in use", "kind", b.kind, "addr", net.JoinHostPort(b.host, strconv.Itoa(b.port)), "version", v)
	return b, nil
}

// clientQuery returns raw's query parameters without
// default_query_exec_mode, which AdminURL sets and clients choose.
func clientQuery(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	q := u.Query()
	q.Del("default_query_exec_mode")
	return q.Encode()
}

// redact hides a URL's password for error messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

var versionRE = regexp.MustCompile(`\d+\.\d+(\.\d+)?`)

// queryVersion connects to the admin console and returns its version.
func queryVersion(ctx context.Context, adminURL string) (string, error) {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var s string
	if err := conn.QueryRow(ctx, "SHOW VERSION", pgx.QueryExecModeSimpleProtocol).Scan(&s); err != nil {
		return "", fmt.Errorf("SHOW VERSION: %w", err)
	}
	v := versionRE.FindString(s)
	if v == "" {
		return "", fmt.Errorf("SHOW VERSION: unexpected answer %q", s)
	}
	return v, nil
}

// waitReady polls the admin console until it answers, the deadline passes
// or exited is closed.
func waitReady(ctx context.Context, adminURL string, exited <-chan struct{}) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var last error
	for {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		v, err := queryVersion(actx, adminURL)
		acancel()
		if err == nil {
			return v, nil
		}
		last = err
		select {
		case <-exited:
			return "", errors.New("pgbouncer exited during start-up")
		case <-ctx.Done():
			return "", fmt.Errorf("pgbouncer did not answer: %w (last error: %v)", ctx.Err(), last)
		case <-time.After(15 * time.Millisecond):
		}
	}
}

// UpstreamFromURL returns the host (or unix socket directory) and port of a
// PostgreSQL connection URL, such as pgenv.Server.URL.
func UpstreamFromURL(connString string) (Upstream, error) {
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return Upstream{}, fmt.Errorf("bouncer: upstream URL: %w", err)
	}
	return Upstream{Host: cfg.Host, Port: int(cfg.Port)}, nil
}

// ForApp starts a PgBouncer (as mode says: "auto", "local", "docker" or a
// URL) in transaction mode in front of the database of appURL, for the user
// and password in appURL; containers, when not nil, run it where there is no
// local binary.
func ForApp(ctx context.Context, mode, appURL string, poolSize int, resetAlways bool, containers Containers, logger *slog.Logger) (*Bouncer, error) {
	cfg, err := pgconn.ParseConfig(appURL)
	if err != nil {
		return nil, fmt.Errorf("app role URL: %w", err)
	}
	up, err := UpstreamFromURL(appURL)
	if err != nil {
		return nil, err
	}
	if mode == "" {
		mode = ModeAuto
	}
	return Start(ctx, Options{
		Mode: mode, Upstream: up, Databases: []string{cfg.Database}, Users: map[string]string{cfg.User: cfg.Password},
		PoolSize: poolSize, ResetQueryAlways: resetAlways, Logger: logger, Containers: containers,
	})
}
