package sessions

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/internal/pgproxy"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// A learner's own application, connected to a lab through rlslab's proxy
// (package pgproxy), is drawn on the lab's live view like a scenario: each
// of its connections a box of the pool AppPool, each statement a request
// row, each tenant setting the proxy reads or infers an event on the
// timeline. The rule between the app and the lab's other users: an app
// connects only while no scenario run is going (a run then refuses to start
// until the app's connections are closed), and its first connection closes
// the free-play pool (free play refuses to open while app connections are
// open). Each app connection is admitted against the connection budget like
// a run's. From the first app connection to the last one closing is one
// "your app" session, recorded and published like a run.
const (
	// AppScenario is the scenario name the live view shows while a
	// learner's app is the lab's picture, and its recordings carry.
	AppScenario = "your-app"
	// AppVariant is the variant name of an app session.
	AppVariant = "live"
	// AppPool names the app's connections in the live view.
	AppPool = "app"
	// AppPattern is the pattern of an app statement's request row.
	AppPattern = "app"
	// AppUser is the user name an app logs in to the proxy as (the lab's
	// app role's own name works too).
	AppUser = "app"
	// appAdmitWait bounds how long an app connection waits for a
	// connection of the budget before it is refused (53300).
	appAdmitWait = 2 * time.Second
	// maxStatementText bounds the statement text kept in a request row.
	maxStatementText = 200
)

// ProxyPassword returns the password an app gives the proxy to connect to
// this lab (made at random with the lab).
func (l *Lab) ProxyPassword() string { return l.proxyPass }

// ProxyDatabase returns the database name an app asks the proxy for to
// reach this lab.
func (l *Lab) ProxyDatabase() string { return "lab_" + l.ID }

// AppConnections returns how many app connections the proxy holds for
// this lab (admitted, until their client goes).
func (l *Lab) AppConnections() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.appOpen
}

// appBusyLocked returns ECONFLICT while app connections are open. Callers hold
// l.mu.
func (l *Lab) appBusyLocked(what string) error {
	if l.appOpen == 0 {
		return nil
	}
	return rlslab.Errorf(rlslab.ECONFLICT, "your app holds %d connection(s) to lab %s through rlslab's proxy: %s once they are closed (stop the app or end its pool)", l.appOpen, l.ID, what)
}

// ProxyLookup is the proxy's Lookup (pgproxy.Config.Lookup): database
// lab_<id> of an open lab, user AppUser or the lab's app role. The
// connection goes to the lab's app role with the lab's proxy password, once
// admitted against the connection budget (waiting at most appAdmitWait);
// it is refused while a scenario run is going in the lab. A lab another
// instance runs is forwarded to that instance's proxy (proxyElsewhere).
func (m *Manager) ProxyLookup(ctx context.Context, database, user string) (pgproxy.Target, error) {
	id, ok := strings.CutPrefix(database, "lab_")
	if !ok {
		return pgproxy.Target{}, pgproxy.ErrUnknownDatabase
	}
	m.mu.Lock()
	l := m.labs[id]
	m.mu.Unlock()
	if l == nil {
		return m.proxyElsewhere(ctx, id)
	}
	if user != AppUser && user != l.Sandbox.AppRole {
		return pgproxy.Target{}, pgproxy.ErrRefused
	}
	actx, cancel := context.WithTimeout(ctx, appAdmitWait)
	err := l.srv.admit.acquire(actx, l.owner, 1, func(int) {})
	cancel()
	if err != nil {
		return pgproxy.Target{}, &pgconn.PgError{Code: "53300", Message: "rlslab's connection budget has no connection free for your app right now; try again in a moment"}
	}
	refuse := func(err error) (pgproxy.Target, error) {
		l.srv.admit.release(l.owner, 1)
		return pgproxy.Target{}, err
	}
	// The lab's control lock orders this with a run's start and a reset.
	l.ctl.Lock()
	l.mu.Lock()
	closed, running := l.closed, l.run != nil
	if !closed && !running {
		l.appOpen++
	}
	l.mu.Unlock()
	if !closed && !running {
		l.closeFreePlay("your app connected")
	}
	l.ctl.Unlock()
	switch {
	case closed:
		return refuse(pgproxy.ErrUnknownDatabase)
	case running:
		return refuse(&pgconn.PgError{Code: "57P03", Message: fmt.Sprintf("a scenario run is going in lab %s; connect your app once it ends", l.ID)})
	}
	l.Touch()
	var once sync.Once
	return pgproxy.Target{
		URL:            l.Sandbox.AppURL,
		ClientPassword: l.proxyPass,
		Events:         appEvents{l: l},
		Release: func() {
			once.Do(func() {
				l.srv.admit.release(l.owner, 1)
				l.appReleased()
			})
		},
	}, nil
}

