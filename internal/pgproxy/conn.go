package pgproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// conn relays one client connection to its server connection. Two
// goroutines move the bytes: fromClient (client to server) and fromServer
// (server to client). They share the state below under mu; writes to the
// server go under wmu, taken after mu when both are held.
type conn struct {
	s      *Server
	log    *slog.Logger
	events Events
	info   ConnInfo

	client net.Conn
	cr     *bufio.Reader
	cw     *bufio.Writer // written by fromServer only (after greet)

	hc         *pgconn.HijackedConn
	up         net.Conn
	ur         *bufio.Reader
	uw         *bufio.Writer // under wmu
	wmu        sync.Mutex
	upAddr     net.Addr
	realPID    uint32
	realSecret []byte
	key        cancelKey

	closeOnce sync.Once

	mu sync.Mutex
	// What the server owes replies for, in the order it will answer.
	queue []*pending
	// Sync, Query and FunctionCall messages not yet answered by
	// ReadyForQuery.
	syncs int
	// The client sent extended-protocol messages since its last Sync.
	unsynced bool
	// The server is in COPY FROM STDIN: Sync and Flush are ignored.
	copyIn bool
	// Executes since the last Sync (an implicit transaction after one).
	groupExecs int
	// The client's transaction block as the client's messages have it.
	clientTx bool
	// Prepared statements and portals by name, as the client made them.
	stmts   map[string]*prepared
	portals map[string]*portal
	nextRun uint64
	// Statements ran since the last probe.
	dirty bool
	probe probeState
	// The tenant setting: in force is local, else pend, else session.
	session  Setting
	pend     *Setting
	local    *Setting
	aborted  bool
	reported Setting
	roles    roleState // the backend's current_user, as read and inferred
	// Events to deliver once mu is released.
	outbox []func()
	// blind is set when following the protocol failed (a bug, or a peer
	// the relay does not understand): the connection is then relayed
	// without observation.
	blind bool
}

// pending is one reply the server owes.
type pending struct {
	kind   byte // the client message type, or 'z' for a probe
	stmt   *prepared
	portal *portal
	run    *run
}

// prepared is a statement the client parsed.
type prepared struct {
	text     string
	effects  []stmtEffect
	params   bool // its effects depend on Bind parameters
	declared string
	fields   []pgproto3.FieldDescription // from a Describe, when one came
}

// portal is a bound statement.
type portal struct {
	stmt          *prepared
	params        []*string
	resultFormats []int16
	fields        []pgproto3.FieldDescription // from a Describe of the portal
	described     bool
}

// run is a statement in flight: a simple Query or an Execute.
type run struct {
	Statement
	effects []stmtEffect
	next    int // index into effects of the next CommandComplete
	portal  *portal
	started bool
	ref     Setting
	tenant  string

	tenantCol    int // index of tenant_id in the current result, or -1
	tenantFormat int16
	tenantOID    uint32
	res          Result
}

func newConn(s *Server, id uint64, client net.Conn, cr *bufio.Reader, hc *pgconn.HijackedConn, st startup, events Events, log *slog.Logger) *conn {
	c := &conn{
		s: s, log: log, events: events,
		client: client, cr: cr, cw: bufio.NewWriterSize(client, 32<<10),
		hc: hc, up: hc.Conn, uw: bufio.NewWriterSize(hc.Conn, 32<<10),
		upAddr: hc.Conn.RemoteAddr(), realPID: hc.PID, realSecret: hc.SecretKey,
		stmts: make(map[string]*prepared), portals: make(map[string]*portal),
		dirty: true,
	}
	c.ur = bufio.NewReaderSize(hc.Conn, 32<<10)
	c.info = ConnInfo{
		ID: id, PID: hc.PID, Database: st.database, User: st.user,
		Application: st.params["application_name"], Client: client.RemoteAddr().String(), Opened: time.Now(),
	}
	c.probe.init(s.setting, id)
	c.roles.login = hc.ParameterStatuses["session_authorization"]
	return c
}

