package sessions

import (
	"encoding/json"
	"fmt"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions/store"
)

// RecordingFormat is the version of the recordings this rlslab writes, as
// /runs/{id}.json says ("format"). Format 1 kept each frame as the engine's
// State JSON of its day; format 2 keeps each frame as a StateDoc, converted
// from the engine's State once, when the frame is taken. A StateDoc's
// names are spelled out here, so renaming a field of the engine cannot
// change what a recording holds: the conversion stops compiling instead.
const RecordingFormat = 2

// DecodeFrame reads one frame's state of a recording stored in format.
// Format 1's frames are the engine's State JSON as it was until format 2
// came, whose names and shapes StateDoc kept (pinned by web's
// state-json-fields.golden): they decode as a StateDoc. A later format
// that changes StateDoc must give format 1 a reader of its own.
func DecodeFrame(format int, raw json.RawMessage) (StateDoc, error) {
	var d StateDoc
	switch format {
	case 1, 2:
		if err := json.Unmarshal(raw, &d); err != nil {
			return StateDoc{}, err
		}
		return d, nil
	}
	return StateDoc{}, fmt.Errorf("recording format %d is newer than this rlslab (%d)", format, RecordingFormat)
}

// CurrentRecording returns rec with its frames in RecordingFormat, read
// from the format they were stored in; a recording of that format comes
// back as it is.
func CurrentRecording(rec store.Recording) (store.Recording, error) {
	if rec.Format == RecordingFormat {
		return rec, nil
	}
	frames := make([]store.Frame, len(rec.Frames))
	for i, f := range rec.Frames {
		d, err := DecodeFrame(rec.Format, f.State)
		if err != nil {
			return store.Recording{}, fmt.Errorf("recording %s, frame %d: %w", rec.ID, i, err)
		}
		b, err := json.Marshal(d)
		if err != nil {
			return store.Recording{}, fmt.Errorf("recording %s, frame %d: %w", rec.ID, i, err)
		}
		frames[i] = store.Frame{AtMs: f.AtMs, State: b}
	}
	rec.Format, rec.Frames = RecordingFormat, frames
	return rec, nil
}

// TenantDoc is one of the lab's seeded tenants.
type TenantDoc struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
}

// StateDoc is a lab's state as a document: what a recording keeps of each
// frame and what GET /labs/{id}/state.json serves.
type StateDoc struct {
	Lab             string               `json:"lab"`
	Tenants         []TenantDoc          `json:"tenants,omitempty"`
	Scenario        string               `json:"scenario"`
	Variant         string               `json:"variant"`
	Status          string               `json:"status"`
	Speed           string               `json:"speed,omitempty"`
	Narration       string               `json:"narration,omitempty"`
	Error           string               `json:"error,omitempty"`
	Pool            PoolCountsDoc        `json:"pool"`
	Pools           []PoolCountsDoc      `json:"pools,omitempty"`
	Server          ServerCountsDoc      `json:"server"`
	Connections     []ConnectionDoc      `json:"connections"`
	Requests        []RequestDoc         `json:"requests"`
	DroppedRequests int                  `json:"dropped_requests,omitempty"`
	Series          []SampleDoc          `json:"series"`
	Notes           []string             `json:"notes,omitempty"`
	Metrics         []MetricDoc          `json:"metrics,omitempty"`
	Charts          []ChartDoc           `json:"charts,omitempty"`
	Timings         map[string]TimingDoc `json:"timings,omitempty"`
	Ratios          map[string]float64   `json:"ratios,omitempty"`
	Pairing         *PairingDoc          `json:"pairing,omitempty"`
	Queue           *QueueDoc            `json:"queue,omitempty"`
	QueuedMS        int64                `json:"queued_ms,omitempty"`
	Outage          string               `json:"outage,omitempty"`
	Timeline        *TimelineDoc         `json:"timeline,omitempty"`
	Policy          *PolicyDoc           `json:"policy,omitempty"`
	SharedField     []FieldReadingDoc    `json:"shared_field,omitempty"`
	Findings        []FindingDoc         `json:"findings,omitempty"`
	// Outcome is what the run showed so far (engine.State.Outcome): absent
	// while nothing has been observed. It is derived from the rest of the
	// document, so Engine leaves it out.
	Outcome *OutcomeDoc `json:"outcome,omitempty"`
	Frame   int         `json:"frame,omitempty"`
	Replay  *ReplayDoc  `json:"replay,omitempty"`
	Version uint64      `json:"version"`
}

