// Package pgenv finds or starts the PostgreSQL server that rlslab administers.
//
// Start picks, in order: a URL given explicitly or through DATABASE_URL; an
// ephemeral (or kept) cluster run from the local PostgreSQL server binaries;
// a container (Options.Containers, which cmd fills with rlslab's Docker
// adapter). When none of these works it returns an error that names all
// three ways.
package pgenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Options says how to find or start PostgreSQL.
type Options struct {
	DB             string              // "auto" (also "") or a postgres:// URL
	DataDir        string              // "" = ephemeral temp dir removed on Close; else keep the cluster here (initdb if empty, reuse if it already holds one)
	MaxConnections int                 // max_connections for clusters we start (local or docker); 0 means 100
	Getenv         func(string) string // how DATABASE_URL is read; nil means no environment
	Logger         *slog.Logger        // nil = discard
	// Containers runs PostgreSQL in a container when there is no URL and
	// no local binaries; nil means no container fallback.
	Containers Containers

	// findBins locates initdb and postgres; nil means findBinaries. Tests
	// replace it to simulate a machine without PostgreSQL.
	findBins func() (bins, error)
}

// Containers runs PostgreSQL in a container. rlslab's Docker adapter
// implements it.
type Containers interface {
	// Healthy reports whether containers can be started here.
	Healthy(ctx context.Context) error
	// RunPostgres starts PostgreSQL with maxConnections and returns a
	// superuser URL of it and a func that removes the container.
	RunPostgres(ctx context.Context, maxConnections int) (url string, stop func() error, err error)
}

// Server is a running PostgreSQL that rlslab may administer.
type Server struct {
	URL  string // superuser (or at least CREATEDB+CREATEROLE) URL to the "postgres" database
	Kind string // "url", "local" or "docker"
	// TCPURL reaches the same server over TCP with a password, for clients
	// that cannot use URL's Unix socket (for example a PgBouncer running as
	// another user). It equals URL for the kinds "url" and "docker".
	TCPURL string

	maxConns int
	logger   *slog.Logger

	// Kind "local".
	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd.Wait returns
	waitErr  error         // cmd.Wait's result, valid after exited is closed
	runDir   string        // socket, log and (ephemeral) data; removed on Close
	dataDir  string
	port     int
	keepData bool
	runLock  *lockFile // held on runDir while the server runs
	dataLock *lockFile // held on a kept dataDir (nil when ephemeral)

	stopping atomic.Bool   // set before rlslab stops postgres itself
	died     chan struct{} // closed when postgres exits without being stopped

	// Kind "docker".
	stopContainer func() error

	closeOnce sync.Once
	closeErr  error
}

// ErrUnavailable is wrapped by the error Start returns in auto mode when it
// finds no way to reach or start PostgreSQL.
var ErrUnavailable = errors.New("no PostgreSQL available")

// defaultMaxConnections is used when Options.MaxConnections is 0.
const defaultMaxConnections = 100

// Start finds or starts PostgreSQL as opts says and waits until it accepts
// connections. The caller must Close the returned Server. ctx bounds only the
// start-up: a started server outlives ctx until Close.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.MaxConnections < 0 || (opts.MaxConnections > 0 && opts.MaxConnections < 5) {
		return nil, fmt.Errorf("pgenv: MaxConnections must be 0 (default %d) or at least 5, got %d", defaultMaxConnections, opts.MaxConnections)
	}
	if opts.MaxConnections == 0 {
		opts.MaxConnections = defaultMaxConnections
	}
	begin := time.Now()
	s, err := start(ctx, opts)
	if err != nil {
		return nil, err
	}
	s.logger = opts.Logger
	opts.Logger.Info("postgres ready", "kind", s.Kind, "url", redact(s.URL), "took", time.Since(begin).Round(time.Millisecond))
	return s, nil
}

