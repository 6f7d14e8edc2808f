package engine

import "time"

// Kinds of timeline events.
const (
	// TimelineConnect is a reading taken from a new connection's backend.
	TimelineConnect = "connect"
	// TimelineAcquire is a request taking a connection (not a reading: the
	// backend is the one last read on that connection).
	TimelineAcquire = "acquire"
	// TimelineObserve is a reading taken by a request's own query.
	TimelineObserve = "observe"
	// TimelineRelease is a reading taken as a connection came back to its
	// pool.
	TimelineRelease = "release"
	// TimelineClose is a connection leaving its pool.
	TimelineClose = "close"
	// TimelineField is a value of a field the application shares between
	// requests, written (Wrote) or read by request Seq (not a backend: PID
	// is 0 and Tenant is the value).
	TimelineField = "field"
	// TimelineLink is PgBouncer's admin console showing client Pool (an app
	// instance) linked to the server connection of backend PID (SHOW
	// CLIENTS' link joined with SHOW SERVERS' ptr and remote_pid).
	TimelineLink = "link"
)

// maxTimeline bounds the events kept in State.Timeline; older events are
// dropped (their count stays in Timeline.Dropped).
const maxTimeline = 600

// TimelineEvent is one moment in the life of a backend: a reading of its
// tenant setting and role taken from the backend itself, or a request
// taking it.
type TimelineEvent struct {
	// At is the server's wall clock in Unix microseconds.
	At   int64  `json:"at_us"`
	Kind string `json:"kind"`
	Pool string `json:"pool,omitempty"`
	Slot int    `json:"slot,omitempty"`
	PID  uint32 `json:"pid"`
	// Read reports whether Tenant and Role were read from the backend at
	// this moment (connect, observe, release).
	Read   bool    `json:"read,omitempty"`
	Tenant *string `json:"tenant"`
	Role   string  `json:"role,omitempty"`
	// Seq is the request the event belongs to (0: none).
	Seq int `json:"seq,omitempty"`
	// Wrote marks a field event that wrote the value (else it read it).
	Wrote bool `json:"wrote,omitempty"`
	// Inferred marks a tenant setting that was not read from the backend
	// but inferred from the statements an application sent (SET,
	// set_config, RESET, DISCARD) inside a transaction, until a reading
	// confirms it.
	Inferred bool `json:"inferred,omitempty"`
}

// Timeline is what the live view draws as lanes of backends: the events of
// the run in the order they happened, newest last.
type Timeline struct {
	// AppRole is the role the lab's application logs in as; a reading
	// under another role is worth showing.
	AppRole string          `json:"app_role,omitempty"`
	Events  []TimelineEvent `json:"events"`
	Dropped int             `json:"dropped,omitempty"`
}

// clone returns a copy of tl that shares nothing with it.
func (tl *Timeline) clone() *Timeline {
	if tl == nil {
		return nil
	}
	c := *tl
	c.Events = append([]TimelineEvent(nil), tl.Events...)
	return &c
}

// addTimeline appends ev to the state's timeline, stamping its time and
// dropping the oldest events beyond the bound.
func (s *State) addTimeline(appRole string, ev TimelineEvent) {
	if s.Timeline == nil {
		s.Timeline = &Timeline{}
	}
	tl := s.Timeline
	if tl.AppRole == "" {
		tl.AppRole = appRole
	}
	if ev.At == 0 {
		ev.At = time.Now().UnixMicro()
	}
	tl.Events = append(tl.Events, ev)
	if len(tl.Events) > maxTimeline {
		drop := len(tl.Events) - maxTimeline
		tl.Events = append([]TimelineEvent(nil), tl.Events[drop:]...)
		tl.Dropped += drop
	}
}

// timelineRecord is the pool's hook for a reading stored by record: the
// reading at connect (a new slot), or at release. A request's own reading
// is recorded by timelineObserve.
func (s *State) timelineRecord(p *Pool, cn Connection, isNew bool, state string) {
	if state == ConnAcquired {
		return // a request's query: timelineObserve has it, with its request
	}
	kind := TimelineRelease
	if isNew {
		kind = TimelineConnect
	}
	s.addTimeline(p.env.Sandbox.AppRole, TimelineEvent{Kind: kind, Pool: p.name, Slot: cn.Slot, PID: cn.PID, Read: true, Tenant: cn.Tenant, Role: cn.Role})
}

