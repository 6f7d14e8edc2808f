package engine

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// Status values of a lab's state.
const (
	StatusIdle    = "idle"
	StatusRunning = "running"
	StatusDone    = "done"
	StatusFailed  = "failed"
	// StatusCancelled is a run that rlslab stopped because its lab closed
	// (rlslab shutting down, the lab expiring); State.Error says why.
	StatusCancelled = "cancelled"
	// StatusQueued is a run that waits for connections of the server-wide
	// budget; State.Queue says for how many and behind how many runs.
	StatusQueued = "queued"
)

// Connection states shown in the live view.
const (
	ConnIdle     = "idle"
	ConnAcquired = "acquired"
	// ConnClosed is a connection of a run that has ended: its pool was
	// closed, and it is shown as it was last read.
	ConnClosed = "closed"
)

// maxRequests bounds the request log kept in a lab's state; older rows are
// dropped (their count stays in State.DroppedRequests).
const maxRequests = 400

// maxSamples bounds the time series kept in a lab's state.
const maxSamples = 240

// PoolCounts are the pool-side counts, read from pgxpool.Stat (Waiting is
// the number of requests currently inside Acquire).
type PoolCounts struct {
	Name     string `json:"name,omitempty"`
	Max      int32  `json:"max"`
	Total    int32  `json:"total"`
	Idle     int32  `json:"idle"`
	Acquired int32  `json:"acquired"`
	Waiting  int32  `json:"waiting"`
}

// ServerCounts are the server-side counts, read from pg_stat_activity and
// pg_roles by the lab's owner (package sessions).
type ServerCounts struct {
	Backends            int `json:"backends"`
	RoleConnectionLimit int `json:"role_connection_limit"`
	MaxConnections      int `json:"max_connections"`
}

// Connection is one pooled connection as last read from its own backend:
// the PID, tenant setting and role come from pg_backend_pid(),
// current_setting('app.current_tenant', true) and current_user.
type Connection struct {
	Pool    string  `json:"pool,omitempty"`
	Slot    int     `json:"slot"`
	PID     uint32  `json:"pid"`
	State   string  `json:"state"`
	Tenant  *string `json:"tenant"`
	Role    string  `json:"role"`
	Request int     `json:"request,omitempty"`
}

// RequestRow is one row of the request log: what one simulated application
// request did and what the database answered.
type RequestRow struct {
	Seq         int     `json:"seq"`
	Tenant      *string `json:"tenant"`
	Pattern     string  `json:"pattern"`
	Pool        string  `json:"pool,omitempty"`
	PID         uint32  `json:"pid"`
	SeenTenant  *string `json:"seen_tenant"`
	Role        string  `json:"role,omitempty"`
	Rows        int     `json:"rows"`
	ForeignRows int     `json:"foreign_rows"`
	Leak        bool    `json:"leak"`
	Error       string  `json:"error"`
	SQLState    string  `json:"sqlstate"`
	Phase       string  `json:"phase"`
	Why         string  `json:"why,omitempty"`
	// FinishedAt is the server's wall clock (Unix milliseconds) when the
	// request's query returned; the browser test uses it to measure how long
	// a row takes to reach the DOM.
	FinishedAt int64 `json:"finished_at,omitempty"`
}

// Sample is one point of the connections time series.
type Sample struct {
	Millis   int64 `json:"ms"`
	Total    int32 `json:"total"`
	Idle     int32 `json:"idle"`
	Acquired int32 `json:"acquired"`
}

// Timing is a latency summary of one measured pattern, in microseconds.
type Timing struct {
	MedianUS float64 `json:"median_us"`
	P99US    float64 `json:"p99_us"`
	N        int     `json:"n"`
}

// Metric is one named reading a scenario shows beside its run (requests per
// second, backend memory, refused connections...). Value is already
// formatted for display; Number is the raw value for tools.
type Metric struct {
	Name   string  `json:"name"`
	Value  string  `json:"value"`
	Number float64 `json:"number"`
}

// Point is one point of a chart line.
type Point struct {
	X float64 `json:"x"`
	Y float64 `json:"y"`
}

// Line is one named line of a chart.
type Line struct {
	Name   string  `json:"name"`
	Points []Point `json:"points"`
}

