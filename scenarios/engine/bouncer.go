package engine

import "context"

// Bouncer is a running PgBouncer that a scenario started in front of its
// lab's database. The run's environment closes it.
type Bouncer interface {
	// URL is a client URL through the PgBouncer for database and user.
	URL(database, user, password string) string
	// AdminURL is the URL of its admin console (SHOW POOLS and so on).
	AdminURL() string
	// PID is the PgBouncer process id, or 0 when it is not a local process.
	PID() int
	// Version is what SHOW VERSION reported, e.g. "1.18.0".
	Version() string
	// Kind says how it was had: "local", "docker" or "url" (a running
	// PgBouncer given by URL, whose own settings apply).
	Kind() string
	Close() error
}

// BouncerOptions is what a scenario asks of its PgBouncer: it always runs
// in transaction mode in front of the lab's database, for its app role.
type BouncerOptions struct {
	PoolSize         int  // default_pool_size
	ResetQueryAlways bool // server_reset_query_always = 1
}

// BouncerStarter starts a PgBouncer in front of a sandbox's database as its
// app role; package cmd wires one in, so the engine never knows how
// (process, container or URL).
type BouncerStarter func(ctx context.Context, sb Sandbox, o BouncerOptions) (Bouncer, error)

// StartBouncer starts a PgBouncer for the run and closes it with the run.
func (e *Env) StartBouncer(ctx context.Context, o BouncerOptions) (Bouncer, error) {
	if e.Sandbox.Bouncers == nil {
		return nil, ErrNoBouncer
	}
	b, err := e.Sandbox.Bouncers(ctx, e.Sandbox, o)
	if err != nil {
		return nil, err
	}
	e.OnClose(func() {
		if err := b.Close(); err != nil {
			e.log.Warn("stop pgbouncer", "err", err)
		}
	})
	return b, nil
}

// ErrNoBouncer is returned by StartBouncer when rlslab was started without
// any way to get a PgBouncer.
var ErrNoBouncer = bouncerError("no PgBouncer is available to this rlslab (install pgbouncer, run Docker, or pass -pgbouncer URL)")

type bouncerError string

func (e bouncerError) Error() string { return string(e) }