// timelineMark is the pool's hook for a connection marked as taken by a
// request.
func (s *State) timelineMark(p *Pool, i int, state string, seq int) {
	if i < 0 || state != ConnAcquired || seq == 0 {
		return
	}
	cn := s.Connections[i]
	s.addTimeline(p.env.Sandbox.AppRole, TimelineEvent{Kind: TimelineAcquire, Pool: p.name, Slot: cn.Slot, PID: cn.PID, Tenant: cn.Tenant, Role: cn.Role, Seq: seq})
}

// timelineObserve is the request's hook for what its own query read on the
// backend (which may be one the request never acquired itself: a pool call
// made on the pool, not on a held connection).
func (s *State) timelineObserve(r *Request, pid uint32, seen *string, role string) {
	ev := TimelineEvent{Kind: TimelineObserve, PID: pid, Read: true, Tenant: seen, Role: role, Seq: r.Seq}
	if r.pool != nil {
		ev.Pool = r.pool.name
	}
	s.addTimeline(r.env.Sandbox.AppRole, ev)
}

// AddTimeline appends ev to the lab's timeline (its time stamped now when
// At is 0), for connections that are not the engine's pools: free play's
// and an app's through the proxy. appRole is the role the lab's
// application logs in as.
func (t *Tracker) AddTimeline(appRole string, ev TimelineEvent) {
	t.Update(func(s *State) { s.addTimeline(appRole, ev) })
}

// LastReading returns the tenant setting that backend pid was last read to
// hold, by any connection (at connect, in a request's query, at release),
// and whether the timeline still has such a reading.
func (t *Tracker) LastReading(pid uint32) (*string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tl := t.st.Timeline
	if tl == nil || pid == 0 {
		return nil, false
	}
	for i := len(tl.Events) - 1; i >= 0; i-- {
		if ev := tl.Events[i]; ev.Read && ev.PID == pid {
			if ev.Tenant == nil {
				return nil, true
			}
			v := *ev.Tenant
			return &v, true
		}
	}
	return nil, false
}

// timelineClose is the pool's hook for a connection leaving the pool.
func (s *State) timelineClose(p *Pool, i int) {
	if i < 0 {
		return
	}
	cn := s.Connections[i]
	s.addTimeline(p.env.Sandbox.AppRole, TimelineEvent{Kind: TimelineClose, Pool: p.name, Slot: cn.Slot, PID: cn.PID})
}

// Policy is the row-level security in force on the table a scenario
// queries, as the scenario read it from the catalog (pg_policies and
// pg_class), for the live view to show beside the run.
type Policy struct {
	Table string `json:"table"`
	Name  string `json:"name,omitempty"`
	// Using is the policy's USING expression as the server prints it.
	Using string `json:"using"`
	// Enabled and Force are the table's relrowsecurity and
	// relforcerowsecurity.
	Enabled bool `json:"enabled"`
	Force   bool `json:"force"`
}

// FieldReading is one value of a field the application shares between
// requests (wrong-scope's global tenant id), read at a moment by a request.
type FieldReading struct {
	At    int64  `json:"at_us"`
	Value string `json:"value"`
	// Seq is the request that wrote (Wrote) or read the value.
	Seq   int  `json:"seq,omitempty"`
	Wrote bool `json:"wrote,omitempty"`
}

// maxFieldReadings bounds State.SharedField.
const maxFieldReadings = 200

// SetPolicy records the policy in force (nil: none to show).
func (t *Tracker) SetPolicy(p *Policy) {
	t.Update(func(s *State) {
		if p == nil {
			s.Policy = nil
			return
		}
		c := *p
		s.Policy = &c
	})
}

// AddFieldReading records a value of the shared field, stamped now.
func (t *Tracker) AddFieldReading(r FieldReading) {
	t.Update(func(s *State) {
		if r.At == 0 {
			r.At = time.Now().UnixMicro()
		}
		s.SharedField = append(s.SharedField, r)
		v := r.Value
		s.addTimeline("", TimelineEvent{At: r.At, Kind: TimelineField, Tenant: &v, Seq: r.Seq, Wrote: r.Wrote})
		if len(s.SharedField) > maxFieldReadings {
			s.SharedField = append([]FieldReading(nil), s.SharedField[len(s.SharedField)-maxFieldReadings:]...)
		}
	})
}

// AddLink records, as a timeline event, that PgBouncer's admin console
// showed client (an app instance's name) linked to the server connection of
// backend pid. The caller records each pairing once, when it appears.
func (t *Tracker) AddLink(client string, pid uint32) {
	t.Update(func(s *State) { s.addTimeline("", TimelineEvent{Kind: TimelineLink, Pool: client, PID: pid}) })
}
