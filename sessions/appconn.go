package sessions

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/internal/pgproxy"
	"github.com/rlslab/rlslab/internal/pgproxy/appview"
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
	// learner's app is the lab's picture, and its recordings carry: the
	// your-app scenario's, so that they compare with its runs.
	AppScenario = "your-app"
	// AppVariant is the variant name of an app session whose first
	// connection names no variant of the your-app scenario in its
	// application_name (the seed app names its mode there: session-set,
	// tx-local).
	AppVariant = "live"
	// AppPool names the app's connections in the live view.
	AppPool = appview.Pool
	// AppPattern is the pattern of an app statement's request row.
	AppPattern = appview.Pattern
	// AppUser is the user name an app logs in to the proxy as (the lab's
	// app role's own name works too).
	AppUser = "app"
	// appAdmitWait bounds how long an app connection waits for a
	// connection of the budget before it is refused (53300).
	appAdmitWait = 2 * time.Second
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
	variant string
	env     *engine.Env
	draw    *appview.Drawer
	rec     *recorder
	started time.Time

	mu    sync.Mutex
	ended bool
}

// session returns the lab's app session, beginning one when first is the
// first connection's and there is none.
func (l *Lab) session(first *pgproxy.ConnInfo) *appSession {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.app == nil && first != nil && !l.closed {
		variant := l.appVariant(first.Application)
		log := l.mgr.log.With("lab", l.ID, "scenario", AppScenario, "variant", variant)
		l.tracker.Begin(AppScenario, variant, "")
		s := &appSession{lab: l, variant: variant, started: time.Now(),
			env: engine.NewEnv(l.Sandbox, nil, l.tracker, engine.NewPace(engine.Speed{Max: true}), log)}
		s.draw = appview.New(s.env, appview.Options{Who: "Your app", Max: l.Sandbox.ConnLimit, Touch: l.Touch})
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
	s.draw.End()
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
	return &RunRecord{Lab: s.lab, Scenario: AppScenario, Variant: s.variant, Started: s.started, Final: t.Snapshot(), Frames: frames}
}

// appVariant is the variant an app session is recorded under: the your-app
// scenario's variant that its first connection's application_name names,
// or else AppVariant.
func (l *Lab) appVariant(application string) string {
	if sc, err := l.mgr.cfg.Catalog.Lookup(AppScenario); err == nil && application != AppVariant && sc.HasVariant(application) {
		return application
	}
	return AppVariant
}

// appEvents receives the proxy's events for one lab's app connections and
// hands them to the drawer of the lab's app session; the first connection
// begins a session.
type appEvents struct{ l *Lab }

// drawer returns the drawer of the lab's app session, beginning a session
// when first is a connection that just opened; nil when there is none.
func (e appEvents) drawer(first *pgproxy.ConnInfo) *appview.Drawer {
	if s := e.l.session(first); s != nil {
		return s.draw
	}
	return nil
}

// Opened draws a new box for the connection, beginning a session.
func (e appEvents) Opened(c pgproxy.ConnInfo) {
	if d := e.drawer(&c); d != nil {
		d.Opened(c)
	}
}

// Sent adds a request row for the statement.
func (e appEvents) Sent(c pgproxy.ConnInfo, st pgproxy.Statement) {
	if d := e.drawer(nil); d != nil {
		d.Sent(c, st)
	}
}

// Finished fills the statement's request row with what it got.
func (e appEvents) Finished(c pgproxy.ConnInfo, r pgproxy.Result) {
	if tagChangedRows(r.Tag) {
		e.l.rowsChanged.Store(true)
	}
	if d := e.drawer(nil); d != nil {
		d.Finished(c, r)
	}
}

// Setting shows the connection's tenant setting and role.
func (e appEvents) Setting(c pgproxy.ConnInfo, set pgproxy.Setting) {
	if d := e.drawer(nil); d != nil {
		d.Setting(c, set)
	}
}

// Closed marks the connection's box closed.
func (e appEvents) Closed(c pgproxy.ConnInfo, err error) {
	if d := e.drawer(nil); d != nil {
		d.Closed(c, err)
	}
}