// opened reports the connection.
func (c *conn) opened() {
	if c.events != nil {
		c.events.Opened(c.info)
	}
}

// closeAll closes both sides; the relay goroutines then end.
func (c *conn) closeAll() {
	c.closeOnce.Do(func() {
		_ = c.client.Close()
		_ = c.up.Close()
	})
}

// run relays until either side ends or ctx does.
func (c *conn) run(ctx context.Context) {
	stop := context.AfterFunc(ctx, c.closeAll)
	defer stop()
	c.mu.Lock()
	c.maybeProbe() // the role's own default, before the first statement
	c.mu.Unlock()
	var wg sync.WaitGroup
	var serverErr error
	wg.Go(func() {
		serverErr = c.fromServer()
		c.closeAll()
	})
	clientErr := c.fromClient()
	c.closeAll()
	wg.Wait()
	c.mu.Lock()
	c.probe.enabled = false // a delayed probe's timer does nothing now
	c.probe.stopTimer()
	leftover := c.takeOutbox()
	c.mu.Unlock()
	deliver(leftover)
	err := clientErr
	if err == nil || isClosed(err) {
		err = serverErr
	}
	if isClosed(err) || ctx.Err() != nil {
		err = nil
	}
	c.log.Debug("pgproxy: connection closed", "client_err", clientErr, "server_err", serverErr)
	if c.events != nil {
		c.events.Closed(c.info, err)
	}
}

// isClosed says whether err is just the end of a connection.
func isClosed(err error) bool {
	return err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF)
}

// takeOutbox returns the events collected under mu and empties the outbox;
// under mu. Deliver them after Unlock.
func (c *conn) takeOutbox() []func() {
	out := c.outbox
	c.outbox = nil
	return out
}

// deliver calls the events taken from the outbox.
func deliver(out []func()) {
	for _, f := range out {
		f()
	}
}

// emit queues an event; called under mu.
func (c *conn) emit(f func()) {
	if c.events != nil {
		c.outbox = append(c.outbox, f)
	}
}

// fromClient relays the client's messages to the server.
func (c *conn) fromClient() error {
	var buf []byte
	for {
		m, err := readMessage(c.cr, buf)
		if err != nil {
			return err
		}
		if cap(m.raw) <= 64<<10 {
			buf = m.raw[:0]
		}
		c.mu.Lock()
		c.probe.cancelTimer()
		c.safely(func() { c.account(m) })
		out := c.takeOutbox()
		c.mu.Unlock()
		// A statement's Sent is delivered before the server can answer it.
		deliver(out)
		c.wmu.Lock()
		_, err = c.uw.Write(m.raw)
		if err == nil && c.cr.Buffered() == 0 {
			err = c.uw.Flush()
		}
		c.wmu.Unlock()
		if err != nil {
			return err
		}
		if m.typ == 'X' {
			return nil
		}
	}
}

// safely runs an observation step; if it panics, the connection goes on
// unobserved instead of failing. Under mu.
func (c *conn) safely(step func()) {
	if c.blind {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("pgproxy: observation failed; relaying the connection unobserved", "panic", r)
			c.blind = true
			c.probe.enabled = false
			if c.probe.timer != nil {
				c.probe.timer.Stop()
			}
			c.outbox = nil
		}
	}()
	step()
}

// blindForward says whether to pass a server message on an unobserved
// connection: everything but the replies to a probe that was in flight.
func (c *conn) blindForward(m message) bool {
	if !c.probe.inFlight {
		return true
	}
	switch m.typ {
	case 'N', 'A', 'S':
		return true
	case 'Z':
		c.probe.inFlight = false
		close(c.probe.done)
		c.probe.done = nil
	}
	return false
}