// Chart is a small line chart a scenario fills as it runs; the live view
// draws it as SVG.
type Chart struct {
	Title string `json:"title"`
	XUnit string `json:"x_unit"`
	YUnit string `json:"y_unit"`
	Lines []Line `json:"lines"`
}

// PeerConn is one connection on either side of a PgBouncer, read from its
// admin console (SHOW CLIENTS / SHOW SERVERS).
type PeerConn struct {
	Ptr    string  `json:"ptr"`
	Link   string  `json:"link"`
	Label  string  `json:"label"` // the app instance (client side) or "backend PID" (server side)
	State  string  `json:"state"`
	PID    uint32  `json:"pid,omitempty"` // server side: remote_pid
	Tenant *string `json:"tenant"`        // server side: the setting last read on that backend
}

// BouncerPool is one line of SHOW POOLS.
type BouncerPool struct {
	Database  string `json:"database"`
	User      string `json:"user"`
	ClActive  int    `json:"cl_active"`
	ClWaiting int    `json:"cl_waiting"`
	SvActive  int    `json:"sv_active"`
	SvIdle    int    `json:"sv_idle"`
	MaxWaitMS int64  `json:"maxwait_ms"`
}

// Pairing is the PgBouncer side of the live view: its clients, its server
// connections, and which client is linked to which server right now.
type Pairing struct {
	Version string        `json:"version"`
	Mode    string        `json:"mode"`
	Clients []PeerConn    `json:"clients"`
	Servers []PeerConn    `json:"servers"`
	Pools   []BouncerPool `json:"pools"`
}

// State is a lab's live state: everything a frame shows and state.json
// serves.
type State struct {
	Lab             string             `json:"lab"`
	Tenants         []Tenant           `json:"tenants,omitempty"` // the lab's seeded tenants, for showing names
	Scenario        string             `json:"scenario"`
	Variant         string             `json:"variant"`
	Status          string             `json:"status"`
	Speed           string             `json:"speed,omitempty"`
	Narration       string             `json:"narration,omitempty"`
	Error           string             `json:"error,omitempty"`
	Pool            PoolCounts         `json:"pool"`
	Pools           []PoolCounts       `json:"pools,omitempty"`
	Server          ServerCounts       `json:"server"`
	Connections     []Connection       `json:"connections"`
	Requests        []RequestRow       `json:"requests"`
	DroppedRequests int                `json:"dropped_requests,omitempty"`
	Series          []Sample           `json:"series"`
	Notes           []string           `json:"notes,omitempty"`
	Metrics         []Metric           `json:"metrics,omitempty"`
	Charts          []Chart            `json:"charts,omitempty"`
	Timings         map[string]Timing  `json:"timings,omitempty"`
	Ratios          map[string]float64 `json:"ratios,omitempty"`
	Pairing         *Pairing           `json:"pairing,omitempty"`
	Queue           *Queue             `json:"queue,omitempty"`
	QueuedMS        int64              `json:"queued_ms,omitempty"` // how long the run waited for connections
	Outage          string             `json:"outage,omitempty"`
	Timeline        *Timeline          `json:"timeline,omitempty"`
	Policy          *Policy            `json:"policy,omitempty"`
	SharedField     []FieldReading     `json:"shared_field,omitempty"`
	// Findings are what the run observed besides its request log: rows of
	// another tenant written or deleted, data revealed by an error or a
	// count, the measurement it is about (see Judge).
	Findings []Finding `json:"findings,omitempty"`
	// Frame is how many frames the run has shown (Env.Step calls, or
	// frames of a replay shown so far).
	Frame int `json:"frame,omitempty"`
	// Replay is set while a run that ran at full speed is shown at the
	// learner's pace from the states it produced (see Capture).
	Replay  *Replay `json:"replay,omitempty"`
	Version uint64  `json:"version"`

	// kept is set while the state's slices, maps and pointers are those of
	// a state a Capture kept, shown as they are (Tracker.show): nobody
	// changes them, so every tracker that shows them shares them.
	kept *keptState
}

// keptState marks a state a Capture kept (State.kept).
type keptState struct {
	// size is the length of the state's JSON, 0 when it is not known.
	size int
}

// Kept reports whether the state's slices, maps and pointers are those of
// a state a Capture kept, shared by every tracker that shows it and by its
// followers (see Tracker.View): such a state must be read, never changed
// in place. size is the length of that state's JSON when the capture
// knows it (it does for the states a follower shows), else 0.
func (s State) Kept() (size int, ok bool) {
	if s.kept == nil {
		return 0, false
	}
	return s.kept.size, true
}

