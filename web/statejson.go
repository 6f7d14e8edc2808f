package web

import "github.com/rlslab/rlslab/scenarios/engine"

// This file holds state.json's own types. The engine's State is what the
// scenarios fill; stateJSON is what GET /labs/{id}/state.json promises to
// its readers. The names are spelled out here, so a rename or a removed tag
// in the engine cannot change the public JSON (the conversion stops
// compiling, or TestStateJSONCarriesEveryField fails, instead). The field
// names are pinned by testdata/state-json-fields.golden.

// stateJSON is a lab's live state as state.json serves it.
type stateJSON struct {
	Lab             string                `json:"lab"`
	Tenants         []tenantJSON          `json:"tenants,omitempty"`
	Scenario        string                `json:"scenario"`
	Variant         string                `json:"variant"`
	Status          string                `json:"status"`
	Speed           string                `json:"speed,omitempty"`
	Narration       string                `json:"narration,omitempty"`
	Error           string                `json:"error,omitempty"`
	Pool            poolCountsJSON        `json:"pool"`
	Pools           []poolCountsJSON      `json:"pools,omitempty"`
	Server          serverCountsJSON      `json:"server"`
	Connections     []connectionJSON      `json:"connections"`
	Requests        []requestJSON         `json:"requests"`
	DroppedRequests int                   `json:"dropped_requests,omitempty"`
	Series          []sampleJSON          `json:"series"`
	Notes           []string              `json:"notes,omitempty"`
	Metrics         []metricJSON          `json:"metrics,omitempty"`
	Charts          []chartJSON           `json:"charts,omitempty"`
	Timings         map[string]timingJSON `json:"timings,omitempty"`
	Ratios          map[string]float64    `json:"ratios,omitempty"`
	Pairing         *pairingJSON          `json:"pairing,omitempty"`
	Queue           *queueJSON            `json:"queue,omitempty"`
	QueuedMS        int64                 `json:"queued_ms,omitempty"`
	Outage          string                `json:"outage,omitempty"`
	Timeline        *timelineJSON         `json:"timeline,omitempty"`
	Policy          *policyJSON           `json:"policy,omitempty"`
	SharedField     []fieldReadingJSON    `json:"shared_field,omitempty"`
	Version         uint64                `json:"version"`
}

// tenantJSON is one of the lab's seeded tenants in state.json.
type tenantJSON struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
}

// poolCountsJSON is a pool's counts (pgxpool.Stat) in state.json.
type poolCountsJSON struct {
	Name     string `json:"name,omitempty"`
	Max      int32  `json:"max"`
	Total    int32  `json:"total"`
	Idle     int32  `json:"idle"`
	Acquired int32  `json:"acquired"`
	Waiting  int32  `json:"waiting"`
}

// serverCountsJSON is the server-side counts in state.json.
type serverCountsJSON struct {
	Backends            int `json:"backends"`
	RoleConnectionLimit int `json:"role_connection_limit"`
	MaxConnections      int `json:"max_connections"`
}

// connectionJSON is one pooled connection in state.json, as last read from
// its backend.
type connectionJSON struct {
	Pool    string  `json:"pool,omitempty"`
	Slot    int     `json:"slot"`
	PID     uint32  `json:"pid"`
	State   string  `json:"state"`
	Tenant  *string `json:"tenant"`
	Role    string  `json:"role"`
	Request int     `json:"request,omitempty"`
}