// account records what a client message asks of the server; under mu.
func (c *conn) account(m message) {
	switch m.typ {
	case 'Q':
		text, _, _ := cstring(m.body())
		delete(c.stmts, "")
		delete(c.portals, "")
		r := c.newRun(text, nil, analyze(text, c.s.setting, nil), declaredTenant(text), nil)
		c.push(&pending{kind: 'Q', run: r})
		c.syncs++
		c.unsynced = false
		c.groupExecs = 0
	case 'P':
		var p pgproto3.Parse
		if err := p.Decode(m.body()); err != nil {
			c.unsynced = true
			return
		}
		ps := &prepared{text: p.Query, declared: declaredTenant(p.Query)}
		ps.effects = analyze(p.Query, c.s.setting, nil)
		ps.params = strings.Contains(p.Query, "$") && hasUnknown(ps.effects)
		c.stmts[p.Name] = ps
		c.push(&pending{kind: 'P', stmt: ps})
		c.unsynced = true
	case 'B':
		var b pgproto3.Bind
		c.unsynced = true
		if err := b.Decode(m.body()); err != nil {
			return
		}
		pt := &portal{stmt: c.stmts[b.PreparedStatement], resultFormats: append([]int16(nil), b.ResultFormatCodes...)}
		pt.params = textParams(b.ParameterFormatCodes, b.Parameters)
		c.portals[b.DestinationPortal] = pt
		c.push(&pending{kind: 'B', portal: pt})
	case 'D':
		var d pgproto3.Describe
		c.unsynced = true
		if err := d.Decode(m.body()); err != nil {
			return
		}
		if d.ObjectType == 'S' {
			c.push(&pending{kind: 'D', stmt: c.stmts[d.Name]})
		} else {
			c.push(&pending{kind: 'd', portal: c.portals[d.Name]})
		}
	case 'E':
		var e pgproto3.Execute
		c.unsynced = true
		if err := e.Decode(m.body()); err != nil {
			return
		}
		pt := c.portals[e.Portal]
		var r *run
		if pt != nil && pt.stmt != nil {
			effects := pt.stmt.effects
			if pt.stmt.params {
				effects = analyze(pt.stmt.text, c.s.setting, pt.params)
			}
			r = c.newRun(pt.stmt.text, pt.params, effects, pt.stmt.declared, pt)
		} else {
			r = c.newRun("", nil, nil, "", pt)
		}
		c.groupExecs++
		c.push(&pending{kind: 'E', portal: pt, run: r})
	case 'C':
		var cl pgproto3.Close
		c.unsynced = true
		if err := cl.Decode(m.body()); err != nil {
			return
		}
		if cl.ObjectType == 'S' {
			delete(c.stmts, cl.Name)
		} else {
			delete(c.portals, cl.Name)
		}
		c.push(&pending{kind: 'C'})
	case 'S':
		if c.copyIn {
			return
		}
		c.push(&pending{kind: 'S'})
		c.dirty = true
		c.syncs++
		c.unsynced = false
		c.groupExecs = 0
	case 'H':
		if !c.copyIn {
			c.unsynced = true
		}
	case 'F':
		c.push(&pending{kind: 'F', run: c.newRun("-- function call", nil, nil, "", nil)})
		c.syncs++
	case 'c', 'f':
		c.copyIn = false
	case 'd':
	default:
		c.unsynced = true
	}
}

// hasUnknown says whether any effect could not be read from the text alone.
func hasUnknown(effects []stmtEffect) bool {
	for _, e := range effects {
		for _, ef := range e.effects {
			if ef.kind == effUnknown {
				return true
			}
		}
	}
	return false
}

// textParams returns the text-format parameters as strings (nil for NULL or
// binary ones).
func textParams(formats []int16, params [][]byte) []*string {
	if len(params) == 0 {
		return nil
	}
	out := make([]*string, len(params))
	for i, p := range params {
		f := int16(0)
		switch {
		case len(formats) == 1:
			f = formats[0]
		case i < len(formats):
			f = formats[i]
		}
		if p == nil || f != 0 {
			continue
		}
		s := string(p)
		out[i] = &s
	}
	return out
}

