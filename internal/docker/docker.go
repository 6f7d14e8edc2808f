// Package docker starts PostgreSQL and PgBouncer in Docker containers through
// testcontainers-go, for the machines that have neither as a local binary.
//
// It is an adapter: pgenv and bouncer describe what they need from a
// container runtime, and only cmd hands them this one, so that nothing else
// (the test binaries in particular) links the Docker client.
package docker

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
	"github.com/testcontainers/testcontainers-go/wait"
)

// PostgresImage is the image started when rlslab falls back to Docker for
// PostgreSQL.
const PostgresImage = "postgres:15-alpine"

// PgBouncerImage is the PgBouncer image. Its pgbouncer binary is at
// /usr/bin/pgbouncer and it runs as an unprivileged user.
const PgBouncerImage = "edoburu/pgbouncer:v1.25.1-p0"

// Containers starts containers on the Docker daemon testcontainers-go finds.
// Its zero value is ready to use.
type Containers struct{}

// Healthy reports whether a Docker daemon answers. Without one it fails
// within milliseconds. testcontainers may panic on a broken setup, so that
// is recovered as an error too.
func (Containers) Healthy(ctx context.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("testcontainers: %v", r)
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

// RunPostgres starts PostgreSQL with maxConnections and returns a superuser
// URL of it and a func that removes the container.
func (Containers) RunPostgres(ctx context.Context, maxConnections int) (url string, stop func() error, err error) {
	ctr, err := tcpostgres.Run(ctx, PostgresImage,
		testcontainers.WithCmdArgs("-c", "max_connections="+strconv.Itoa(maxConnections)),
		tcpostgres.BasicWaitStrategies(),
	)
	if err != nil {
		if ctr != nil {
			_ = testcontainers.TerminateContainer(ctr)
		}
		return "", nil, fmt.Errorf("start %s container: %w", PostgresImage, err)
	}
	stop = func() error { return testcontainers.TerminateContainer(ctr) }
	u, err := ctr.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		_ = stop()
		return "", nil, fmt.Errorf("container connection string: %w", err)
	}
	return u, stop, nil
}

// HostAlias is the name by which a container reaches a port of this host
// that RunPgBouncer was given.
func (Containers) HostAlias() string { return testcontainers.HostInternal }

// RunPgBouncer starts PgBouncer with the given files (path in the container
// to content) and /etc/pgbouncer/pgbouncer.ini as its configuration,
// listening on listenPort inside the container. hostPort, when not 0, is a
// port of this host the container must reach (as HostAlias). It returns
// where PgBouncer is reachable from here and a func that removes the
// container.
func (Containers) RunPgBouncer(ctx context.Context, files map[string]string, listenPort, hostPort int, ready time.Duration) (host string, port int, stop func() error, err error) {
	p := fmt.Sprintf("%d/tcp", listenPort)
	var custom []testcontainers.ContainerCustomizer
	if hostPort != 0 {
		custom = append(custom, testcontainers.WithHostPortAccess(hostPort))
	}
	var cf []testcontainers.ContainerFile
	for path, content := range files {
		cf = append(cf, testcontainers.ContainerFile{Reader: strings.NewReader(content), ContainerFilePath: path, FileMode: 0o644})
	}
	custom = append(custom,
		testcontainers.WithFiles(cf...),
		testcontainers.WithEntrypoint("/usr/bin/pgbouncer"),
		testcontainers.WithCmd("/etc/pgbouncer/pgbouncer.ini"),
		testcontainers.WithExposedPorts(p),
		testcontainers.WithWaitStrategyAndDeadline(ready, wait.ForListeningPort(p)),
	)
	ctr, err := testcontainers.Run(ctx, PgBouncerImage, custom...)
	if err != nil {
		if ctr != nil {
			_ = ctr.Terminate(context.WithoutCancel(ctx))
		}
		return "", 0, nil, fmt.Errorf("start container %s: %w", PgBouncerImage, err)
	}
	stop = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return ctr.Terminate(ctx)
	}
	host, err = ctr.Host(ctx)
	if err != nil {
		_ = stop()
		return "", 0, nil, fmt.Errorf("container host: %w", err)
	}
	mapped, err := ctr.MappedPort(ctx, p)
	if err != nil {
		_ = stop()
		return "", 0, nil, fmt.Errorf("container port: %w", err)
	}
	return host, int(mapped.Num()), stop, nil
}