// FindingDoc is a run's observation besides its request log (a breach, a
// disclosure, a measurement) in a state document.
type FindingDoc struct {
	Kind string `json:"kind"`
	Text string `json:"text"`
	Lead bool   `json:"lead,omitempty"`
}

// OutcomeDoc names what a run showed: kind is one of leak, breach,
// disclosure, failed-closed, error, measurement, none; headline is the
// sentence that heads the outcome bar.
type OutcomeDoc struct {
	Kind     string `json:"kind"`
	Headline string `json:"headline"`
}

// ReplayDoc says, in a state document, that the run shown ran at full speed
// in RanMS milliseconds (0 while it still ran) and is shown at its pace.
type ReplayDoc struct {
	RanMS int64 `json:"ran_ms"`
	// Shared is set when the run followed a crowd another learner started
	// on the same server (engine.Shared).
	Shared *SharedDoc `json:"shared,omitempty"`
}

// SharedDoc says, in a state document, that the run followed a shared
// run that had been going for AgoMS milliseconds when it started; Busy when
// it was not a crowd but a run that would have waited for connections.
type SharedDoc struct {
	AgoMS int64 `json:"ago_ms"`
	Busy  bool  `json:"busy,omitempty"`
}

// PoolCountsDoc is a pool's counts (pgxpool.Stat) in a state document.
type PoolCountsDoc struct {
	Name     string `json:"name,omitempty"`
	Max      int32  `json:"max"`
	Total    int32  `json:"total"`
	Idle     int32  `json:"idle"`
	Acquired int32  `json:"acquired"`
	Waiting  int32  `json:"waiting"`
}

// ServerCountsDoc is the server-side counts in a state document.
type ServerCountsDoc struct {
	Backends            int `json:"backends"`
	RoleConnectionLimit int `json:"role_connection_limit"`
	MaxConnections      int `json:"max_connections"`
}

// ConnectionDoc is one pooled connection in a state document, as last read from
// its backend.
type ConnectionDoc struct {
	Pool    string  `json:"pool,omitempty"`
	Slot    int     `json:"slot"`
	PID     uint32  `json:"pid"`
	State   string  `json:"state"`
	Tenant  *string `json:"tenant"`
	Role    string  `json:"role"`
	Request int     `json:"request,omitempty"`
}

// RequestDoc is one row of the request log in a state document.
type RequestDoc struct {
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
	FinishedAt  int64   `json:"finished_at,omitempty"`
}

// SampleDoc is one point of the connections time series in a state document.
type SampleDoc struct {
	Millis   int64 `json:"ms"`
	Total    int32 `json:"total"`
	Idle     int32 `json:"idle"`
	Acquired int32 `json:"acquired"`
}

// TimingDoc is a pattern's latency summary in a state document, in microseconds.
type TimingDoc struct {
	MedianUS float64 `json:"median_us"`
	P99US    float64 `json:"p99_us"`
	N        int     `json:"n"`
}

// MetricDoc is one named reading of a run in a state document.
type MetricDoc struct {
	Name   string  `json:"name"`
	Value  string  `json:"value"`
	Number float64 `json:"number"`
}

// PointDoc is one point of a chart line in a state document.
type PointDoc struct {
	X float64 `json:"x"`
	Y float64 `json:"y"`
}

// LineDoc is one named line of a chart in a state document.
type LineDoc struct {
	Name   string     `json:"name"`
	Points []PointDoc `json:"points"`
}

// ChartDoc is one chart of a run in a state document.
type ChartDoc struct {
	Title string    `json:"title"`
	XUnit string    `json:"x_unit"`
	YUnit string    `json:"y_unit"`
	Lines []LineDoc `json:"lines"`
}

// PeerConnDoc is one connection on either side of a PgBouncer in
// the state document.
type PeerConnDoc struct {
	Ptr    string  `json:"ptr"`
	Link   string  `json:"link"`
	Label  string  `json:"label"`
	State  string  `json:"state"`
	PID    uint32  `json:"pid,omitempty"`
	Tenant *string `json:"tenant"`
}