// Queue is where a run that waits for connections stands: it needs Need
// connections and Ahead runs wait before it.
type Queue struct {
	Need  int `json:"need"`
	Ahead int `json:"ahead"`
}

// Leaks counts the requests in the state that returned another tenant's rows.
func (s State) Leaks() int {
	n := 0
	for _, r := range s.Requests {
		if r.Leak {
			n++
		}
	}
	return n
}

// Errors counts the requests in the state that failed.
func (s State) Errors() int {
	n := 0
	for _, r := range s.Requests {
		if r.Error != "" {
			n++
		}
	}
	return n
}

// Tracker holds a lab's live state. Scenario events update it; watchers read
// snapshots and are told through Changed when there is something new.
type Tracker struct {
	mu    sync.Mutex
	st    State
	frame int // frames the current run has shown (Env.Step calls)
	// frameHooks get every frame (AddFrameHook); copied on write: stepped
	// reads it without the lock.
	frameHooks []*func(State)
	started    time.Time
	changed    chan struct{}
	subs       []chan struct{} // copied on write: Update reads it without the lock
}

// NewTracker returns a tracker for the lab with the given id and seeded
// tenants, in status idle.
func NewTracker(lab string, tenants []Tenant) *Tracker {
	return &Tracker{
		st:      State{Lab: lab, Tenants: tenants, Status: StatusIdle, Connections: []Connection{}, Requests: []RequestRow{}, Series: []Sample{}},
		started: time.Now(),
		changed: make(chan struct{}, 1),
	}
}

// Changed returns a channel that receives a value after the state changed.
// Several changes may be folded into one value.
func (t *Tracker) Changed() <-chan struct{} { return t.changed }

// Snapshot returns a deep copy of the current state.
func (t *Tracker) Snapshot() State {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st.clone()
}

// View returns the current state as Snapshot does, except that a state a
// Capture kept, shown as it is (State.Kept), comes back without a copy of
// its slices and maps, which nobody changes: the caller must not change
// them either. It is how a recording of a run that shows another lab's
// crowd holds that crowd's states once for every lab.
func (t *Tracker) View() State {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.st.kept != nil {
		return t.st
	}
	return t.st.clone()
}

// clone returns a copy of s that shares nothing with it (and is not kept).
func (s State) clone() State {
	c := s
	c.kept = nil
	c.Tenants = append([]Tenant(nil), s.Tenants...)
	c.Pools = append([]PoolCounts(nil), s.Pools...)
	c.Connections = append([]Connection{}, s.Connections...)
	c.Requests = append([]RequestRow{}, s.Requests...)
	c.Series = append([]Sample{}, s.Series...)
	c.Notes = append([]string(nil), s.Notes...)
	c.Metrics = append([]Metric(nil), s.Metrics...)
	c.Findings = append([]Finding(nil), s.Findings...)
	c.Timeline, c.SharedField = s.Timeline.clone(), append([]FieldReading(nil), s.SharedField...)
	c.Charts = make([]Chart, len(s.Charts))
	for i, ch := range s.Charts {
		c.Charts[i] = ch
		c.Charts[i].Lines = make([]Line, len(ch.Lines))
		for j, l := range ch.Lines {
			c.Charts[i].Lines[j] = Line{Name: l.Name, Points: append([]Point(nil), l.Points...)}
		}
	}
	if s.Pairing != nil {
		p := *s.Pairing
		p.Clients = append([]PeerConn(nil), p.Clients...)
		p.Servers = append([]PeerConn(nil), p.Servers...)
		p.Pools = append([]BouncerPool(nil), p.Pools...)
		c.Pairing = &p
	}
	if s.Timings != nil {
		c.Timings = make(map[string]Timing, len(s.Timings))
		for k, v := range s.Timings {
			c.Timings[k] = v
		}
	}
	if s.Ratios != nil {
		c.Ratios = make(map[string]float64, len(s.Ratios))
		for k, v := range s.Ratios {
			c.Ratios[k] = v
		}
	}
	return c
}