// newRun starts a statement and queues its Sent event; under mu.
func (c *conn) newRun(text string, params []*string, effects []stmtEffect, declared string, pt *portal) *run {
	c.nextRun++
	c.dirty = true
	r := &run{
		Statement: Statement{ID: c.nextRun, Text: text, Params: params, Declared: declared, At: time.Now()},
		effects:   effects, portal: pt, tenantCol: -1,
	}
	r.InTransaction = c.clientTx || c.groupExecs > 0
	for _, e := range effects {
		switch e.tx {
		case txBegin:
			c.clientTx = true
		case txEnd:
			c.clientTx = false
		}
	}
	st := r.Statement
	c.emit(func() { c.events.Sent(c.info, st) })
	return r
}

// push queues a reply the server owes; under mu.
func (c *conn) push(p *pending) { c.queue = append(c.queue, p) }

// head is the reply the server owes next, or nil.
func (c *conn) head() *pending {
	if len(c.queue) == 0 {
		return nil
	}
	return c.queue[0]
}

// pop drops the head.
func (c *conn) pop() {
	c.queue[0] = nil
	c.queue = c.queue[1:]
	if len(c.queue) == 0 {
		c.queue = c.queue[:0:0]
	}
}

// fromServer relays the server's messages to the client, swallowing the
// probe's replies.
func (c *conn) fromServer() error {
	var buf []byte
	for {
		m, err := readMessage(c.ur, buf)
		if err != nil {
			_ = c.cw.Flush()
			return err
		}
		if cap(m.raw) <= 64<<10 {
			buf = m.raw[:0]
		}
		c.mu.Lock()
		forward, probe := true, false
		if !c.blind {
			c.safely(func() { forward, probe = c.observe(m) })
		}
		if c.blind {
			// Also for the message whose observation just failed.
			forward, probe = c.blindForward(m), false
		}
		out := c.takeOutbox()
		c.mu.Unlock()
		deliver(out)
		if forward {
			if _, err := c.cw.Write(m.raw); err != nil {
				return err
			}
		}
		if c.ur.Buffered() == 0 || probe {
			if err := c.cw.Flush(); err != nil {
				return err
			}
		}
		if probe {
			c.mu.Lock()
			c.maybeProbe()
			out := c.takeOutbox()
			c.mu.Unlock()
			deliver(out)
		}
	}
}

// observe follows a server message; it returns whether to pass it to the
// client and whether the connection is now idle enough to probe. Under mu.
func (c *conn) observe(m message) (forward, idle bool) {
	if f := c.s.observing; f != nil {
		f(m.typ)
	}
	switch m.typ {
	case 'N', 'A', 'S':
		return true, false // notices, notifications, parameter changes
	}
	h := c.head()
	if h != nil && h.kind == 'z' {
		c.probeReply(m)
		return false, false
	}
	switch m.typ {
	case '1', '2', '3':
		if h != nil && (h.kind == 'P' || h.kind == 'B' || h.kind == 'C') {
			c.pop()
		}
	case 't':
	case 'T':
		var rd pgproto3.RowDescription
		if err := rd.Decode(m.body()); err != nil || h == nil {
			break
		}
		fields := copyFields(rd.Fields)
		switch h.kind {
		case 'D':
			if h.stmt != nil {
				h.stmt.fields = fields
			}
			c.pop()
		case 'd':
			if h.portal != nil {
				h.portal.fields, h.portal.described = fields, true
			}
			c.pop()
		case 'Q', 'E':
			c.startResult(h.run, fields, nil)
		}
	case 'n':
		if h != nil && (h.kind == 'D' || h.kind == 'd') {
			if h.kind == 'd' && h.portal != nil {
				h.portal.fields, h.portal.described = nil, true
			} else if h.stmt != nil {
				h.stmt.fields = nil
			}
			c.pop()
		}
	case 'D':
		if h != nil && (h.kind == 'Q' || h.kind == 'E') {
			c.row(h.run, m.body())
		}
	case 'C', 'I':
		if h == nil || (h.kind != 'Q' && h.kind != 'E') {
			break
		}
		tag := ""
		if m.typ == 'C' {
			tag, _, _ = cstring(m.body())
		}
		c.complete(h.run, tag)
		if h.kind == 'E' {
			c.finish(h.run, nil)
			c.pop()
		}
	case 's':
		if h != nil && h.kind == 'E' {
			c.ensureStarted(h.run)
			h.run.res.Tag = "SUSPENDED"
			c.finish(h.run, nil)
			c.pop()
		}
	case 'E':
		c.serverError(m)
	case 'G':
		// COPY FROM STDIN: the server now ignores Sync and Flush until the
		// copy ends, including those already sent.
		c.copyIn = true
		kept := c.queue[:0]
		for i, p := range c.queue {
			if i > 0 && p.kind == 'S' {
				c.syncs--
				continue
			}
			kept = append(kept, p)
		}
		for i := len(kept); i < len(c.queue); i++ {
			c.queue[i] = nil
		}
		c.queue = kept
	case 'Z':
		if len(m.body()) < 1 {
			break
		}
		return true, c.ready(m.body()[0])
	}
	return true, false
}

