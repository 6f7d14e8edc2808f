package pgenv

import (
	"context"
	"errors"
	"fmt"
)

// notAvailableError says that a way of getting PostgreSQL does not exist on
// this machine (as opposed to existing and failing).
type notAvailableError struct{ err error }

// Error implements error.
func (e *notAvailableError) Error() string { return "not available: " + e.err.Error() }

// Unwrap returns the reason.
func (e *notAvailableError) Unwrap() error { return e.err }

// errNoContainers is the reason when Options.Containers is nil.
var errNoContainers = errors.New("no container runtime in this build")

// startContainer runs PostgreSQL in a container of opts.Containers. It
// returns a *notAvailableError when there is no container runtime.
func startContainer(ctx context.Context, opts Options) (*Server, error) {
	if opts.Containers == nil {
		return nil, &notAvailableError{err: errNoContainers}
	}
	if err := opts.Containers.Healthy(ctx); err != nil {
		return nil, &notAvailableError{err: err}
	}
	if opts.DataDir != "" {
		opts.Logger.Warn("DataDir is not used with Docker: the database is lost on Close", "dir", opts.DataDir)
	}
	opts.Logger.Info("starting PostgreSQL in a container")
	u, stop, err := opts.Containers.RunPostgres(ctx, opts.MaxConnections)
	if err != nil {
		return nil, fmt.Errorf("pgenv: %w", err)
	}
	return &Server{URL: u, TCPURL: u, Kind: "docker", maxConns: opts.MaxConnections, stopContainer: stop}, nil
}

// closeDocker removes the container.
func (s *Server) closeDocker() error {
	if err := s.stopContainer(); err != nil {
		return fmt.Errorf("pgenv: remove container: %w", err)
	}
	return nil
}