// Update applies f to the state under the tracker's lock and signals
// watchers. A state a Capture kept (State.Kept) becomes the tracker's own
// copy first, since f may change its slices in place.
func (t *Tracker) Update(f func(*State)) {
	t.set(func(s *State) {
		if s.kept != nil {
			*s = s.clone()
		}
		f(s)
	})
}

// set applies f to the state under the tracker's lock and signals
// watchers, as Update does but without copying a state a Capture kept: f
// may only set fields (a value, or a slice, map or pointer of its own),
// never change what the state's slices, maps or pointers hold.
func (t *Tracker) set(f func(*State)) {
	t.mu.Lock()
	f(&t.st)
	t.st.Version++
	subs := t.subs
	t.mu.Unlock()
	signal(t.changed)
	for _, c := range subs {
		signal(c)
	}
}

// signal puts a value in c unless one is already waiting there.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Subscribe returns a channel that receives a value after the state
// changed (several changes may fold into one), for one more consumer
// besides Changed; cancel ends the subscription.
func (t *Tracker) Subscribe() (changes <-chan struct{}, cancel func()) {
	c := make(chan struct{}, 1)
	t.mu.Lock()
	t.subs = append(append([]chan struct{}(nil), t.subs...), c)
	t.mu.Unlock()
	return c, func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		out := make([]chan struct{}, 0, len(t.subs))
		for _, s := range t.subs {
			if s != c {
				out = append(out, s)
			}
		}
		t.subs = out
	}
}

// Begin clears the state for a new run of scenario/variant.
func (t *Tracker) Begin(scenario, variant, speed string) {
	t.set(func(s *State) {
		lab, tenants, server := s.Lab, s.Tenants, s.Server
		*s = State{Lab: lab, Tenants: tenants, Server: server, Scenario: scenario, Variant: variant, Speed: speed,
			Status: StatusRunning, Connections: []Connection{}, Requests: []RequestRow{}, Series: []Sample{}, Version: s.Version}
	})
	t.mu.Lock()
	t.started = time.Now()
	t.frame = 0
	t.mu.Unlock()
}

// Frame returns how many frames the current run has shown. A frame's state
// and its number change in one update, just before the run waits on that
// frame, so a test that sees frame n knows the run is held on it (in
// single-step mode, until the next Step).
func (t *Tracker) Frame() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.frame
}

// Metric returns the metric called name, if the run set it.
func (t *Tracker) Metric(name string) (Metric, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range t.st.Metrics {
		if m.Name == name {
			return m, true
		}
	}
	return Metric{}, false
}

// Clear returns the state to idle with nothing in it (a lab reset).
func (t *Tracker) Clear() {
	t.set(func(s *State) {
		*s = State{Lab: s.Lab, Tenants: s.Tenants, Server: s.Server, Status: StatusIdle, Connections: []Connection{}, Requests: []RequestRow{}, Series: []Sample{}, Version: s.Version}
	})
}

// Finish sets the final status of a run; a non-nil err marks it failed.
func (t *Tracker) Finish(err error) {
	t.set(func(s *State) {
		if err != nil {
			s.Status = StatusFailed
			s.Error = Scrub(err.Error())
			s.Narration = "The run failed: " + s.Error
			return
		}
		s.Status = StatusDone
	})
}

// SetServer records server-side counts; a successful read ends an outage.
func (t *Tracker) SetServer(c ServerCounts) {
	t.set(func(s *State) { s.Server, s.Outage = c, "" })
}

// SetOutage records that the database is not answering (msg says so in
// words), or that it answers again (msg empty).
func (t *Tracker) SetOutage(msg string) {
	t.mu.Lock()
	same := t.st.Outage == msg
	t.mu.Unlock()
	if !same {
		t.set(func(s *State) { s.Outage = msg })
	}
}

// SetQueue shows a run waiting for connections (nil: it was admitted).
func (t *Tracker) SetQueue(q *Queue) {
	t.set(func(s *State) {
		s.Queue = q
		switch {
		case q != nil:
			s.Status = StatusQueued
			runs := "runs"
			if q.Ahead == 1 {
				runs = "run"
			}
			s.Narration = fmt.Sprintf("Waiting for %d connections of the server's budget; %d %s ahead of you. It starts by itself when connections come back.", q.Need, q.Ahead, runs)
		case s.Status == StatusQueued:
			s.Status = StatusRunning
			s.Narration = ""
		}
	})
}

