// Package appview draws an application's connections, as rlslab's
// PostgreSQL proxy (package pgproxy) observes them, on a scenario's live
// state: each connection a box of one pool, each statement a request row
// with the tenant its tag declared, the setting in force and the rows it
// got, and each tenant setting the proxy reads or infers an event on the
// timeline. A learner's own app through the lab's proxy and the your-app
// scenario's client through a proxy of its own are drawn by the same code.
package appview

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/rlslab/rlslab/internal/pgproxy"
	"github.com/rlslab/rlslab/scenarios/engine"
)

const (
	// Pool names the app's connections in the live view.
	Pool = "app"
	// Pattern is the pattern of an app statement's request row.
	Pattern = "app"
	// maxStatementText bounds the statement text kept in a request row.
	maxStatementText = 200
)

// Drawer implements pgproxy.Events by drawing on a run's state. Its zero
// value is not usable: use New.
type Drawer struct {
	env   *engine.Env
	sb    engine.Sandbox
	who   string
	max   int
	touch func()

	mu      sync.Mutex
	conns   map[uint64]*conn // by the proxy's connection id
	ended   bool
	changed chan struct{} // closed and replaced on every change of conns
}

// conn is one app connection as drawn.
type conn struct {
	slot    int
	pid     uint32
	setting pgproxy.Setting // as last reported
	reqs    map[uint64]int  // statement id -> request seq
}

// Options are a Drawer's settings besides its run.
type Options struct {
	// Who names the app in the narration ("Your app").
	Who string
	// Max is the pool's size shown in the pool counts.
	Max int
	// Touch, when set, is called for each statement the app sends (an app
	// at work keeps its lab from expiring).
	Touch func()
}

// New returns a Drawer that draws on env's state.
func New(env *engine.Env, o Options) *Drawer {
	if o.Who == "" {
		o.Who = "Your app"
	}
	return &Drawer{env: env, sb: env.Sandbox, who: o.Who, max: o.Max, touch: o.Touch, conns: map[uint64]*conn{}, changed: make(chan struct{})}
}

// End stops drawing: events that come later change nothing.
func (d *Drawer) End() {
	d.mu.Lock()
	d.ended = true
	d.mu.Unlock()
}

// notify wakes the waiters of WaitOpen; under mu.
func (d *Drawer) notify() {
	close(d.changed)
	d.changed = make(chan struct{})
}

// WaitOpen waits until n connections are drawn open, or ctx ends.
func (d *Drawer) WaitOpen(ctx context.Context, n int) error {
	for {
		d.mu.Lock()
		open, ch := len(d.conns), d.changed
		d.mu.Unlock()
		if open >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%d of %d connections through the proxy drawn: %w", open, n, context.Cause(ctx))
		}
	}
}

// Counts returns the pool counts of the connections drawn open: busy are
// those with a statement running.
func (d *Drawer) Counts() engine.PoolCounts {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.countsLocked()
}

// countsLocked is Counts; under mu.
func (d *Drawer) countsLocked() engine.PoolCounts {
	pc := engine.PoolCounts{Name: Pool, Max: int32(d.max), Total: int32(len(d.conns))}
	for _, c := range d.conns {
		if len(c.reqs) > 0 {
			pc.Acquired++
		}
	}
	pc.Idle = pc.Total - pc.Acquired
	return pc
}

// conn returns the drawn connection of c, or nil once the drawer has
// ended or when c was never drawn.
func (d *Drawer) conn(c pgproxy.ConnInfo) *conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ended {
		return nil
	}
	return d.conns[c.ID]
}