// copyFields copies field descriptions out of a reused buffer.
func copyFields(fs []pgproto3.FieldDescription) []pgproto3.FieldDescription {
	out := make([]pgproto3.FieldDescription, len(fs))
	for i, f := range fs {
		out[i] = f
		out[i].Name = append([]byte(nil), f.Name...)
	}
	return out
}

// serverError handles an ErrorResponse; under mu.
func (c *conn) serverError(m message) {
	var er pgproto3.ErrorResponse
	_ = er.Decode(m.body())
	pe := &pgconn.PgError{Severity: er.Severity, Code: er.Code, Message: er.Message, Detail: er.Detail, Hint: er.Hint, Position: er.Position}
	c.aborted = true
	c.copyIn = false
	h := c.head()
	if h == nil {
		return
	}
	switch h.kind {
	case 'Q', 'F':
		c.ensureStarted(h.run)
		h.run.res.Err = pe
		return
	case 'S':
		return
	}
	// Extended protocol: the server skips everything up to the next Sync.
	// A statement that failed to parse is reported once: by its Execute
	// when one is queued behind it (node-postgres sends Parse, Bind,
	// Execute and Sync at once), else as a statement of its own.
	failed := h.kind == 'P' && h.stmt != nil && executes(c.queue, h.stmt)
	for len(c.queue) > 0 && c.queue[0].kind != 'S' && c.queue[0].kind != 'Q' && c.queue[0].kind != 'F' && c.queue[0].kind != 'z' {
		p := c.queue[0]
		switch {
		case p.kind == 'E' && p.run != nil:
			c.ensureStarted(p.run)
			c.finish(p.run, pe)
			failed = true
		case p.kind == 'P' && p.stmt != nil && !failed && p == h:
			// A statement that failed to parse never gets an Execute:
			// report it as a statement of its own.
			r := c.newRun(p.stmt.text, nil, nil, p.stmt.declared, nil)
			c.ensureStarted(r)
			c.finish(r, pe)
			failed = true
		}
		c.pop()
	}
}

// executes says whether an Execute of stmt is queued before the next Sync.
func executes(queue []*pending, stmt *prepared) bool {
	for _, p := range queue {
		switch {
		case p.kind == 'S' || p.kind == 'Q' || p.kind == 'F' || p.kind == 'z':
			return false
		case p.kind == 'E' && p.run != nil && p.portal != nil && p.portal.stmt == stmt:
			return true
		}
	}
	return false
}

// ready handles ReadyForQuery with the transaction status; under mu. It
// returns whether the connection is idle: outside a transaction, every
// message the client sent answered.
func (c *conn) ready(status byte) bool {
	for len(c.queue) > 0 {
		p := c.queue[0]
		c.pop()
		if p.kind == 'Q' || p.kind == 'F' {
			c.ensureStarted(p.run)
			c.finish(p.run, p.run.res.Err)
		}
		if p.kind == 'S' || p.kind == 'Q' || p.kind == 'F' {
			break
		}
	}
	if c.syncs > 0 {
		c.syncs--
	}
	c.copyIn = false
	c.endOfTransaction(status)
	if c.syncs == 0 && !c.unsynced {
		c.clientTx = status != 'I'
		if status == 'I' && len(c.portals) > 0 {
			// No portal outlives its transaction.
			clear(c.portals)
		}
	}
	return status == 'I' && c.syncs == 0 && !c.unsynced && len(c.queue) == 0
}

