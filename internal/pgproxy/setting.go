package pgproxy

import "time"

// The tenant setting as the relay follows it. A reading (the probe) sets the
// session value. Statements the client sends write inferred values: a
// session-level write is pending until its transaction commits (an implicit
// one ends at ReadyForQuery 'I'), a local one lasts until the transaction
// ends; an error or a rollback drops what the transaction wrote.

// current returns the setting in force; under mu.
func (c *conn) current() Setting {
	s := c.session
	if c.local != nil {
		s = *c.local
	} else if c.pend != nil {
		s = *c.pend
	}
	s.Role = c.role
	return s
}

// report queues a Setting event when the setting in force changed.
func (c *conn) report() {
	cur := c.current()
	if cur.same(c.reported) {
		return
	}
	c.reported = cur
	c.emit(func() { c.events.Setting(c.info, cur) })
}

// apply records a write of the setting by a statement that succeeded.
func (c *conn) apply(ef effect, text string) {
	s := Setting{Known: ef.kind != effUnknown, Inferred: true, Local: ef.local, Statement: text, At: time.Now()}
	if ef.kind == effSet {
		s.Value = ef.value
	}
	if ef.local {
		c.local = &s
	} else {
		c.pend = &s
		c.local = nil
	}
	c.report()
}

// endTransaction ends a transaction: committed, its session-level writes
// stay.
func (c *conn) endTransaction(commit bool) {
	if commit && c.pend != nil {
		c.session = *c.pend
	}
	c.pend, c.local, c.aborted = nil, nil, false
	c.report()
}

// endOfTransaction follows ReadyForQuery's transaction status.
func (c *conn) endOfTransaction(status byte) {
	switch status {
	case 'I':
		c.endTransaction(!c.aborted)
	case 'E':
		c.aborted = true
	case 'T':
		c.aborted = false // healthy again, for instance after ROLLBACK TO
	}
}

// observed records a probe's reading (nil: the setting does not exist).
func (c *conn) observed(v *string, role string) {
	if role != "" {
		c.role = role
	}
	now := time.Now()
	s := Setting{Known: true, At: now, Read: now}
	if v == nil {
		s.Null = true
	} else {
		s.Value = *v
	}
	if c.session.Known && c.session.Null == s.Null && c.session.Value == s.Value {
		s.Statement, s.At = c.session.Statement, c.session.At
	}
	c.session = s
	c.pend, c.local = nil, nil
	c.report()
}