// appReleased counts an app connection gone; the last one ends the
// session.
func (l *Lab) appReleased() {
	l.mu.Lock()
	l.appOpen--
	var s *appSession
	if l.appOpen == 0 {
		s, l.app = l.app, nil
	}
	l.mu.Unlock()
	if s != nil {
		l.mgr.publish(s.end("your app closed its last connection", false))
	}
}

// endAppSession ends the app session shown, if any, without waiting for
// its connections (a reset or the lab's close ends them), and publishes
// it. why says what ended it.
func (l *Lab) endAppSession(why string) {
	l.mu.Lock()
	s := l.app
	l.app = nil
	l.mu.Unlock()
	if s != nil {
		l.mgr.publish(s.end(why, true))
	}
}

// appSession is one "your app" session of a lab: the app's connections
// from the first one opening to the last one closing.
type appSession struct {
	lab     *Lab
	env     *engine.Env
	rec     *recorder
	started time.Time

	mu    sync.Mutex
	conns map[uint64]*appConn // by the proxy's connection id
	ended bool
}

// appConn is one app connection as drawn.
type appConn struct {
	slot    int
	pid     uint32
	setting pgproxy.Setting // as last reported
	reqs    map[uint64]int  // statement id -> request seq
}

// session returns the lab's app session, beginning one when create is
// set and there is none.
func (l *Lab) session(create bool) *appSession {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.app == nil && create && !l.closed {
		log := l.mgr.log.With("lab", l.ID, "scenario", AppScenario)
		l.tracker.Begin(AppScenario, AppVariant, "")
		s := &appSession{lab: l, started: time.Now(), conns: map[uint64]*appConn{},
			env: engine.NewEnv(l.Sandbox, nil, l.tracker, engine.NewPace(engine.Speed{Max: true}), log)}
		s.rec = record(l.tracker)
		l.app = s
		l.tracker.Narrate("Your app connected through rlslab's proxy: each of its connections is a box, each statement a request.")
	}
	return l.app
}

// end finishes the session's picture and returns its record. abandoned
// says the session ended before its connections did.
func (s *appSession) end(why string, abandoned bool) *RunRecord {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return nil
	}
	s.ended = true
	s.mu.Unlock()
	t := s.lab.tracker
	t.Update(func(st *engine.State) {
		for i := range st.Connections {
			if st.Connections[i].Pool == AppPool {
				st.Connections[i].State = engine.ConnClosed
			}
		}
		st.Pool.Total, st.Pool.Idle, st.Pool.Acquired = 0, 0, 0
		st.Status = engine.StatusDone
		if abandoned {
			st.Status, st.Error = engine.StatusFailed, why
		}
		st.Narration = appEndedNarration(why, len(st.Requests)+st.DroppedRequests, st.Leaks())
	})
	frames := s.rec.finish()
	return &RunRecord{Lab: s.lab, Scenario: AppScenario, Variant: AppVariant, Started: s.started, Final: t.Snapshot(), Frames: frames}
}

// appEvents receives the proxy's events for one lab's app connections.
type appEvents struct{ l *Lab }

// conn returns the session and the drawn connection of c, or nils when
// the session that had it has ended.
func (e appEvents) conn(c pgproxy.ConnInfo) (*appSession, *appConn) {
	s := e.l.session(false)
	if s == nil {
		return nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return nil, nil
	}
	return s, s.conns[c.ID]
}

// Opened draws a new box for the connection, in the lowest free slot.
func (e appEvents) Opened(c pgproxy.ConnInfo) {
	s := e.l.session(true)
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	used := map[int]bool{}
	for _, ac := range s.conns {
		used[ac.slot] = true
	}
	slot := 1
	for used[slot] {
		slot++
	}
	ac := &appConn{slot: slot, pid: c.PID, reqs: map[uint64]int{}}
	s.conns[c.ID] = ac
	open := len(s.conns)
	s.mu.Unlock()
	sb := e.l.Sandbox
	e.l.tracker.Update(func(st *engine.State) {
		box := engine.Connection{Pool: AppPool, Slot: slot, PID: c.PID, State: engine.ConnIdle, Role: sb.AppRole}
		replaced := false
		for i := range st.Connections {
			if st.Connections[i].Pool == AppPool && st.Connections[i].Slot == slot {
				st.Connections[i], replaced = box, true
			}
		}
		if !replaced {
			st.Connections = append(st.Connections, box)
		}
		st.Pool = appCounts(st, sb.ConnLimit)
		st.Narration = fmt.Sprintf("Your app opened connection %d (backend %d); it holds %d.", slot, c.PID, open)
	})
	e.l.tracker.AddTimeline(sb.AppRole, engine.TimelineEvent{Kind: engine.TimelineConnect, Pool: AppPool, Slot: slot, PID: c.PID, Role: sb.AppRole})
}