// Opened draws a new box for the connection, in the lowest free slot.
func (d *Drawer) Opened(c pgproxy.ConnInfo) {
	d.mu.Lock()
	if d.ended {
		d.mu.Unlock()
		return
	}
	used := map[int]bool{}
	for _, ac := range d.conns {
		used[ac.slot] = true
	}
	slot := 1
	for used[slot] {
		slot++
	}
	d.conns[c.ID] = &conn{slot: slot, pid: c.PID, reqs: map[uint64]int{}}
	open := len(d.conns)
	counts := d.countsLocked()
	d.notify()
	d.mu.Unlock()
	d.env.Tracker().Update(func(st *engine.State) {
		box := engine.Connection{Pool: Pool, Slot: slot, PID: c.PID, State: engine.ConnIdle, Role: d.sb.AppRole}
		replaced := false
		for i := range st.Connections {
			if st.Connections[i].Pool == Pool && st.Connections[i].Slot == slot {
				st.Connections[i], replaced = box, true
			}
		}
		if !replaced {
			st.Connections = append(st.Connections, box)
		}
		st.Pool = counts
		st.Narration = fmt.Sprintf("%s opened connection %d (backend %d); it holds %d.", d.who, slot, c.PID, open)
	})
	d.env.Tracker().AddTimeline(d.sb.AppRole, engine.TimelineEvent{Kind: engine.TimelineConnect, Pool: Pool, Slot: slot, PID: c.PID, Role: d.sb.AppRole})
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
func (d *Drawer) Sent(c pgproxy.ConnInfo, st pgproxy.Statement) {
	ac := d.conn(c)
	if ac == nil {
		return
	}
	if d.touch != nil {
		d.touch()
	}
	req := d.env.NewRequest(engine.Tenant{}, Pattern, Pool, "sent")
	var declared *string
	if st.Declared != "" {
		v := st.Declared
		declared = &v
	}
	d.mu.Lock()
	ac.reqs[st.ID] = req.Seq
	seen := settingValue(ac.setting)
	role := d.role(ac.setting)
	slot := ac.slot
	counts := d.countsLocked()
	d.mu.Unlock()
	text := shorten(st.Text)
	req.Update(func(r *engine.RequestRow) {
		r.Tenant, r.PID, r.SeenTenant, r.Role, r.Why = declared, c.PID, seen, role, text
	})
	d.env.Tracker().Update(func(state *engine.State) {
		for i := range state.Connections {
			if cn := &state.Connections[i]; cn.Pool == Pool && cn.Slot == slot {
				cn.State, cn.Request = engine.ConnAcquired, req.Seq
			}
		}
		state.Pool = counts
	})
}

// Finished fills the statement's request row with what it got, marks it a
// leak when it served another tenant, and adds it to the timeline.
func (d *Drawer) Finished(c pgproxy.ConnInfo, r pgproxy.Result) {
	ac := d.conn(c)
	if ac == nil {
		return
	}
	d.mu.Lock()
	seq := ac.reqs[r.ID]
	delete(ac.reqs, r.ID)
	pending := len(ac.reqs)
	slot := ac.slot
	counts := d.countsLocked()
	d.mu.Unlock()
	if seq == 0 {
		return
	}
	seen := settingValue(r.Setting)
	leak := Leak(r)
	why := d.why(r, seen, leak)
	t := d.env.Tracker()
	t.UpdateRequest(seq, func(row *engine.RequestRow) {
		row.PID, row.SeenTenant = c.PID, seen
		row.Rows, row.ForeignRows, row.Leak = r.Rows, r.ForeignRows, leak
		row.Phase, row.FinishedAt, row.Why = "done", time.Now().UnixMilli(), why
		if r.Err != nil {
			row.Error, row.SQLState, row.Phase = r.Err.Message, r.Err.Code, "failed"
		} else if len(r.Columns) == 0 {
			// No row description: a command (SET, BEGIN, a ping), not a
			// query that found nothing.
			row.Phase = engine.PhaseCommand
		}
	})
	t.Update(func(state *engine.State) {
		for i := range state.Connections {
			if cn := &state.Connections[i]; cn.Pool == Pool && cn.Slot == slot && pending == 0 {
				cn.State, cn.Request = engine.ConnIdle, 0
			}
		}
		state.Pool = counts
		if leak {
			state.Narration = fmt.Sprintf("%s's request #%d on backend %d: %s", d.who, seq, c.PID, why)
		}
	})
	inferred := r.Setting.Inferred || r.Setting.RoleInferred
	t.AddTimeline(d.sb.AppRole, engine.TimelineEvent{Kind: engine.TimelineObserve, Pool: Pool, Slot: slot, PID: c.PID,
		Read: r.Setting.Known && !inferred, Inferred: inferred, Tenant: seen, Role: d.role(r.Setting), Seq: seq})
}

// writesSetting matches a statement that writes the tenant setting: it
// runs with the setting it replaces, so its own tag says nothing of a leak.
var writesSetting = regexp.MustCompile(`(?i)\bset_config\s*\(|\b(set|reset)\s+(local\s+|session\s+)?` + regexp.QuoteMeta(pgproxy.DefaultSetting) + `\b|\bdiscard\s+all\b|\breset\s+all\b`)

// Leak says whether an app's statement served another tenant: it got rows
// of another tenant than the one it declared (or, undeclared, than the
// setting in force), or it declared a tenant while the backend held
// another one. A statement that writes the setting is judged by its rows
// only; a declared tenant meeting no setting at all is not a leak (the
// policy then matches nothing), though the row says the backend held none.
func Leak(r pgproxy.Result) bool {
	if r.ForeignRows > 0 {
		return true
	}
	if !r.Leak() || writesSetting.MatchString(r.Text) {
		return false
	}
	return r.Setting.Known && !r.Setting.Null && r.Setting.Value != ""
}

// why says in a sentence what a statement of the app saw.
func (d *Drawer) why(r pgproxy.Result, seen *string, leak bool) string {
	sb := d.sb
	in := engine.DescribeSetting(sb, seen, "held")
	if r.Setting.Inferred {
		in += " (inferred from the statements your app sent, not yet read)"
	}
	text := shorten(r.Text)
	switch {
	case r.Err != nil:
		return fmt.Sprintf("failed (%s): %s; %s", r.Err.Code, r.Err.Message, text)
	case leak && r.ForeignRows > 0:
		return fmt.Sprintf("LEAK: %d of %d rows belong to another tenant than %s; the backend %s. %s", r.ForeignRows, r.Rows, sb.TenantName(r.Tenant), in, text)
	case leak:
		return fmt.Sprintf("LEAK: the statement says it is for %s, but the backend %s. %s", sb.TenantName(r.Declared), in, text)
	case r.Declared == "" && r.Setting.Statement != "":
		return fmt.Sprintf("%s; no tenant declared; the backend %s, written at %s by %q", tagText(r.Tag), in, r.Setting.At.Format("15:04:05.000"), shorten(r.Setting.Statement))
	case r.Declared == "":
		return fmt.Sprintf("%s; no tenant declared; the backend %s. %s", tagText(r.Tag), in, text)
	default:
		return fmt.Sprintf("%s for %s; the backend %s. %s", tagText(r.Tag), sb.TenantName(r.Declared), in, text)
	}
}

// tagText says a CommandComplete tag in words: "SELECT 3" is "3 rows"
// (read as a query, "SELECT 1" misled), "INSERT 0 2" is "2 rows inserted",
// no tag at all is a client's empty statement (a ping); other tags stay.
func tagText(tag string) string {
	f := strings.Fields(tag)
	rows := func(n string) string {
		if n == "1" {
			return "1 row"
		}
		return n + " rows"
	}
	switch {
	case len(f) == 0:
		return "an empty statement (a client's ping)"
	case len(f) == 2 && f[0] == "SELECT":
		return rows(f[1])
	case len(f) == 3 && f[0] == "INSERT":
		return rows(f[2]) + " inserted"
	case len(f) == 2 && (f[0] == "UPDATE" || f[0] == "DELETE"):
		return rows(f[1]) + " " + strings.ToLower(f[0]) + "d"
	}
	return tag
}

// shorten bounds a statement's text for a row or a sentence.
func shorten(s string) string {
	if len(s) > maxStatementText {
		return s[:maxStatementText] + "…"
	}
	return s
}

// Setting shows the connection's tenant setting and role on its box and
// the timeline (marked inferred when either was not read).
func (d *Drawer) Setting(c pgproxy.ConnInfo, set pgproxy.Setting) {
	ac := d.conn(c)
	if ac == nil {
		return
	}
	d.mu.Lock()
	ac.setting = set
	slot := ac.slot
	d.mu.Unlock()
	v := settingValue(set)
	role := d.role(set)
	d.env.Tracker().Update(func(state *engine.State) {
		for i := range state.Connections {
			if cn := &state.Connections[i]; cn.Pool == Pool && cn.Slot == slot {
				cn.Tenant, cn.Role = v, role
			}
		}
	})
	if !set.Known {
		return
	}
	inferred := set.Inferred || set.RoleInferred
	d.env.Tracker().AddTimeline(d.sb.AppRole, engine.TimelineEvent{Kind: engine.TimelineRelease, Pool: Pool, Slot: slot, PID: c.PID,
		Read: !inferred, Inferred: inferred, Tenant: v, Role: role})
}

// role is the role a backend runs as: what the proxy last read or
// inferred (a SET ROLE the app ran shows there), or the lab's app role,
// which the app logs in as.
func (d *Drawer) role(set pgproxy.Setting) string {
	if set.Role != "" {
		return set.Role
	}
	return d.sb.AppRole
}

// Closed marks the connection's box closed.
func (d *Drawer) Closed(c pgproxy.ConnInfo, err error) {
	ac := d.conn(c)
	if ac == nil {
		return
	}
	d.mu.Lock()
	delete(d.conns, c.ID)
	slot := ac.slot
	counts := d.countsLocked()
	d.notify()
	d.mu.Unlock()
	d.env.Tracker().Update(func(state *engine.State) {
		for i := range state.Connections {
			if cn := &state.Connections[i]; cn.Pool == Pool && cn.Slot == slot && cn.PID == c.PID {
				cn.State, cn.Request = engine.ConnClosed, 0
			}
		}
		state.Pool = counts
	})
	d.env.Tracker().AddTimeline(d.sb.AppRole, engine.TimelineEvent{Kind: engine.TimelineClose, Pool: Pool, Slot: slot, PID: c.PID})
	if err != nil {
		d.env.Logger().Debug("app connection ended", "pid", c.PID, "err", err)
	}
}
