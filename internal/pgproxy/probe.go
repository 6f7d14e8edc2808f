package pgproxy

import (
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// The probe reads the tenant setting when the connection is idle: outside a
// transaction, with every message the client sent answered. It is not a
// simple Query, which would destroy the client's unnamed prepared statement
// (pgx's describe-exec mode parses unnamed, waits idle, then binds): it
// parses a statement of its own name, binds the unnamed portal (no portal
// survives outside a transaction, so none of the client's is lost), executes,
// closes its statement and syncs. Its replies are swallowed; notices,
// notifications and parameter changes still reach the client. Messages the
// client sends meanwhile go to the server right behind the probe, which the
// server answers first.

// probeRetry is how soon a probe is tried again when the server
// connection was busy with the client's writes.
const probeRetry = 500 * time.Microsecond

// maxProbeFailures is how many failed probes turn observation off for a
// connection; it then goes on unobserved.
const maxProbeFailures = 3

// probeState is a connection's probe; under conn.mu.
type probeState struct {
	msg      []byte        // the encoded probe, the same each time
	enabled  bool          // false once observation is given up
	inFlight bool          // its replies are at the head of the queue
	done     chan struct{} // closed when the probe in flight ends
	value    *string       // what it read (nil: NULL)
	role     string        // the backend's current_user, as it read it
	err      error
	failures int
	count    int         // probes that read the setting
	timer    *time.Timer // ProbeDelay's timer, when one waits
	gen      uint64      // bumped by every client message
}

// init encodes the probe for setting, with a statement name unique to the
// connection.
func (p *probeState) init(setting string, id uint64) {
	name := fmt.Sprintf("_rlslab_probe_%d", id)
	b, err := appendMsgs(nil,
		&pgproto3.Parse{Name: name, Query: "SELECT pg_catalog.current_setting($1, true), current_user", ParameterOIDs: []uint32{25}},
		&pgproto3.Bind{PreparedStatement: name, Parameters: [][]byte{[]byte(setting)}, ResultFormatCodes: []int16{0}},
		&pgproto3.Execute{},
		&pgproto3.Close{ObjectType: 'S', Name: name},
		&pgproto3.Sync{},
	)
	if err != nil {
		return // observation stays off
	}
	p.msg = b
	p.enabled = true
}

// cancelTimer forgets a delayed probe; under mu, at every client message.
func (p *probeState) cancelTimer() {
	p.gen++
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
}

// stopTimer stops a delayed probe for good.
func (p *probeState) stopTimer() {
	if p.timer != nil {
		p.timer.Stop()
	}
}

// probeInFlight returns a channel closed when the probe in flight ends, or
// nil when none is.
func (c *conn) probeInFlight() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.probe.inFlight {
		return nil
	}
	return c.probe.done
}

// idle says whether the client has nothing outstanding and no transaction
// open; under mu.
func (c *conn) idle() bool {
	return c.syncs == 0 && !c.unsynced && len(c.queue) == 0 && !c.clientTx && !c.copyIn
}

// maybeProbe probes now, or after Config.ProbeDelay of idleness; under mu.
func (c *conn) maybeProbe() {
	if !c.probe.enabled || c.probe.inFlight || !c.dirty || !c.idle() {
		return
	}
	d := c.s.cfg.ProbeDelay
	if d <= 0 {
		c.startProbe()
		return
	}
	c.probeAfter(d)
}

// probeAfter probes after d unless the client sends something first; under
// mu.
func (c *conn) probeAfter(d time.Duration) {
	if c.probe.timer != nil || !c.probe.enabled {
		return
	}
	gen := c.probe.gen
	c.probe.timer = time.AfterFunc(d, func() {
		c.mu.Lock()
		if c.probe.gen == gen {
			c.probe.timer = nil
			c.startProbe()
		}
		out := c.takeOutbox()
		c.mu.Unlock()
		deliver(out)
	})
}

// startProbe sends the probe if the connection is still idle and the
// client is not writing to the server; under mu.
func (c *conn) startProbe() {
	if !c.probe.enabled || c.probe.inFlight || !c.dirty || !c.idle() {
		return
	}
	if !c.wmu.TryLock() {
		// The client's side still holds the server connection: it may be
		// sending, or still finishing the flush of the statement just
		// answered. Try again in a moment (a client message first
		// cancels this), so an idle connection is read all the same.
		c.probeAfter(probeRetry)
		return
	}
	_, err := c.uw.Write(c.probe.msg)
	if err == nil {
		err = c.uw.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		// The server connection is failing; the relay will see it.
		c.probe.enabled = false
		return
	}
	c.dirty = false
	c.probe.inFlight = true
	c.probe.done = make(chan struct{})
	c.probe.value, c.probe.role, c.probe.err = nil, "", nil
	c.push(&pending{kind: 'z'})
}

// probeReply takes one of the probe's replies; under mu.
func (c *conn) probeReply(m message) {
	switch m.typ {
	case 'D':
		v, ok := columnValue(m.body(), 0)
		if !ok {
			c.probe.err = fmt.Errorf("pgproxy: probe: malformed row")
			return
		}
		if v != nil {
			s := string(v)
			c.probe.value = &s
		}
		if r, ok := columnValue(m.body(), 1); ok && r != nil {
			c.probe.role = string(r)
		}
	case 'E':
		var er pgproto3.ErrorResponse
		_ = er.Decode(m.body())
		c.probe.err = fmt.Errorf("pgproxy: probe: %s (SQLSTATE %s)", er.Message, er.Code)
	case 'Z':
		c.pop()
		c.probe.inFlight = false
		close(c.probe.done)
		c.probe.done = nil
		// The probed hook goes after the events the reading queues, so
		// that whoever it wakes finds the Setting already delivered.
		if f := c.s.probed; f != nil {
			err := c.probe.err
			defer func() { c.outbox = append(c.outbox, func() { f(c.realPID, err) }) }()
		}
		if c.probe.err != nil {
			c.probe.failures++
			c.log.Warn("pgproxy: probe failed", "err", c.probe.err, "failures", c.probe.failures)
			if c.probe.failures >= maxProbeFailures {
				c.probe.enabled = false
				c.log.Warn("pgproxy: observation off for this connection")
			}
			return
		}
		c.probe.count++
		c.observed(c.probe.value, c.probe.role)
	}
}