// appCounts counts the app's boxes for the live view's pool counts.
func appCounts(st *engine.State, max int) engine.PoolCounts {
	pc := engine.PoolCounts{Name: AppPool, Max: int32(max)}
	for _, c := range st.Connections {
		if c.Pool != AppPool || c.State == engine.ConnClosed {
			continue
		}
		pc.Total++
		if c.State == engine.ConnAcquired {
			pc.Acquired++
		} else {
			pc.Idle++
		}
	}
	return pc
}

// settingValue is what a setting shows as a tenant (nil: none known).
func settingValue(s pgproxy.Setting) *string {
	if !s.Known || s.Null {
		return nil
	}
	v := s.Value
	return &v
}

// Sent adds a request row for the statement and marks the box busy.
func (e appEvents) Sent(c pgproxy.ConnInfo, st pgproxy.Statement) {
	s, ac := e.conn(c)
	if ac == nil {
		return
	}
	e.l.Touch() // an app at work keeps its lab from expiring
	req := s.env.NewRequest(engine.Tenant{}, AppPattern, AppPool, "sent")
	var declared *string
	if st.Declared != "" {
		d := st.Declared
		declared = &d
	}
	s.mu.Lock()
	ac.reqs[st.ID] = req.Seq
	seen := settingValue(ac.setting)
	role := e.role(ac.setting)
	slot := ac.slot
	s.mu.Unlock()
	text := st.Text
	if len(text) > maxStatementText {
		text = text[:maxStatementText] + "…"
	}
	req.Update(func(r *engine.RequestRow) {
		r.Tenant, r.PID, r.SeenTenant, r.Role, r.Why = declared, c.PID, seen, role, text
	})
	e.l.tracker.Update(func(state *engine.State) {
		for i := range state.Connections {
			if cn := &state.Connections[i]; cn.Pool == AppPool && cn.Slot == slot {
				cn.State, cn.Request = engine.ConnAcquired, req.Seq
			}
		}
		state.Pool = appCounts(state, e.l.Sandbox.ConnLimit)
	})
}

// Finished fills the statement's request row with what it got, marks it a
// leak when it served another tenant, and adds it to the timeline.
func (e appEvents) Finished(c pgproxy.ConnInfo, r pgproxy.Result) {
	s, ac := e.conn(c)
	if ac == nil {
		return
	}
	s.mu.Lock()
	seq := ac.reqs[r.ID]
	delete(ac.reqs, r.ID)
	pending := len(ac.reqs)
	slot := ac.slot
	s.mu.Unlock()
	if seq == 0 {
		return
	}
	seen := settingValue(r.Setting)
	leak := appLeak(r)
	why := e.why(r, seen, leak)
	e.l.tracker.UpdateRequest(seq, func(row *engine.RequestRow) {
		row.PID, row.SeenTenant = c.PID, seen
		row.Rows, row.ForeignRows, row.Leak = r.Rows, r.ForeignRows, leak
		row.Phase, row.FinishedAt, row.Why = "done", time.Now().UnixMilli(), why
		if r.Err != nil {
			row.Error, row.SQLState, row.Phase = r.Err.Message, r.Err.Code, "failed"
		}
	})
	e.l.tracker.Update(func(state *engine.State) {
		for i := range state.Connections {
			if cn := &state.Connections[i]; cn.Pool == AppPool && cn.Slot == slot && pending == 0 {
				cn.State, cn.Request = engine.ConnIdle, 0
			}
		}
		state.Pool = appCounts(state, e.l.Sandbox.ConnLimit)
		if leak {
			state.Narration = fmt.Sprintf("Your app's request #%d on backend %d: %s", seq, c.PID, why)
		}
	})
	e.l.tracker.AddTimeline(e.l.Sandbox.AppRole, engine.TimelineEvent{Kind: engine.TimelineObserve, Pool: AppPool, Slot: slot, PID: c.PID,
		Read: r.Setting.Known && !r.Setting.Inferred, Inferred: r.Setting.Inferred, Tenant: seen, Role: e.role(r.Setting), Seq: seq})
}

// writesSetting matches a statement that writes the tenant setting: it
// runs with the setting it replaces, so its own tag says nothing of a leak.
var writesSetting = regexp.MustCompile(`(?i)\bset_config\s*\(|\b(set|reset)\s+(local\s+|session\s+)?` + regexp.QuoteMeta(pgproxy.DefaultSetting) + `\b|\bdiscard\s+all\b|\breset\s+all\b`)