// BouncerPoolDoc is one line of PgBouncer's SHOW POOLS in a state document.
type BouncerPoolDoc struct {
	Database  string `json:"database"`
	User      string `json:"user"`
	ClActive  int    `json:"cl_active"`
	ClWaiting int    `json:"cl_waiting"`
	SvActive  int    `json:"sv_active"`
	SvIdle    int    `json:"sv_idle"`
	MaxWaitMS int64  `json:"maxwait_ms"`
}

// PairingDoc is the PgBouncer side of the live view in a state document.
type PairingDoc struct {
	Version string           `json:"version"`
	Mode    string           `json:"mode"`
	Clients []PeerConnDoc    `json:"clients"`
	Servers []PeerConnDoc    `json:"servers"`
	Pools   []BouncerPoolDoc `json:"pools"`
}

// QueueDoc is where a queued run stands in a state document.
type QueueDoc struct {
	Need  int `json:"need"`
	Ahead int `json:"ahead"`
}

// TimelineEventDoc is one moment in the life of a backend in a state document.
type TimelineEventDoc struct {
	At     int64   `json:"at_us"`
	Kind   string  `json:"kind"`
	Pool   string  `json:"pool,omitempty"`
	Slot   int     `json:"slot,omitempty"`
	PID    uint32  `json:"pid"`
	Read   bool    `json:"read,omitempty"`
	Tenant *string `json:"tenant"`
	Role   string  `json:"role,omitempty"`
	Seq    int     `json:"seq,omitempty"`
	Wrote  bool    `json:"wrote,omitempty"`
	// Inferred marks a setting inferred from the statements an app sent,
	// not read from the backend (see the engine's TimelineEvent).
	Inferred bool `json:"inferred,omitempty"`
}

// TimelineDoc is the run's backend timeline in a state document.
type TimelineDoc struct {
	AppRole string             `json:"app_role,omitempty"`
	Events  []TimelineEventDoc `json:"events"`
	Dropped int                `json:"dropped,omitempty"`
}

// PolicyDoc is the row-level security in force in a state document.
type PolicyDoc struct {
	Table   string `json:"table"`
	Name    string `json:"name,omitempty"`
	Using   string `json:"using"`
	Enabled bool   `json:"enabled"`
	Force   bool   `json:"force"`
}

// FieldReadingDoc is one reading of a shared application field in
// the state document.
type FieldReadingDoc struct {
	At    int64  `json:"at_us"`
	Value string `json:"value"`
	Seq   int    `json:"seq,omitempty"`
	Wrote bool   `json:"wrote,omitempty"`
}

// StateDocOf converts a lab's state into the state document's type. A nil slice or
// map stays nil and an empty one empty, so that fields without omitempty
// keep printing null or [] as they did.
func StateDocOf(st engine.State) StateDoc {
	return StateDoc{
		Lab:             st.Lab,
		Tenants:         convertSlice(st.Tenants, func(t engine.Tenant) TenantDoc { return TenantDoc(t) }),
		Scenario:        st.Scenario,
		Variant:         st.Variant,
		Status:          st.Status,
		Speed:           st.Speed,
		Narration:       st.Narration,
		Error:           st.Error,
		Pool:            PoolCountsDoc(st.Pool),
		Pools:           convertSlice(st.Pools, func(p engine.PoolCounts) PoolCountsDoc { return PoolCountsDoc(p) }),
		Server:          ServerCountsDoc(st.Server),
		Connections:     convertSlice(st.Connections, connectionDocOf),
		Requests:        convertSlice(st.Requests, requestDocOf),
		DroppedRequests: st.DroppedRequests,
		Series:          convertSlice(st.Series, func(s engine.Sample) SampleDoc { return SampleDoc(s) }),
		Notes:           convertSlice(st.Notes, func(n string) string { return n }),
		Metrics:         convertSlice(st.Metrics, func(m engine.Metric) MetricDoc { return MetricDoc(m) }),
		Charts:          convertSlice(st.Charts, chartDocOf),
		Timings:         convertMap(st.Timings, func(t engine.Timing) TimingDoc { return TimingDoc(t) }),
		Ratios:          convertMap(st.Ratios, func(r float64) float64 { return r }),
		Pairing:         convertPointer(st.Pairing, pairingDocOf),
		Queue:           convertPointer(st.Queue, func(q engine.Queue) QueueDoc { return QueueDoc(q) }),
		QueuedMS:        st.QueuedMS,
		Outage:          st.Outage,
		Timeline:        convertPointer(st.Timeline, timelineDocOf),
		Policy:          convertPointer(st.Policy, func(p engine.Policy) PolicyDoc { return PolicyDoc(p) }),
		SharedField:     convertSlice(st.SharedField, func(f engine.FieldReading) FieldReadingDoc { return FieldReadingDoc(f) }),
		Findings:        convertSlice(st.Findings, func(f engine.Finding) FindingDoc { return FindingDoc(f) }),
		Outcome:         outcomeDocOf(st),
		Frame:           st.Frame,
		Replay: convertPointer(st.Replay, func(r engine.Replay) ReplayDoc {
			return ReplayDoc{RanMS: r.RanMS, Shared: convertPointer(r.Shared, func(s engine.Shared) SharedDoc { return SharedDoc(s) })}
		}),
		Version: st.Version,
	}
}

