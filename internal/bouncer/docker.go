package bouncer

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// DockerImage is the PgBouncer image used in Docker mode. Its pgbouncer
// binary is at /usr/bin/pgbouncer and it runs as an unprivileged user.
const DockerImage = "edoburu/pgbouncer:v1.25.1-p0"

// dockerPort is where PgBouncer listens inside the container.
const dockerPort = 6432

// dockerBouncer is a PgBouncer container.
type dockerBouncer struct {
	ctr testcontainers.Container
}

// dockerHealthy reports whether a Docker provider answers. Without a daemon
// this fails in about a millisecond.
func dockerHealthy(ctx context.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("docker provider panicked: %v", r)
		}
	}()
	p, err := testcontainers.ProviderDefault.GetProvider()
	if err != nil {
		return err
	}
	defer p.Close()
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return p.Health(hctx)
}

// startDocker runs PgBouncer in a container with a generated config.
func startDocker(ctx context.Context, opts Options, logger *slog.Logger) (*Bouncer, error) {
	started := time.Now()
	host := opts.Upstream.Host
	if strings.HasPrefix(host, "/") {
		return nil, fmt.Errorf("bouncer: a PgBouncer container cannot reach the unix socket %s; give PostgreSQL a TCP address", host)
	}
	var custom []testcontainers.ContainerCustomizer
	if host == "localhost" || host == "127.0.0.1" || host == "::1" {
		host = testcontainers.HostInternal
		custom = append(custom, testcontainers.WithHostPortAccess(opts.Upstream.Port))
	}
	adminPassword := randomPassword()
	secrets, adminSecret, err := authSecrets(ctx, opts, adminPassword, logger)
	if err != nil {
		return nil, fmt.Errorf("bouncer: %w", err)
	}
	cfg := config{
		listenAddr:     "0.0.0.0",
		listenPort:     dockerPort,
		upstreamHost:   host,
		upstreamPort:   opts.Upstream.Port,
		authFile:       "/etc/pgbouncer/userlist.txt",
		databases:      opts.Databases,
		poolSize:       opts.PoolSize,
		resetAlways:    opts.ResetQueryAlways,
		adminUser:      adminUserName,
		maxClientConns: 200,
	}
	port := fmt.Sprintf("%d/tcp", dockerPort)
	custom = append(custom,
		testcontainers.WithFiles(
			testcontainers.ContainerFile{Reader: strings.NewReader(cfg.ini()), ContainerFilePath: "/etc/pgbouncer/pgbouncer.ini", FileMode: 0o644},
			testcontainers.ContainerFile{Reader: strings.NewReader(authFile(secrets, adminUserName, adminSecret)), ContainerFilePath: "/etc/pgbouncer/userlist.txt", FileMode: 0o644},
		),
		testcontainers.WithEntrypoint("/usr/bin/pgbouncer"),
		testcontainers.WithCmd("/etc/pgbouncer/pgbouncer.ini"),
		testcontainers.WithExposedPorts(port),
		testcontainers.WithWaitStrategyAndDeadline(readyTimeout, wait.ForListeningPort(port)),
	)
	ctr, err := testcontainers.Run(ctx, DockerImage, custom...)
	if err != nil {
		if ctr != nil {
			_ = ctr.Terminate(context.WithoutCancel(ctx))
		}
		return nil, fmt.Errorf("bouncer: start container %s: %w", DockerImage, err)
	}
	d := &dockerBouncer{ctr: ctr}
	chost, err := ctr.Host(ctx)
	if err != nil {
		_ = d.stop()
		return nil, fmt.Errorf("bouncer: container host: %w", err)
	}
	mapped, err := ctr.MappedPort(ctx, port)
	if err != nil {
		_ = d.stop()
		return nil, fmt.Errorf("bouncer: container port: %w", err)
	}
	b := &Bouncer{
		kind:          KindDocker,
		host:          chost,
		port:          int(mapped.Num()),
		adminUser:     adminUserName,
		adminPassword: adminPassword,
		logger:        logger,
		docker:        d,
	}
	v, err := waitReady(ctx, b.AdminURL(), nil)
	if err != nil {
		_ = d.stop()
		return nil, fmt.Errorf("bouncer: container %s: %w", DockerImage, err)
	}
	b.version = v
	logger.Info("pgbouncer started", "kind", b.kind, "image", DockerImage, "addr", chost, "port", b.port,
		"version", v, "took", time.Since(started).Round(time.Millisecond))
	return b, nil
}

// stop terminates the container.
func (d *dockerBouncer) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return d.ctr.Terminate(ctx)
}