// SetSpeed records the pace shown in the state.
func (t *Tracker) SetSpeed(speed string) {
	t.set(func(s *State) { s.Speed = speed })
}

// Narrate sets the sentence that explains the current frame.
func (t *Tracker) Narrate(text string) {
	text = Scrub(text)
	t.set(func(s *State) { s.Narration = text })
}

// EndFrame narrates text and ends a frame there, as Env.Step does without
// reading any pool or waiting for the pace: for a session with no paced
// script (free play, an app), each call or statement that ends is a frame,
// so that its recording keeps every one however fast they come.
func (t *Tracker) EndFrame(text string) {
	text = Scrub(text)
	t.set(func(s *State) {
		s.Narration = text
		t.frame++
		s.Frame = t.frame
	})
	t.stepped()
}

// Note appends a line to the run's notes (facts the run established).
func (t *Tracker) Note(text string) {
	text = Scrub(text)
	t.Update(func(s *State) { s.Notes = append(s.Notes, text) })
}

// SetMetric sets (or adds) the metric called name.
func (t *Tracker) SetMetric(name, value string, number float64) {
	t.Update(func(s *State) {
		for i := range s.Metrics {
			if s.Metrics[i].Name == name {
				s.Metrics[i].Value, s.Metrics[i].Number = value, number
				return
			}
		}
		s.Metrics = append(s.Metrics, Metric{Name: name, Value: value, Number: number})
	})
}

// maxChartPoints bounds each chart line; older points are dropped.
const maxChartPoints = 300

// AddPoint appends (x, y) to the line of the chart titled chart, creating
// both as needed (the chart's units are set on creation).
func (t *Tracker) AddPoint(chart, xUnit, yUnit, line string, x, y float64) {
	t.Update(func(s *State) {
		ci := -1
		for i := range s.Charts {
			if s.Charts[i].Title == chart {
				ci = i
			}
		}
		if ci < 0 {
			s.Charts = append(s.Charts, Chart{Title: chart, XUnit: xUnit, YUnit: yUnit})
			ci = len(s.Charts) - 1
		}
		c := &s.Charts[ci]
		li := -1
		for i := range c.Lines {
			if c.Lines[i].Name == line {
				li = i
			}
		}
		if li < 0 {
			c.Lines = append(c.Lines, Line{Name: line})
			li = len(c.Lines) - 1
		}
		l := &c.Lines[li]
		l.Points = append(l.Points, Point{X: x, Y: y})
		if len(l.Points) > maxChartPoints {
			l.Points = append([]Point(nil), l.Points[len(l.Points)-maxChartPoints:]...)
		}
	})
}

// SetTiming records the latency summary of a measured pattern.
func (t *Tracker) SetTiming(pattern string, tm Timing) {
	t.Update(func(s *State) {
		if s.Timings == nil {
			s.Timings = map[string]Timing{}
		}
		s.Timings[pattern] = tm
	})
}

// SetRatio records a measured ratio (a pattern's median over the bare
// query's).
func (t *Tracker) SetRatio(name string, r float64) {
	t.Update(func(s *State) {
		if s.Ratios == nil {
			s.Ratios = map[string]float64{}
		}
		s.Ratios[name] = r
	})
}

// addRequest appends a request row and returns its sequence number.
func (t *Tracker) addRequest(r RequestRow) int {
	var seq int
	t.Update(func(s *State) {
		seq = len(s.Requests) + s.DroppedRequests + 1
		r.Seq = seq
		s.Requests = append(s.Requests, r)
		if len(s.Requests) > maxRequests {
			drop := len(s.Requests) - maxRequests
			s.Requests = append([]RequestRow(nil), s.Requests[drop:]...)
			s.DroppedRequests += drop
		}
	})
	return seq
}

// updateRequest applies f to the request row seq, if it is still kept.
func (t *Tracker) updateRequest(seq int, f func(*RequestRow)) {
	t.Update(func(s *State) {
		for i := len(s.Requests) - 1; i >= 0; i-- {
			if s.Requests[i].Seq == seq {
				f(&s.Requests[i])
				return
			}
		}
	})
}

