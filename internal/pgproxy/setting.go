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
	s.Role = c.roles.current()
	s.RoleInferred = c.roles.inferred()
	return s
}

// roleState follows the backend's role (current_user) the way the tenant
// setting is followed: a probe reads it; SET ROLE, SET LOCAL ROLE, RESET
// ROLE, set_config('role', ...), RESET ALL and DISCARD ALL write it, a
// session-level write pending until its transaction commits, a local one
// lasting until the transaction ends.
type roleState struct {
	login   string  // the role the session logged in as (session_authorization), "" when not known
	session string  // as last read or committed; "" before the first reading
	pend    *string // a session-level write in the open transaction
	local   *string // a SET LOCAL ROLE in the open transaction
	// committed says session comes from a committed write, not yet read.
	committed bool
}

// inferred says whether the role in force comes from statements the client
// sent rather than from a reading.
func (r *roleState) inferred() bool {
	return r.local != nil || r.pend != nil || r.committed
}

// current returns the role in force ("" when not known).
func (r *roleState) current() string {
	switch {
	case r.local != nil:
		return *r.local
	case r.pend != nil:
		return *r.pend
	}
	return r.session
}

// apply records a write of the role by a statement that succeeded; a write
// whose value the text does not tell leaves the role unknown until the next
// reading.
func (r *roleState) apply(ef effect) {
	v := ef.value
	switch ef.kind {
	case effReset:
		v = r.login
	case effUnknown:
		v = ""
	}
	if ef.local {
		r.local = &v
	} else {
		r.pend, r.local = &v, nil
	}
}

// end ends a transaction: committed, its session-level write stays.
func (r *roleState) end(commit bool) {
	if commit && r.pend != nil {
		r.session, r.committed = *r.pend, true
	}
	r.pend, r.local = nil, nil
}

// read records a probe's reading of current_user.
func (r *roleState) read(role string) {
	if role == "" {
		return
	}
	if r.login == "" {
		r.login = role // the first reading comes before any statement
	}
	r.session, r.pend, r.local, r.committed = role, nil, nil, false
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
	if ef.role {
		c.roles.apply(ef)
		c.report()
		return
	}
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
//
// A write of the setting makes it exist on the backend for the rest of the
// session, whether or not the write outlives its transaction: a setting
// read as absent (NULL) is then empty, as the next reading will say.
func (c *conn) endTransaction(commit bool) {
	wrote := c.pend != nil || c.local != nil
	switch {
	case commit && c.pend != nil:
		c.session = *c.pend
	case wrote && c.session.Known && c.session.Null:
		c.session = Setting{Known: true, Inferred: true, At: time.Now()}
	}
	c.roles.end(commit)
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
	c.roles.read(role)
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
