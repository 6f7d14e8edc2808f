package pgenv

import (
	"context"
	"fmt"
	"strconv"

	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
)

// dockerImage is the image started when rlslab falls back to Docker.
const dockerImage = "postgres:15-alpine"

// notAvailableError says that a way of getting PostgreSQL does not exist on
// this machine (as opposed to existing and failing).
type notAvailableError struct{ err error }

// Error implements error.
func (e *notAvailableError) Error() string { return "not available: " + e.err.Error() }

// Unwrap returns the reason.
func (e *notAvailableError) Unwrap() error { return e.err }

// dockerHealthy reports whether a Docker daemon answers. Without one it fails
// within milliseconds. testcontainers may panic on a broken setup, so that is
// recovered as an error too.
func dockerHealthy(ctx context.Context) (err error) {
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
	return p.Health(ctx)
}

// startDocker runs PostgreSQL in a container through testcontainers-go. It
// returns a *notAvailableError when there is no Docker daemon.
func startDocker(ctx context.Context, opts Options) (*Server, error) {
	if err := dockerHealthy(ctx); err != nil {
		return nil, &notAvailableError{err: err}
	}
	if opts.DataDir != "" {
		opts.Logger.Warn("DataDir is not used with Docker: the database is lost on Close", "dir", opts.DataDir)
	}
	opts.Logger.Info("starting PostgreSQL in Docker", "image", dockerImage)
	ctr, err := tcpostgres.Run(ctx, dockerImage,
		testcontainers.WithCmdArgs("-c", "max_connections="+strconv.Itoa(opts.MaxConnections)),
		tcpostgres.BasicWaitStrategies(),
	)
	if err != nil {
		if ctr != nil {
			_ = testcontainers.TerminateContainer(ctr)
		}
		return nil, fmt.Errorf("pgenv: start %s container: %w", dockerImage, err)
	}
	u, err := ctr.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		_ = testcontainers.TerminateContainer(ctr)
		return nil, fmt.Errorf("pgenv: container connection string: %w", err)
	}
	return &Server{URL: u, TCPURL: u, Kind: "docker", maxConns: opts.MaxConnections, container: ctr}, nil
}

// closeDocker terminates the container.
func (s *Server) closeDocker() error {
	if err := testcontainers.TerminateContainer(s.container); err != nil {
		return fmt.Errorf("pgenv: terminate container: %w", err)
	}
	return nil
}
