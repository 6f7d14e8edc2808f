package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrNotPaused is what Look returns unless the run is paused on a frame in
// single-step mode.
var ErrNotPaused = errors.New("the run is not paused in single-step mode")

// Look runs f on the connection of this run whose backend is pid, while
// the run is paused on a frame in single-step mode: the frame does not go
// on until f returns, so f and the run never use the connection at once.
// The connection may be one a request holds (perhaps inside its
// transaction) or an idle one of the run's pools; an idle one is taken out
// and given back, and read again as it comes back. f must leave the
// connection as it found it. Look returns ErrNotPaused when the run is not
// paused, and an error naming pid when the run holds no such connection.
func (e *Env) Look(ctx context.Context, pid uint32, f func(ctx context.Context, conn *pgx.Conn) error) error {
	release, ok := e.pace.Hold(ctx)
	if !ok {
		return ErrNotPaused
	}
	defer release()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrNotPaused
	}
	var held *pgx.Conn
	for _, c := range e.held {
		if c != nil && c.Conn().PgConn().PID() == pid {
			held = c.Conn()
		}
	}
	pools := append([]*Pool(nil), e.pools...)
	e.mu.Unlock()
	if held != nil {
		return f(ctx, held)
	}
	for _, p := range pools {
		idle := p.Pool.AcquireAllIdle(ctx)
		var target *pgxpool.Conn
		for _, c := range idle {
			if target == nil && c.Conn().PgConn().PID() == pid {
				target = c
				continue
			}
			c.Release()
		}
		if target != nil {
			err := f(ctx, target.Conn())
			p.ReleaseAndWait(context.WithoutCancel(ctx), target)
			return err
		}
	}
	return fmt.Errorf("the run holds no connection to backend %d", pid)
}