func start(ctx context.Context, opts Options) (*Server, error) {
	db := strings.TrimSpace(opts.DB)
	if db != "" && db != "auto" {
		return startURL(ctx, db, "-db")
	}
	if opts.Getenv != nil {
		if u := strings.TrimSpace(opts.Getenv("DATABASE_URL")); u != "" {
			opts.Logger.Info("using DATABASE_URL")
			return startURL(ctx, u, "DATABASE_URL")
		}
	}

	find := opts.findBins
	if find == nil {
		find = findBinaries
	}
	var localErr error
	b, err := find()
	if err == nil {
		opts.Logger.Info("starting local PostgreSQL", "initdb", b.initdb, "postgres", b.postgres)
		s, err := startLocal(ctx, opts, b)
		if err == nil {
			return s, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		opts.Logger.Warn("local PostgreSQL failed to start; trying Docker", "err", err)
		localErr = err
	} else {
		localErr = err
	}

	s, err := startContainer(ctx, opts)
	if err == nil {
		return s, nil
	}
	var na *notAvailableError
	if !errors.As(err, &na) {
		return nil, err
	}
	if !errors.Is(localErr, errNoBinaries) {
		// The binaries exist but did not work: that error is the useful one.
		return nil, fmt.Errorf("pgenv: %w (and Docker is not available: %v)", localErr, na.err)
	}
	return nil, fmt.Errorf("pgenv: %w; do one of: "+
		"(1) set DATABASE_URL or pass -db postgres://user:password@host:5432/postgres; "+
		"(2) install the PostgreSQL server binaries (initdb, postgres), e.g. `apt-get install postgresql` or run scripts/setup-debian.sh; "+
		"(3) run a Docker daemon so rlslab can start a postgres container. "+
		"Tried: local binaries: %v; Docker: %v", ErrUnavailable, localErr, na.err)
}

// startURL uses a server given by URL, after checking that it answers.
func startURL(ctx context.Context, u, from string) (*Server, error) {
	cfg, err := pgx.ParseConfig(u)
	if err != nil {
		return nil, fmt.Errorf("pgenv: %s is not a valid PostgreSQL URL: %w", from, err)
	}
	if cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > 10*time.Second {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if err := ping(ctx, cfg); err != nil {
		return nil, fmt.Errorf("pgenv: cannot connect to the PostgreSQL given by %s (%s): %w", from, redact(u), err)
	}
	return &Server{URL: u, TCPURL: u, Kind: "url"}, nil
}

// ping opens one connection and checks that the server answers.
func ping(ctx context.Context, cfg *pgx.ConnConfig) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.Ping(ctx)
}

// redact hides the password in a URL for error messages and logs.
func redact(u string) string {
	cfg, err := pgx.ParseConfig(u)
	if err != nil || cfg.Password == "" {
		return u
	}
	return strings.ReplaceAll(u, cfg.Password, "xxxxx")
}

// MaxConnections returns the max_connections rlslab configured for a server it
// started, or 0 for a server given by URL.
func (s *Server) MaxConnections() int {
	if s.Kind == "url" {
		return 0
	}
	return s.maxConns
}

// Close stops a server that Start started and removes its temporary
// directory; a DataDir is kept. It is a no-op for Kind "url" and is safe to
// call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		switch s.Kind {
		case "local":
			s.closeErr = s.closeLocal()
		case "docker":
			s.closeErr = s.closeDocker()
		}
		if s.logger != nil && s.Kind != "url" {
			s.logger.Info("postgres stopped", "kind", s.Kind, "err", s.closeErr)
		}
	})
	return s.closeErr
}

// Died is closed when a PostgreSQL that rlslab started exits without rlslab
// stopping it (the cause is logged). For a server given by URL or run by
// Docker it is never closed.
func (s *Server) Died() <-chan struct{} {
	if s.died == nil {
		return nil
	}
	return s.died
}

// LogPath returns the server's log file when rlslab started the server
// from local binaries, else "".
func (s *Server) LogPath() string {
	if s.Kind != "local" {
		return ""
	}
	return s.logPath()
}