// outcomeDocOf is the state's verdict, nil while it has none.
func outcomeDocOf(st engine.State) *OutcomeDoc {
	v, ok := st.Outcome()
	if !ok {
		return nil
	}
	return &OutcomeDoc{Kind: v.Kind, Headline: v.Headline}
}

// A struct conversion such as PoolCountsDoc(p) above compiles only while
// both types have the same field names and types, and it ignores tags,
// which is the point: a field added to the engine's type stops the build
// until the state document decides about it. The types below hold pointers or
// slices, so they are copied field by field, and the state document never shares
// memory with the tracker's state.

func connectionDocOf(c engine.Connection) ConnectionDoc {
	return ConnectionDoc{Pool: c.Pool, Slot: c.Slot, PID: c.PID, State: c.State, Tenant: copyString(c.Tenant), Role: c.Role, Request: c.Request}
}

func requestDocOf(r engine.RequestRow) RequestDoc {
	return RequestDoc{Seq: r.Seq, Tenant: copyString(r.Tenant), Pattern: r.Pattern, Pool: r.Pool, PID: r.PID,
		SeenTenant: copyString(r.SeenTenant), Role: r.Role, Rows: r.Rows, ForeignRows: r.ForeignRows, Leak: r.Leak,
		Error: r.Error, SQLState: r.SQLState, Phase: r.Phase, Why: r.Why, FinishedAt: r.FinishedAt}
}

func chartDocOf(c engine.Chart) ChartDoc {
	return ChartDoc{Title: c.Title, XUnit: c.XUnit, YUnit: c.YUnit, Lines: convertSlice(c.Lines, func(l engine.Line) LineDoc {
		return LineDoc{Name: l.Name, Points: convertSlice(l.Points, func(p engine.Point) PointDoc { return PointDoc(p) })}
	})}
}

func peerConnDocOf(p engine.PeerConn) PeerConnDoc {
	return PeerConnDoc{Ptr: p.Ptr, Link: p.Link, Label: p.Label, State: p.State, PID: p.PID, Tenant: copyString(p.Tenant)}
}

func pairingDocOf(p engine.Pairing) PairingDoc {
	return PairingDoc{Version: p.Version, Mode: p.Mode, Clients: convertSlice(p.Clients, peerConnDocOf), Servers: convertSlice(p.Servers, peerConnDocOf),
		Pools: convertSlice(p.Pools, func(b engine.BouncerPool) BouncerPoolDoc { return BouncerPoolDoc(b) })}
}

func timelineDocOf(t engine.Timeline) TimelineDoc {
	return TimelineDoc{AppRole: t.AppRole, Dropped: t.Dropped, Events: convertSlice(t.Events, func(e engine.TimelineEvent) TimelineEventDoc {
		return TimelineEventDoc{At: e.At, Kind: e.Kind, Pool: e.Pool, Slot: e.Slot, PID: e.PID, Read: e.Read, Tenant: copyString(e.Tenant), Role: e.Role, Seq: e.Seq, Wrote: e.Wrote, Inferred: e.Inferred}
	})}
}

// convertSlice maps in through f, keeping nil as nil and empty as empty.
func convertSlice[T, U any](in []T, f func(T) U) []U {
	if in == nil {
		return nil
	}
	out := make([]U, len(in))
	for i, v := range in {
		out[i] = f(v)
	}
	return out
}

