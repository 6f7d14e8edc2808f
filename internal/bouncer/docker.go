package bouncer

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Containers runs PgBouncer in a container, for the machines without a
// local pgbouncer binary. rlslab's Docker adapter implements it; a nil
// Containers means no container fallback.
type Containers interface {
	// Healthy reports whether containers can be started here.
	Healthy(ctx context.Context) error
	// HostAlias is the name by which a container reaches a port of this
	// host that RunPgBouncer was given.
	HostAlias() string
	// RunPgBouncer starts PgBouncer with files (path in the container to
	// content; its configuration is /etc/pgbouncer/pgbouncer.ini) listening
	// on listenPort inside the container; hostPort, when not 0, is a port
	// of this host it must reach. It returns where PgBouncer is reachable
	// from here and a func that removes the container.
	RunPgBouncer(ctx context.Context, files map[string]string, listenPort, hostPort int, ready time.Duration) (host string, port int, stop func() error, err error)
}

// errNoContainers is what Containers' absence says when asked for.
var errNoContainers = fmt.Errorf("no container runtime in this build")

// containersHealthy reports whether c can start containers.
func containersHealthy(ctx context.Context, c Containers) error {
	if c == nil {
		return errNoContainers
	}
	return c.Healthy(ctx)
}

// containerPort is where PgBouncer listens inside a container.
const containerPort = 6432

// startContainer runs PgBouncer in a container of opts.Containers with a
// generated config.
func startContainer(ctx context.Context, opts Options, logger *slog.Logger) (*Bouncer, error) {
	started := time.Now()
	host := opts.Upstream.Host
	if strings.HasPrefix(host, "/") {
		return nil, fmt.Errorf("bouncer: a PgBouncer container cannot reach the unix socket %s; give PostgreSQL a TCP address", host)
	}
	hostPort := 0
	if host == "localhost" || host == "127.0.0.1" || host == "::1" {
		host = opts.Containers.HostAlias()
		hostPort = opts.Upstream.Port
	}
	adminPassword := randomPassword()
	secrets, adminSecret, err := authSecrets(ctx, opts, adminPassword, logger)
	if err != nil {
		return nil, fmt.Errorf("bouncer: %w", err)
	}
	cfg := config{
		listenAddr:     "0.0.0.0",
		listenPort:     containerPort,
		upstreamHost:   host,
		upstreamPort:   opts.Upstream.Port,
		authFile:       "/etc/pgbouncer/userlist.txt",
		databases:      opts.Databases,
		poolSize:       opts.PoolSize,
		resetAlways:    opts.ResetQueryAlways,
		adminUser:      adminUserName,
		maxClientConns: 200,
	}
	files := map[string]string{
		"/etc/pgbouncer/pgbouncer.ini": cfg.ini(),
		"/etc/pgbouncer/userlist.txt":  authFile(secrets, adminUserName, adminSecret),
	}
	chost, port, stop, err := opts.Containers.RunPgBouncer(ctx, files, containerPort, hostPort, readyTimeout)
	if err != nil {
		return nil, fmt.Errorf("bouncer: %w", err)
	}
	b := &Bouncer{
		kind:          KindDocker,
		host:          chost,
		port:          port,
		adminUser:     adminUserName,
		adminPassword: adminPassword,
		logger:        logger,
		stopContainer: stop,
	}
	v, err := waitReady(ctx, b.AdminURL(), nil)
	if err != nil {
		_ = stop()
		return nil, fmt.Errorf("bouncer: container: %w", err)
	}
	b.version = v
	logger.Info("pgbouncer started", "kind", b.kind, "addr", chost, "port", b.port,
		"version", v, "took", time.Since(started).Round(time.Millisecond))
	return b, nil
}
