package sessions

import (
	"context"
	"sync"
	"time"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// countsMaxAge is how old the server-side counts may be before a lab that
// asks for them gets them read again.
const countsMaxAge = 200 * time.Millisecond

// serverCounts reads pg_stat_activity for every lab at once, at most every
// countsMaxAge and only when some lab asks (a watched lab, state.json): one
// query on one admin connection however many labs are watched.
type serverCounts struct {
	s *labServer

	mu       sync.Mutex
	at       time.Time
	backends map[string]int // by database name
	maxConns int
	err      error
	reading  chan struct{} // closed when the read in flight ends
	// After a failed read the server is not asked again before retryAt:
	// the pause doubles from countsMaxAge up to countsRetryMax, so that a
	// server that is down is not dialled five times a second for as long
	// as its labs are watched.
	retryAt time.Time
	retry   time.Duration
}

// countsRetryMax bounds the pause between reads of a server that fails.
const countsRetryMax = 5 * time.Second

// get returns the backends of database db and max_connections, read no
// longer than countsMaxAge ago; concurrent callers share one read.
func (c *serverCounts) get(ctx context.Context, db string, maxAge time.Duration) (backends, maxConns int, err error) {
	asked := time.Now()
	for {
		c.mu.Lock()
		if time.Since(c.at) < maxAge || !c.at.Before(asked) || c.err != nil && asked.Before(c.retryAt) {
			b, mc, err := c.backends[db], c.maxConns, c.err
			c.mu.Unlock()
			return b, mc, err
		}
		if wait := c.reading; wait != nil {
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return 0, 0, ctx.Err()
			}
		}
		done := make(chan struct{})
		c.reading = done
		c.mu.Unlock()
		counts, maxConns, err := c.read(ctx)
		c.mu.Lock()
		c.at, c.backends, c.maxConns, c.err, c.reading = time.Now(), counts, maxConns, err, nil
		switch {
		case err == nil:
			c.retry = 0
		case ctx.Err() == nil:
			c.retry = min(max(2*c.retry, countsMaxAge), countsRetryMax)
			c.retryAt = c.at.Add(c.retry)
		}
		c.mu.Unlock()
		close(done)
	}
}

// read queries the counts of every lab database.
func (c *serverCounts) read(ctx context.Context) (map[string]int, int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	rows, err := c.s.admin.Query(ctx, `SELECT datname, count(*)::int, current_setting('max_connections')::int FROM pg_stat_activity
		WHERE datname LIKE 'lab\_%' AND backend_type = 'client backend' GROUP BY datname
		UNION ALL SELECT '', 0, current_setting('max_connections')::int`)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	out := map[string]int{}
	maxConns := 0
	for rows.Next() {
		var db string
		var n, mc int
		if err := rows.Scan(&db, &n, &mc); err != nil {
			return nil, 0, err
		}
		out[db], maxConns = n, mc
	}
	return out, maxConns, rows.Err()
}

// RefreshServer reads the lab's server-side counts (shared with every other
// lab's, at most a few times a second); when the database does not answer,
// the state shows the outage.
func (l *Lab) RefreshServer(ctx context.Context) error { return l.refreshServer(ctx, countsMaxAge) }

// refreshServer reads the counts, no older than maxAge (0: a read that
// starts after this call).
func (l *Lab) refreshServer(ctx context.Context, maxAge time.Duration) error {
	b, mc, err := l.srv.counts.get(ctx, l.Sandbox.Database, maxAge)
	if err != nil {
		err = l.mgr.dbError("server counts", err)
		if rlslab.ErrorCode(err) == rlslab.EUNAVAILABLE {
			l.tracker.SetOutage(rlslab.ErrorMessage(err))
		}
		return err
	}
	c := engine.ServerCounts{Backends: b, RoleConnectionLimit: l.Sandbox.ConnLimit, MaxConnections: mc}
	if old, outage := l.tracker.Server(); old != c || outage != "" {
		l.tracker.SetServer(c)
	}
	return nil
}