// requestJSON is one row of the request log in state.json.
type requestJSON struct {
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

// sampleJSON is one point of the connections time series in state.json.
type sampleJSON struct {
	Millis   int64 `json:"ms"`
	Total    int32 `json:"total"`
	Idle     int32 `json:"idle"`
	Acquired int32 `json:"acquired"`
}

// timingJSON is a pattern's latency summary in state.json, in microseconds.
type timingJSON struct {
	MedianUS float64 `json:"median_us"`
	P99US    float64 `json:"p99_us"`
	N        int     `json:"n"`
}

// metricJSON is one named reading of a run in state.json.
type metricJSON struct {
	Name   string  `json:"name"`
	Value  string  `json:"value"`
	Number float64 `json:"number"`
}

// pointJSON is one point of a chart line in state.json.
type pointJSON struct {
	X float64 `json:"x"`
	Y float64 `json:"y"`
}

// lineJSON is one named line of a chart in state.json.
type lineJSON struct {
	Name   string      `json:"name"`
	Points []pointJSON `json:"points"`
}

// chartJSON is one chart of a run in state.json.
type chartJSON struct {
	Title string     `json:"title"`
	XUnit string     `json:"x_unit"`
	YUnit string     `json:"y_unit"`
	Lines []lineJSON `json:"lines"`
}

// peerConnJSON is one connection on either side of a PgBouncer in
// state.json.
type peerConnJSON struct {
	Ptr    string  `json:"ptr"`
	Link   string  `json:"link"`
	Label  string  `json:"label"`
	State  string  `json:"state"`
	PID    uint32  `json:"pid,omitempty"`
	Tenant *string `json:"tenant"`
}

// bouncerPoolJSON is one line of PgBouncer's SHOW POOLS in state.json.
type bouncerPoolJSON struct {
	Database  string `json:"database"`
	User      string `json:"user"`
	ClActive  int    `json:"cl_active"`
	ClWaiting int    `json:"cl_waiting"`
	SvActive  int    `json:"sv_active"`
	SvIdle    int    `json:"sv_idle"`
	MaxWaitMS int64  `json:"maxwait_ms"`
}

// pairingJSON is the PgBouncer side of the live view in state.json.
type pairingJSON struct {
	Version string            `json:"version"`
	Mode    string            `json:"mode"`
	Clients []peerConnJSON    `json:"clients"`
	Servers []peerConnJSON    `json:"servers"`
	Pools   []bouncerPoolJSON `json:"pools"`
}

// queueJSON is where a queued run stands in state.json.
type queueJSON struct {
	Need  int `json:"need"`
	Ahead int `json:"ahead"`
}

// timelineEventJSON is one moment in the life of a backend in state.json.
type timelineEventJSON struct {
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
}

// timelineJSON is the run's backend timeline in state.json.
type timelineJSON struct {
	AppRole string              `json:"app_role,omitempty"`
	Events  []timelineEventJSON `json:"events"`
	Dropped int                 `json:"dropped,omitempty"`
}

// policyJSON is the row-level security in force in state.json.
type policyJSON struct {
	Table   string `json:"table"`
	Name    string `json:"name,omitempty"`
	Using   string `json:"using"`
	Enabled bool   `json:"enabled"`
	Force   bool   `json:"force"`
}

// fieldReadingJSON is one reading of a shared application field in
// state.json.
type fieldReadingJSON struct {
	At    int64  `json:"at_us"`
	Value string `json:"value"`
	Seq   int    `json:"seq,omitempty"`
	Wrote bool   `json:"wrote,omitempty"`
}

// stateJSONOf converts a lab's state into state.json's type. A nil slice or
// map stays nil and an empty one empty, so that fields without omitempty
// keep printing null or [] as they did.
func stateJSONOf(st engine.State) stateJSON {
	return stateJSON{
		Lab:             st.Lab,
		Tenants:         convertSlice(st.Tenants, func(t engine.Tenant) tenantJSON { return tenantJSON(t) }),
		Scenario:        st.Scenario,
		Variant:         st.Variant,
		Status:          st.Status,
		Speed:           st.Speed,
		Narration:       st.Narration,
		Error:           st.Error,
		Pool:            poolCountsJSON(st.Pool),
		Pools:           convertSlice(st.Pools, func(p engine.PoolCounts) poolCountsJSON { return poolCountsJSON(p) }),
		Server:          serverCountsJSON(st.Server),
		Connections:     convertSlice(st.Connections, connectionJSONOf),
		Requests:        convertSlice(st.Requests, requestJSONOf),
		DroppedRequests: st.DroppedRequests,
		Series:          convertSlice(st.Series, func(s engine.Sample) sampleJSON { return sampleJSON(s) }),
		Notes:           convertSlice(st.Notes, func(n string) string { return n }),
		Metrics:         convertSlice(st.Metrics, func(m engine.Metric) metricJSON { return metricJSON(m) }),
		Charts:          convertSlice(st.Charts, chartJSONOf),
		Timings:         convertMap(st.Timings, func(t engine.Timing) timingJSON { return timingJSON(t) }),
		Ratios:          convertMap(st.Ratios, func(r float64) float64 { return r }),
		Pairing:         convertPointer(st.Pairing, pairingJSONOf),
		Queue:           convertPointer(st.Queue, func(q engine.Queue) queueJSON { return queueJSON(q) }),
		QueuedMS:        st.QueuedMS,
		Outage:          st.Outage,
		Timeline:        convertPointer(st.Timeline, timelineJSONOf),
		Policy:          convertPointer(st.Policy, func(p engine.Policy) policyJSON { return policyJSON(p) }),
		SharedField:     convertSlice(st.SharedField, func(f engine.FieldReading) fieldReadingJSON { return fieldReadingJSON(f) }),
		Version:         st.Version,
	}
}

// A struct conversion such as poolCountsJSON(p) above compiles only while
// both types have the same field names and types, and it ignores tags,
// which is the point: a field added to the engine's type stops the build
// until state.json decides about it. The types below hold pointers or
// slices, so they are copied field by field, and state.json never shares
// memory with the tracker's state.

func connectionJSONOf(c engine.Connection) connectionJSON {
	return connectionJSON{Pool: c.Pool, Slot: c.Slot, PID: c.PID, State: c.State, Tenant: copyString(c.Tenant), Role: c.Role, Request: c.Request}
}

func requestJSONOf(r engine.RequestRow) requestJSON {
	return requestJSON{Seq: r.Seq, Tenant: copyString(r.Tenant), Pattern: r.Pattern, Pool: r.Pool, PID: r.PID,
		SeenTenant: copyString(r.SeenTenant), Role: r.Role, Rows: r.Rows, ForeignRows: r.ForeignRows, Leak: r.Leak,
		Error: r.Error, SQLState: r.SQLState, Phase: r.Phase, Why: r.Why, FinishedAt: r.FinishedAt}
}

func chartJSONOf(c engine.Chart) chartJSON {
	return chartJSON{Title: c.Title, XUnit: c.XUnit, YUnit: c.YUnit, Lines: convertSlice(c.Lines, func(l engine.Line) lineJSON {
		return lineJSON{Name: l.Name, Points: convertSlice(l.Points, func(p engine.Point) pointJSON { return pointJSON(p) })}
	})}
}

func peerConnJSONOf(p engine.PeerConn) peerConnJSON {
	return peerConnJSON{Ptr: p.Ptr, Link: p.Link, Label: p.Label, State: p.State, PID: p.PID, Tenant: copyString(p.Tenant)}
}

func pairingJSONOf(p engine.Pairing) pairingJSON {
	return pairingJSON{Version: p.Version, Mode: p.Mode, Clients: convertSlice(p.Clients, peerConnJSONOf), Servers: convertSlice(p.Servers, peerConnJSONOf),
		Pools: convertSlice(p.Pools, func(b engine.BouncerPool) bouncerPoolJSON { return bouncerPoolJSON(b) })}
}

func timelineJSONOf(t engine.Timeline) timelineJSON {
	return timelineJSON{AppRole: t.AppRole, Dropped: t.Dropped, Events: convertSlice(t.Events, func(e engine.TimelineEvent) timelineEventJSON {
		return timelineEventJSON{At: e.At, Kind: e.Kind, Pool: e.Pool, Slot: e.Slot, PID: e.PID, Read: e.Read, Tenant: copyString(e.Tenant), Role: e.Role, Seq: e.Seq, Wrote: e.Wrote}
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