// ensureStarted fixes, at a statement's first reply, the setting in force
// and the tenant its rows are compared with.
func (c *conn) ensureStarted(r *run) {
	if r.started {
		return
	}
	r.started = true
	r.ref = c.current()
	r.tenant = r.Declared
	if r.tenant == "" && r.ref.Known && !r.ref.Null {
		r.tenant = r.ref.Value
	}
	if r.portal != nil {
		if r.portal.described {
			// A described portal's fields carry their formats.
			c.startResult(r, r.portal.fields, nil)
		} else if r.portal.stmt != nil {
			c.startResult(r, r.portal.stmt.fields, r.portal.resultFormats)
		}
	}
}

// startResult records a result's columns and where its tenant_id is;
// formats are the Bind's result format codes, nil when fields carry them.
func (c *conn) startResult(r *run, fields []pgproto3.FieldDescription, formats []int16) {
	if r == nil {
		return
	}
	if !r.started {
		c.ensureStarted(r)
	}
	r.res.Columns = r.res.Columns[:0]
	r.tenantCol = -1
	col := tenantColumn(fields)
	for i, f := range fields {
		r.res.Columns = append(r.res.Columns, string(f.Name))
		if i == col {
			r.tenantCol = i
			r.tenantOID = f.DataTypeOID
			r.tenantFormat = f.Format
			if formats != nil {
				switch {
				case len(formats) == 0:
					r.tenantFormat = 0
				case len(formats) == 1:
					r.tenantFormat = formats[0]
				case i < len(formats):
					r.tenantFormat = formats[i]
				}
			}
		}
	}
	if r.tenantCol >= 0 {
		r.res.TenantColumn = true
	}
}

// maxTenants bounds Result.Tenants.
const maxTenants = 32

// row counts a DataRow and reads its tenant_id.
func (c *conn) row(r *run, body []byte) {
	if r == nil {
		return
	}
	c.ensureStarted(r)
	r.res.Rows++
	if r.tenantCol < 0 {
		return
	}
	v, ok := columnValue(body, r.tenantCol)
	if !ok || v == nil {
		return
	}
	t := tenantText(v, r.tenantFormat, r.tenantOID)
	if r.tenant != "" && t != r.tenant {
		r.res.ForeignRows++
	}
	for _, seen := range r.res.Tenants {
		if seen == t {
			return
		}
	}
	if len(r.res.Tenants) < maxTenants {
		r.res.Tenants = append(r.res.Tenants, t)
	}
}

// complete handles a CommandComplete of a run: its tag, and what the
// statement did to the setting and the transaction.
func (c *conn) complete(r *run, tag string) {
	if r == nil {
		return
	}
	c.ensureStarted(r)
	r.res.Tag = tag
	if r.next < len(r.effects) {
		e := r.effects[r.next]
		r.next++
		for _, ef := range e.effects {
			c.apply(ef, r.Text)
		}
	}
	switch tag {
	case "COMMIT":
		c.endTransaction(!c.aborted)
	case "ROLLBACK":
		c.endTransaction(false)
	}
	// In a simple query, the next statement's rows compare with the
	// setting as it is now.
	if r.next < len(r.effects) {
		r.ref = c.current()
		if r.Declared == "" {
			r.tenant = ""
			if r.ref.Known && !r.ref.Null {
				r.tenant = r.ref.Value
			}
		}
	}
}

// finish reports a run's result.
func (c *conn) finish(r *run, err *pgconn.PgError) {
	if r == nil {
		return
	}
	res := r.res
	res.ID = r.ID
	res.Text = r.Text
	res.Declared = r.Declared
	res.InTransaction = r.InTransaction
	res.Setting = r.ref
	res.Tenant = r.tenant
	res.Err = err
	res.Duration = time.Since(r.At)
	c.emit(func() { c.events.Finished(c.info, res) })
}