// sample adds the pool counts to the time series. Every change is a point
// of its own, however close to the last (a run at full speed changes its
// counts within milliseconds, and folding them lost its acquisitions); a
// reading that changes nothing moves a trailing point forward, so the
// series reaches the present. Past maxSamples the older points are thinned
// to every other one, so a long run keeps its whole span.
func (t *Tracker) sample(s *State) {
	ms := time.Since(t.started).Milliseconds()
	p := Sample{Millis: ms, Total: s.Pool.Total, Idle: s.Pool.Idle, Acquired: s.Pool.Acquired}
	if n := len(s.Series); n >= 2 && s.Series[n-1].sameCounts(s.Series[n-2]) {
		if s.Series[n-1].sameCounts(p) {
			s.Series[n-1].Millis = ms
			return
		}
		// A change ends the counts held since the trailing point: a step
		// chart holds them until this point without it.
		s.Series = s.Series[:n-1]
	}
	s.Series = append(s.Series, p)
	if len(s.Series) > maxSamples {
		s.Series = thinSamples(s.Series)
	}
}

// sameCounts reports whether a and b have the same pool counts.
func (a Sample) sameCounts(b Sample) bool {
	return a.Total == b.Total && a.Idle == b.Idle && a.Acquired == b.Acquired
}

// thinSamples keeps the first and the newest half of series and every other
// point of the older half.
func thinSamples(series []Sample) []Sample {
	half := len(series) / 2
	out := make([]Sample, 0, len(series))
	for i := 0; i < half; i += 2 {
		out = append(out, series[i])
	}
	return append(out, series[half:]...)
}

// Request returns the request row seq as it is now (a zero row with that
// Seq when it is no longer kept).
func (t *Tracker) Request(seq int) RequestRow {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := len(t.st.Requests) - 1; i >= 0; i-- {
		if t.st.Requests[i].Seq == seq {
			return t.st.Requests[i]
		}
	}
	return RequestRow{Seq: seq}
}

// Conn returns the connection (pool, slot) as last read from its backend.
func (t *Tracker) Conn(pool string, slot int) (Connection, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if i := findConn(&t.st, pool, slot); i >= 0 {
		return t.st.Connections[i], true
	}
	return Connection{}, false
}

// ConnByPID returns the connection of pool with backend pid as last read.
func (t *Tracker) ConnByPID(pool string, pid uint32) (Connection, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.st.Connections {
		if c.Pool == pool && c.PID == pid {
			return c, true
		}
	}
	return Connection{}, false
}

// Connections returns every connection shown, as last read.
func (t *Tracker) Connections() []Connection {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Connection(nil), t.st.Connections...)
}

// Leaks counts the requests of the run that returned another tenant's rows.
func (t *Tracker) Leaks() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st.Leaks()
}

// ConnsOf returns the connections of pool as last read.
func (t *Tracker) ConnsOf(pool string) []Connection {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Connection
	for _, c := range t.st.Connections {
		if c.Pool == pool {
			out = append(out, c)
		}
	}
	return out
}

// UpdateRequest applies f to the request row seq, if it is still kept.
func (t *Tracker) UpdateRequest(seq int, f func(*RequestRow)) { t.updateRequest(seq, f) }

// Server returns the server-side counts and the outage message, without
// copying the rest of the state.
func (t *Tracker) Server() (ServerCounts, string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st.Server, t.st.Outage
}

// Finished reports whether the run the state shows is over (done or
// failed).
func (t *Tracker) Finished() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st.Status == StatusDone || t.st.Status == StatusFailed
}

// AddFrameHook makes f receive a copy of the state at the end of every
// frame a run shows (each Env.Step), on the run's goroutine, so that
// nothing is missed even at full speed (a recording, or a Capture that
// others follow), until remove is called; hooks run in the order they were
// added. f must be quick. The copy is the tracker's View: the slices of a
// state a Capture kept are shared, and f must not change them.
func (t *Tracker) AddFrameHook(f func(State)) (remove func()) {
	p := &f
	t.mu.Lock()
	t.frameHooks = append(slices.Clone(t.frameHooks), p)
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		t.frameHooks = slices.DeleteFunc(slices.Clone(t.frameHooks), func(q *func(State)) bool { return q == p })
	}
}

// stepped hands the state to the frame hooks, if any.
func (t *Tracker) stepped() {
	t.mu.Lock()
	hooks := t.frameHooks
	t.mu.Unlock()
	if len(hooks) == 0 {
		return
	}
	st := t.View()
	for _, h := range hooks {
		(*h)(st)
	}
}