// convertMap maps the values of in through f, keeping nil as nil.
func convertMap[T, U any](in map[string]T, f func(T) U) map[string]U {
	if in == nil {
		return nil
	}
	out := make(map[string]U, len(in))
	for k, v := range in {
		out[k] = f(v)
	}
	return out
}

// convertPointer maps *in through f, keeping nil as nil.
func convertPointer[T, U any](in *T, f func(T) U) *U {
	if in == nil {
		return nil
	}
	out := f(*in)
	return &out
}

// copyString returns a copy of *p, or nil.
func copyString(p *string) *string {
	return convertPointer(p, func(s string) string { return s })
}

// Engine returns the document as the engine's State, for the views a
// replay renders with. The conversion compiles only while both sides have
// the same fields.
func (d StateDoc) Engine() engine.State {
	return engine.State{
		Lab:             d.Lab,
		Tenants:         convertSlice(d.Tenants, func(t TenantDoc) engine.Tenant { return engine.Tenant(t) }),
		Scenario:        d.Scenario,
		Variant:         d.Variant,
		Status:          d.Status,
		Speed:           d.Speed,
		Narration:       d.Narration,
		Error:           d.Error,
		Pool:            engine.PoolCounts(d.Pool),
		Pools:           convertSlice(d.Pools, func(p PoolCountsDoc) engine.PoolCounts { return engine.PoolCounts(p) }),
		Server:          engine.ServerCounts(d.Server),
		Connections:     convertSlice(d.Connections, func(c ConnectionDoc) engine.Connection { return engine.Connection(c) }),
		Requests:        convertSlice(d.Requests, func(r RequestDoc) engine.RequestRow { return engine.RequestRow(r) }),
		DroppedRequests: d.DroppedRequests,
		Series:          convertSlice(d.Series, func(s SampleDoc) engine.Sample { return engine.Sample(s) }),
		Notes:           d.Notes,
		Metrics:         convertSlice(d.Metrics, func(m MetricDoc) engine.Metric { return engine.Metric(m) }),
		Charts: convertSlice(d.Charts, func(c ChartDoc) engine.Chart {
			return engine.Chart{Title: c.Title, XUnit: c.XUnit, YUnit: c.YUnit, Lines: convertSlice(c.Lines, func(l LineDoc) engine.Line {
				return engine.Line{Name: l.Name, Points: convertSlice(l.Points, func(p PointDoc) engine.Point { return engine.Point(p) })}
			})}
		}),
		Timings: convertMap(d.Timings, func(t TimingDoc) engine.Timing { return engine.Timing(t) }),
		Ratios:  d.Ratios,
		Pairing: convertPointer(d.Pairing, func(p PairingDoc) engine.Pairing {
			peer := func(c PeerConnDoc) engine.PeerConn { return engine.PeerConn(c) }
			return engine.Pairing{Version: p.Version, Mode: p.Mode, Clients: convertSlice(p.Clients, peer), Servers: convertSlice(p.Servers, peer),
				Pools: convertSlice(p.Pools, func(b BouncerPoolDoc) engine.BouncerPool { return engine.BouncerPool(b) })}
		}),
		Queue:    convertPointer(d.Queue, func(q QueueDoc) engine.Queue { return engine.Queue(q) }),
		QueuedMS: d.QueuedMS,
		Outage:   d.Outage,
		Timeline: convertPointer(d.Timeline, func(t TimelineDoc) engine.Timeline {
			return engine.Timeline{AppRole: t.AppRole, Dropped: t.Dropped,
				Events: convertSlice(t.Events, func(e TimelineEventDoc) engine.TimelineEvent { return engine.TimelineEvent(e) })}
		}),
		Policy:      convertPointer(d.Policy, func(p PolicyDoc) engine.Policy { return engine.Policy(p) }),
		SharedField: convertSlice(d.SharedField, func(f FieldReadingDoc) engine.FieldReading { return engine.FieldReading(f) }),
		Findings:    convertSlice(d.Findings, func(f FindingDoc) engine.Finding { return engine.Finding(f) }),
		Frame:       d.Frame,
		Replay: convertPointer(d.Replay, func(r ReplayDoc) engine.Replay {
			return engine.Replay{RanMS: r.RanMS, Shared: convertPointer(r.Shared, func(s SharedDoc) engine.Shared { return engine.Shared(s) })}
		}),
		Version: d.Version,
	}
}
