package views

import (
	"sort"
	"strconv"
	"strings"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// Timeline geometry, in SVG user units (drawn at one unit per CSS pixel).
const (
	tlLabelW   = 6.0  // the left margin (the lane labels are HTML, beside the drawing)
	tlColW     = 34.0 // one event
	tlLaneH    = 52.0 // one lane
	tlTop      = 18.0 // the axis caption above the first lane
	tlBlockY   = 4.0  // a request block's top within its lane
	tlBlockH   = 24.0 // a request block's height
	tlBandY    = 32.0 // the tenant band's top within its lane
	tlBandH    = 14.0 // the tenant band's height
	tlMaxLanes = 12   // lanes drawn at most (the most recently active)
	tlMaxCols  = 48   // events drawn at most (the newest)
)

// Kinds of timeline lanes.
const (
	LaneBackend = "backend" // one backend (PID)
	LaneClient  = "client"  // one PgBouncer client connection of an app instance
	LaneField   = "field"   // the field the application shares between requests
)

// TLLane is one lane: a backend's, a PgBouncer client's, or the shared
// field's.
type TLLane struct {
	Kind   string
	PID    uint32 // a backend lane's PID
	Client string // a client lane's connection: "app-1 #1"
	Head   string // the lane's name in bold: the PID, the client, "shared field"
	Label  string // where the connection belongs: "app #1", "own connection"
	Y      float64
	Bands  []TLBand
	Blocks []TLBlock
	Marks  []TLMark
}

// TLMark is a small mark on a lane at one moment: a request reading the
// shared field, or PgBouncer's admin console showing a client linked to a
// server.
type TLMark struct {
	X, Y  float64
	W     float64
	Seq   int
	PID   uint32
	Class string
	Text  string
	Title string
}

// TLBand is a stretch of a lane during which the backend held one tenant
// setting, as last read from it.
type TLBand struct {
	X, W   float64
	Tenant *string
	Class  string // tenant colour
	Text   string // the tenant's name, when the band is wide enough
	Role   string // the role, when it is not the app role
	Title  string // the whole reading in words (a tooltip)
	// Inferred marks a setting inferred from the statements an app sent
	// through rlslab's proxy, not read from the backend.
	Inferred bool
}

// TLBlock is one request's time on a lane.
type TLBlock struct {
	Seq    int
	PID    uint32
	X, Y   float64
	W      float64
	Tenant *string
	Class  string
	Text   string
	Leak   bool
	// Observed reports whether the request's query ran in this block (a
	// split request has a block for its set_config call without one).
	Observed bool
	// Client marks a block on a PgBouncer client's lane: the request from
	// its acquire to its release, wherever its statements ran.
	Client bool
	Title  string
}

// TLArrow joins a request's earlier call to the block where its query ran
// on another backend.
type TLArrow struct {
	Seq            int
	X1, Y1, X2, Y2 float64
}

// TimelineDrawing is the timeline of backends ready to draw.
type TimelineDrawing struct {
	Width, Height float64
	Lanes         []TLLane
	Arrows        []TLArrow
	// Pairs join a request's block on its PgBouncer client's lane to the
	// block on the server lane where its query ran (Seq is the request).
	Pairs []TLArrow
	// HiddenLanes and HiddenEvents count what is not drawn.
	HiddenLanes, HiddenEvents int
	AxisY                     float64
}

// laneAcc gathers one lane's events while the drawing is laid out.
type laneAcc struct {
	pid      uint32
	label    string
	last     int // index of its latest event
	readings []tlReading
	closedAt int // column where the connection closed, or -1
}

type tlReading struct {
	col      int
	tenant   *string
	role     string
	inferred bool
}

// Timeline lays out the state's timeline: one lane per backend PID, one
// column per event (oldest left), the newest tlMaxCols events and the
// tlMaxLanes lanes active most recently. It returns nil when there is
// nothing to draw.
func (v Live) Timeline() *TimelineDrawing {
	tl := v.State.Timeline
	if tl == nil || len(tl.Events) == 0 {
		return nil
	}
	events := tl.Events
	first := max(0, len(events)-tlMaxCols)
	d := &TimelineDrawing{HiddenEvents: first + tl.Dropped}

	lanes := map[uint32]*laneAcc{}
	var order []uint32
	lane := func(ev engine.TimelineEvent, i int) *laneAcc {
		l := lanes[ev.PID]
		if l == nil {
			l = &laneAcc{pid: ev.PID, closedAt: -1}
			lanes[ev.PID] = l
			order = append(order, ev.PID)
		}
		if l.label == "" || ev.Slot != 0 {
			switch {
			case ev.Pool != "" && ev.Slot != 0:
				l.label = ev.Pool + " #" + strconv.Itoa(ev.Slot)
			case ev.Pool != "":
				l.label = ev.Pool
			}
		}
		l.last = i
		return l
	}
	// One column per event in the window (negative: before it), except
	// that behind PgBouncer a client closing draws nothing on a server
	// lane and takes no column: the pools' closes at the end of a run
	// would leave the newest columns empty.
	bouncer := v.Pairing != nil
	colOf := make([]int, len(events))
	n := 0
	for i, ev := range events {
		if i < first {
			colOf[i] = i - first
			continue
		}
		colOf[i] = n
		if !bouncer || ev.Kind != engine.TimelineClose {
			n++
		}
	}
	col := func(i int) int { return colOf[i] }

	// Blocks are kept as [start, end) columns.
	type span struct {
		seq        int
		pid        uint32
		start, end int
		observed   bool
	}
	var spans []span
	openSpan := map[uint32]int{} // pid -> index in spans of its open block
	end := func(pid uint32, c int) {
		if k, ok := openSpan[pid]; ok {
			spans[k].end = c
			delete(openSpan, pid)
		}
	}
	// Behind PgBouncer a pool's connection is a client: the backend last
	// read through it says nothing about the server its next statement
	// gets. So the lanes are the servers the readings name, a request's
	// block is where its own query ran, and the client is named on it.
	clients := map[int]string{}
	// A client's lane shows each request it sent, from its acquire to its
	// release; links are what PgBouncer's admin console showed.
	type clientSpan struct {
		seq        int
		client     string
		start, end int
	}
	var cspans []clientSpan
	openClient := map[string]int{}
	clientLast := map[string]int{}
	endClient := func(client string, c int) {
		if k, ok := openClient[client]; ok {
			cspans[k].end = c
			delete(openClient, client)
		}
	}
	type linkAt struct {
		col    int
		client string
		pid    uint32
	}
	var links []linkAt
	var fields []engine.TimelineEvent
	fieldCol := map[int]int{} // index in fields -> column
	for i, ev := range events {
		c := col(i)
		switch {
		case ev.Kind == engine.TimelineField:
			fieldCol[len(fields)] = c
			fields = append(fields, ev)
			continue
		case ev.Kind == engine.TimelineLink:
			links = append(links, linkAt{col: c, client: ev.Pool, pid: ev.PID})
			continue
		}
		if bouncer && ev.Pool != "" && ev.Slot != 0 {
			client := ev.Pool + " #" + strconv.Itoa(ev.Slot)
			clientLast[client] = i
			switch ev.Kind {
			case engine.TimelineAcquire:
				clients[ev.Seq] = client
				endClient(client, c)
				openClient[client] = len(cspans)
				cspans = append(cspans, clientSpan{seq: ev.Seq, client: client, start: c, end: -1})
			case engine.TimelineRelease:
				endClient(client, c+1)
			case engine.TimelineClose:
				endClient(client, c) // a close takes no column of its own
			}
		}
		if bouncer && (ev.Kind == engine.TimelineAcquire || ev.Kind == engine.TimelineClose) {
			continue
		}
		l := lane(ev, i)
		if bouncer {
			l.label = "server, via PgBouncer"
		}
		switch ev.Kind {
		case engine.TimelineAcquire:
			end(ev.PID, c)
			openSpan[ev.PID] = len(spans)
			spans = append(spans, span{seq: ev.Seq, pid: ev.PID, start: c, end: -1})
		case engine.TimelineObserve:
			if k, ok := openSpan[ev.PID]; ok && spans[k].seq == ev.Seq {
				spans[k].observed = true
			} else {
				spans = append(spans, span{seq: ev.Seq, pid: ev.PID, start: c, end: c + 1, observed: true})
			}
		case engine.TimelineRelease:
			end(ev.PID, c+1)
		case engine.TimelineClose:
			end(ev.PID, c+1)
			l.closedAt = c + 1
		}
		if ev.Read || ev.Inferred {
			// A reading that says what the previous one said continues
			// its band.
			if k := len(l.readings); k == 0 || !sameSetting(l.readings[k-1].tenant, ev.Tenant) || l.readings[k-1].role != ev.Role || l.readings[k-1].inferred != ev.Inferred {
				l.readings = append(l.readings, tlReading{col: c, tenant: ev.Tenant, role: ev.Role, inferred: ev.Inferred})
			}
		}
	}
	for k := range spans {
		if spans[k].end < 0 {
			spans[k].end = n
		}
	}
	for k := range cspans {
		if cspans[k].end < 0 {
			cspans[k].end = n
		}
	}
	// The lanes above the backends: the shared field, then the clients
	// (the most recently active, by name).
	var clientNames []string
	for name := range clientLast {
		clientNames = append(clientNames, name)
	}
	sort.Slice(clientNames, func(i, j int) bool { return clientLast[clientNames[i]] > clientLast[clientNames[j]] })
	if len(clientNames) > tlMaxLanes {
		d.HiddenLanes += len(clientNames) - tlMaxLanes
		clientNames = clientNames[:tlMaxLanes]
	}
	sort.Strings(clientNames)
	above := len(clientNames)
	if len(fields) > 0 {
		above++
	}

	// The lanes drawn: the most recently active ones, in order of their
	// first appearance.
	shown := order
	if len(order) > tlMaxLanes {
		byLast := append([]uint32(nil), order...)
		// keep the tlMaxLanes with the largest last index
		keep := map[uint32]bool{}
		for range tlMaxLanes {
			best := -1
			for j, pid := range byLast {
				if keep[pid] {
					continue
				}
				if best < 0 || lanes[pid].last > lanes[byLast[best]].last {
					best = j
				}
			}
			keep[byLast[best]] = true
		}
		shown = nil
		for _, pid := range order {
			if keep[pid] {
				shown = append(shown, pid)
			}
		}
		d.HiddenLanes = len(order) - len(shown)
	}
	x := func(c int) float64 { return tlLabelW + float64(max(c, 0))*tlColW }
	if len(fields) > 0 {
		d.Lanes = append(d.Lanes, v.fieldLane(fields, fieldCol, n, x))
	}
	clientY := map[string]float64{}
	for _, name := range clientNames {
		y := tlTop + float64(len(d.Lanes))*tlLaneH
		clientY[name] = y
		d.Lanes = append(d.Lanes, TLLane{Kind: LaneClient, Client: name, Head: name, Label: "client of PgBouncer", Y: y})
	}
	laneY := map[uint32]float64{}
	for li, pid := range shown {
		l := lanes[pid]
		y := tlTop + float64(above+li)*tlLaneH
		laneY[pid] = y
		out := TLLane{Kind: LaneBackend, PID: pid, Head: strconv.FormatUint(uint64(pid), 10), Label: l.label, Y: y}
		for ri, r := range l.readings {
			endCol := n
			if ri+1 < len(l.readings) {
				endCol = l.readings[ri+1].col
			}
			if l.closedAt >= 0 && l.closedAt > r.col && l.closedAt < endCol {
				endCol = l.closedAt
			}
			if endCol <= 0 {
				continue // wholly before the window
			}
			if endCol == r.col {
				continue
			}
			b := TLBand{X: x(r.col), Tenant: r.tenant, Class: TenantClass(r.tenant), Inferred: r.inferred}
			b.W = x(endCol) - b.X
			name := v.TenantName(r.tenant)
			if r.role != "" && tl.AppRole != "" && r.role != tl.AppRole {
				b.Role = ShortRole(r.role, v.Lab)
			}
			b.Title = "backend " + strconv.FormatUint(uint64(pid), 10) + " held tenant setting " + v.TenantLabel(r.tenant) + " as role " + ShortRole(r.role, v.Lab)
			if r.inferred {
				b.Title += " (inferred from the statements the app sent, not yet read from the backend)"
				name += "?"
			}
			b.Text = name
			if b.Role != "" {
				b.Text = name + " · role " + b.Role
			}
			if float64(len(b.Text))*7.8 > b.W-8 {
				b.Text = ""
				if float64(len(name))*7 <= b.W-6 {
					b.Text = name
				}
			}
			out.Bands = append(out.Bands, b)
		}
		d.Lanes = append(d.Lanes, out)
	}
	rows := map[int]engine.RequestRow{}
	for _, r := range v.Requests {
		rows[r.Seq] = r
	}
	observedAt := map[int]TLBlock{}
	laneIndex := map[uint32]int{}
	clientIndex := map[string]int{}
	for i, l := range d.Lanes {
		switch l.Kind {
		case LaneBackend:
			laneIndex[l.PID] = i
		case LaneClient:
			clientIndex[l.Client] = i
		}
	}
	var all []TLBlock
	for _, s := range spans {
		y, ok := laneY[s.pid]
		if !ok || s.end <= 0 {
			continue
		}
		row := rows[s.seq]
		b := TLBlock{Seq: s.seq, PID: s.pid, X: x(s.start) + 2, Y: y + tlBlockY, W: x(s.end) - x(s.start) - 4,
			Tenant: row.Tenant, Class: TenantClass(row.Tenant), Observed: s.observed, Leak: s.observed && row.Leak}
		b.W = max(b.W, tlColW-4)
		name := v.TenantName(row.Tenant)
		b.Text = "#" + strconv.Itoa(s.seq) + " " + name
		if b.Leak {
			b.Text = "LEAK #" + strconv.Itoa(s.seq) + " " + name
		}
		if !s.observed && row.Pattern != "" && row.Phase != "acquired" && row.Phase != "acquiring" {
			b.Text += " (call)"
		}
		for _, shorter := range []string{name, "#" + strconv.Itoa(s.seq)} {
			if float64(len(b.Text))*7.8 <= b.W-8 {
				break
			}
			b.Text = shorter
			if b.Leak {
				b.Text = "LEAK " + shorter
			}
		}
		if float64(len(b.Text))*7.8 > b.W-8 && b.Leak {
			b.Text = "LEAK"
		}
		b.Title = "request #" + strconv.Itoa(s.seq) + " for " + v.TenantLabel(row.Tenant) + " (" + row.Pattern + ") on backend " + strconv.FormatUint(uint64(s.pid), 10)
		if cl, ok := clients[s.seq]; ok {
			b.Title += ", sent by client " + cl + " through PgBouncer"
		}
		if b.Leak {
			b.Title += ": LEAK, " + WhyText(row)
		}
		li := laneIndex[s.pid]
		d.Lanes[li].Blocks = append(d.Lanes[li].Blocks, b)
		all = append(all, b)
		if s.observed {
			observedAt[s.seq] = b
		}
	}
	for _, b := range all {
		o, ok := observedAt[b.Seq]
		if !ok || b.Observed || o.PID == b.PID {
			continue
		}
		d.Arrows = append(d.Arrows, TLArrow{Seq: b.Seq, X1: b.X + b.W, Y1: b.Y + tlBlockH/2, X2: o.X, Y2: o.Y + tlBlockH/2})
	}
	// Each request a client sent: a block on the client's lane, joined to
	// the block of the server its query ran on.
	for _, cs := range cspans {
		li, ok := clientIndex[cs.client]
		if !ok || cs.end <= 0 {
			continue
		}
		row := rows[cs.seq]
		b := TLBlock{Seq: cs.seq, X: x(cs.start) + 2, Y: d.Lanes[li].Y + tlBlockY, W: max(x(cs.end)-x(cs.start)-4, tlColW-4),
			Tenant: row.Tenant, Class: TenantClass(row.Tenant), Leak: row.Leak, Client: true}
		name := v.TenantName(row.Tenant)
		b.Text = "#" + strconv.Itoa(cs.seq) + " " + name
		if float64(len(b.Text))*7.8 > b.W-8 {
			b.Text = "#" + strconv.Itoa(cs.seq)
		}
		b.Title = "request #" + strconv.Itoa(cs.seq) + " for " + v.TenantLabel(row.Tenant) + " (" + row.Pattern + "), sent by client " + cs.client + " through PgBouncer"
		if o, ok := observedAt[cs.seq]; ok {
			b.PID = o.PID
			b.Title += "; its query ran on server backend " + strconv.FormatUint(uint64(o.PID), 10)
			px := max(o.X, b.X) + 6
			d.Pairs = append(d.Pairs, TLArrow{Seq: cs.seq, X1: px, Y1: b.Y + tlBlockH, X2: px, Y2: o.Y})
		}
		d.Lanes[li].Blocks = append(d.Lanes[li].Blocks, b)
	}
	// What the admin console showed: a client linked to a server. SHOW
	// CLIENTS names the app instance, so the mark goes on that instance's
	// client lane that was busy then (or its first).
	for _, l := range links {
		if l.col < 0 {
			continue
		}
		li := -1
		for _, cs := range cspans {
			if k, ok := clientIndex[cs.client]; ok && strings.HasPrefix(cs.client, l.client+" #") && cs.start <= l.col && l.col < cs.end {
				li = k
			}
		}
		if li < 0 {
			for _, name := range clientNames {
				if strings.HasPrefix(name, l.client+" #") {
					li = clientIndex[name]
					break
				}
			}
		}
		if li < 0 {
			continue
		}
		pid := strconv.FormatUint(uint64(l.pid), 10)
		d.Lanes[li].Marks = append(d.Lanes[li].Marks, TLMark{X: x(l.col), Y: d.Lanes[li].Y + tlBandY, W: float64(len(pid)+2)*7 + 4, PID: l.pid, Class: "tl-link",
			Text: "→ " + pid, Title: "SHOW CLIENTS / SHOW SERVERS: " + l.client + " linked to the server connection of backend " + pid})
	}
	d.AxisY = tlTop + float64(len(d.Lanes))*tlLaneH
	d.Height = d.AxisY + 6
	// The width grows four columns at a time, so that a frame seldom has
	// to redraw the whole timeline.
	cols := min((n+3)/4*4, tlMaxCols)
	d.Width = x(max(cols, 8)) + 8
	return d
}

// fieldLane draws the shared field: a band per value written, from the
// write to the next one, and a mark where a request read it back.
func (v Live) fieldLane(fields []engine.TimelineEvent, cols map[int]int, n int, x func(int) float64) TLLane {
	l := TLLane{Kind: LaneField, Head: "shared field", Label: "W wrote it, R read it back", Y: tlTop}
	var writes []int
	for i, f := range fields {
		if f.Wrote {
			writes = append(writes, i)
		}
	}
	for k, i := range writes {
		f := fields[i]
		end := n
		if k+1 < len(writes) {
			end = cols[writes[k+1]]
		}
		start := cols[i]
		if end <= 0 || end <= start {
			continue
		}
		b := TLBand{X: x(start), Tenant: f.Tenant, Class: TenantClass(f.Tenant)}
		b.W = x(end) - b.X
		b.Text = v.TenantName(f.Tenant)
		b.Title = "request #" + strconv.Itoa(f.Seq) + " wrote " + v.TenantLabel(f.Tenant) + " into the shared field"
		if float64(len(b.Text))*7 > b.W-6 {
			b.Text = ""
		}
		l.Bands = append(l.Bands, b)
	}
	for i, f := range fields {
		c := cols[i]
		if c < 0 {
			continue
		}
		verb := "read"
		if f.Wrote {
			verb = "wrote"
		}
		l.Marks = append(l.Marks, TLMark{X: x(c), Y: l.Y + tlBlockY, W: tlColW - 4, Seq: f.Seq, Class: "tl-field-" + verb + " " + TenantClass(f.Tenant),
			Text:  strings.ToUpper(verb[:1]) + "#" + strconv.Itoa(f.Seq),
			Title: "request #" + strconv.Itoa(f.Seq) + " " + verb + " " + v.TenantLabel(f.Tenant) + " (the shared field)"})
	}
	return l
}

// Caption says how to read the drawing: which kinds of lanes it has.
func (d *TimelineDrawing) Caption() string {
	s := "each lane one backend (PID); the band is the tenant setting read from it; blocks are requests"
	for _, l := range d.Lanes {
		switch l.Kind {
		case LaneClient:
			return "PgBouncer's clients above, each request joined to the server backend its query ran on; the band is the tenant setting read from that backend"
		case LaneField:
			s = "the shared field on top (W: a request wrote it, R: read it back), then " + s
		}
	}
	return s
}

// TimelineSummary says in words what the drawing d of v's timeline shows,
// for a screen reader: which backends it draws and, for each request that
// read another tenant's rows, where it ran and whose rows it read
// ("Request 3 (Globex) on backend 30819 read 3 rows of Acme.").
func (v Live) TimelineSummary(d *TimelineDrawing) string {
	var b strings.Builder
	var pids []string
	for _, l := range d.Lanes {
		if l.Kind == LaneBackend {
			s := l.Head
			if l.Label != "" {
				s += " (" + l.Label + ")"
			}
			pids = append(pids, s)
		}
	}
	switch len(pids) {
	case 0:
	case 1:
		b.WriteString("The timeline draws backend " + pids[0] + ".")
	default:
		b.WriteString("The timeline draws " + strconv.Itoa(len(pids)) + " backends: " + strings.Join(pids, ", ") + ".")
	}
	leaks, finished := 0, 0
	for _, r := range v.Requests {
		if r.FinishedAt != 0 || r.Error != "" {
			finished++
		}
		if !r.Leak {
			continue
		}
		leaks++
		whose := "another tenant"
		if r.SeenTenant != nil && *r.SeenTenant != "" && (r.Tenant == nil || *r.SeenTenant != *r.Tenant) {
			whose = v.TenantName(r.SeenTenant)
		}
		rows := " rows of "
		if r.ForeignRows == 1 {
			rows = " row of "
		}
		b.WriteString(" Request " + strconv.Itoa(r.Seq) + " (" + v.TenantName(r.Tenant) + ") on backend " + strconv.FormatUint(uint64(r.PID), 10) +
			" read " + strconv.Itoa(r.ForeignRows) + rows + whose)
		if v.OtherRole(r.Role) {
			b.WriteString(" as role " + ShortRole(r.Role, v.Lab))
		}
		b.WriteString(".")
	}
	switch {
	case leaks > 0:
	case finished == 0:
		b.WriteString(" No request has read rows yet.")
	case v.Status == engine.StatusRunning || v.Status == engine.StatusQueued:
		b.WriteString(" No request has read another tenant's rows so far.")
	default:
		b.WriteString(" No request read another tenant's rows.")
	}
	return strings.TrimSpace(b.String())
}

// sameSetting reports whether two readings of the tenant setting agree.
func sameSetting(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// TenantName names a tenant setting value briefly: the tenant's name,
// "”" or "NULL".
func (v Live) TenantName(t *string) string {
	switch {
	case t == nil:
		return "NULL"
	case *t == "":
		return "''"
	}
	if n, ok := v.TenantNames[*t]; ok {
		return n
	}
	if _, err := strconv.Atoi(*t); err == nil {
		return "Tenant " + *t
	}
	return "'" + *t + "'"
}

// ShortRole drops the lab's prefix from a role name (lab_abc_app → app),
// which is the same in every role of the lab.
func ShortRole(role, lab string) string {
	if lab != "" {
		if s, ok := strings.CutPrefix(role, "lab_"+lab+"_"); ok && s != "" {
			return s
		}
	}
	return role
}

// LaneID is the element id of a timeline lane.
func LaneID(l TLLane) string {
	switch l.Kind {
	case LaneClient:
		return "tl-lane-client-" + idPart(l.Client)
	case LaneField:
		return "tl-lane-field"
	}
	return "tl-lane-" + strconv.FormatUint(uint64(l.PID), 10)
}

// ChartID is the element id of the scenario's i-th chart.
func ChartID(i int) string { return "chart-" + strconv.Itoa(i) }