// appLeak says whether an app's statement served another tenant: it got
// rows of another tenant than the one it declared (or, undeclared, than
// the setting in force), or it declared a tenant while the backend held
// another one. A statement that writes the setting is judged by its rows
// only; a declared tenant meeting no setting at all is not a leak (the
// policy then matches nothing), though the row says the backend held none.
func appLeak(r pgproxy.Result) bool {
	if r.ForeignRows > 0 {
		return true
	}
	if !r.Leak() || writesSetting.MatchString(r.Text) {
		return false
	}
	return r.Setting.Known && !r.Setting.Null && r.Setting.Value != ""
}

// why says in a sentence what a statement of the app saw.
func (e appEvents) why(r pgproxy.Result, seen *string, leak bool) string {
	sb := e.l.Sandbox
	in := engine.DescribeSetting(sb, seen, "held")
	if r.Setting.Inferred {
		in += " (inferred from the statements your app sent, not yet read)"
	}
	text := r.Text
	if len(text) > maxStatementText {
		text = text[:maxStatementText] + "…"
	}
	switch {
	case r.Err != nil:
		return fmt.Sprintf("failed (%s): %s; %s", r.Err.Code, r.Err.Message, text)
	case leak && r.ForeignRows > 0:
		return fmt.Sprintf("LEAK: %d of %d rows belong to another tenant than %s; the backend %s. %s", r.ForeignRows, r.Rows, sb.TenantName(r.Tenant), in, text)
	case leak:
		return fmt.Sprintf("LEAK: the statement says it is for %s, but the backend %s. %s", sb.TenantName(r.Declared), in, text)
	case r.Declared == "" && r.Setting.Statement != "":
		return fmt.Sprintf("%s; no tenant declared; the backend %s, written at %s by %q", r.Tag, in, r.Setting.At.Format("15:04:05.000"), shortStatement(r.Setting.Statement))
	case r.Declared == "":
		return fmt.Sprintf("%s; no tenant declared; the backend %s. %s", r.Tag, in, text)
	default:
		return fmt.Sprintf("%s for %s; the backend %s. %s", r.Tag, sb.TenantName(r.Declared), in, text)
	}
}

// shortStatement shortens a statement's text for a sentence.
func shortStatement(s string) string {
	if len(s) > maxStatementText {
		return s[:maxStatementText] + "…"
	}
	return s
}

// Setting shows the connection's tenant setting on its box and the
// timeline (marked inferred when it was not read).
func (e appEvents) Setting(c pgproxy.ConnInfo, set pgproxy.Setting) {
	s, ac := e.conn(c)
	if ac == nil {
		return
	}
	s.mu.Lock()
	ac.setting = set
	slot := ac.slot
	s.mu.Unlock()
	v := settingValue(set)
	role := e.role(set)
	e.l.tracker.Update(func(state *engine.State) {
		for i := range state.Connections {
			if cn := &state.Connections[i]; cn.Pool == AppPool && cn.Slot == slot {
				cn.Tenant, cn.Role = v, role
			}
		}
	})
	if !set.Known {
		return
	}
	e.l.tracker.AddTimeline(e.l.Sandbox.AppRole, engine.TimelineEvent{Kind: engine.TimelineRelease, Pool: AppPool, Slot: slot, PID: c.PID,
		Read: !set.Inferred, Inferred: set.Inferred, Tenant: v, Role: role})
}

// role is the role a backend runs as: what the last probe read (a SET ROLE
// the app ran shows there), or the lab's app role, which the app logs in as.
func (e appEvents) role(set pgproxy.Setting) string {
	if set.Role != "" {
		return set.Role
	}
	return e.l.Sandbox.AppRole
}

// Closed marks the connection's box closed.
func (e appEvents) Closed(c pgproxy.ConnInfo, err error) {
	s, ac := e.conn(c)
	if ac == nil {
		return
	}
	s.mu.Lock()
	delete(s.conns, c.ID)
	slot := ac.slot
	s.mu.Unlock()
	e.l.tracker.Update(func(state *engine.State) {
		for i := range state.Connections {
			if cn := &state.Connections[i]; cn.Pool == AppPool && cn.Slot == slot && cn.PID == c.PID {
				cn.State, cn.Request = engine.ConnClosed, 0
			}
		}
		state.Pool = appCounts(state, e.l.Sandbox.ConnLimit)
	})
	e.l.tracker.AddTimeline(e.l.Sandbox.AppRole, engine.TimelineEvent{Kind: engine.TimelineClose, Pool: AppPool, Slot: slot, PID: c.PID})
	if err != nil {
		e.l.mgr.log.Debug("app connection ended", "lab", e.l.ID, "pid", c.PID, "err", err)
	}
}
