// Package views holds rlslab's templ components and the view models they
// render.
package views

import (
	"sort"
	"strconv"
	"strings"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// Live is the view model of the live view: a lab's state prepared for
// display.
type Live struct {
	engine.State
	// TenantNames maps a tenant setting value to the tenant's name.
	TenantNames map[string]string
	// Frame marks a websocket frame, swapped in by id (out of band); a
	// page renders the same view in place.
	Frame bool
}

// NewFrame prepares st for display as a websocket frame.
func NewFrame(st engine.State, tenants []engine.Tenant) Live {
	v := NewLive(st, tenants)
	v.Frame = true
	return v
}

// NewLive prepares st for display.
func NewLive(st engine.State, tenants []engine.Tenant) Live {
	names := map[string]string{}
	for _, t := range tenants {
		names[t.Setting()] = t.Name
	}
	return Live{State: st, TenantNames: names}
}

// shownRequests is how many request rows the live view draws; state.json
// has them all (up to the tracker's bound).
const shownRequests = 120

// RecentRequests returns the newest request rows the live view draws.
func (v Live) RecentRequests() []engine.RequestRow {
	if n := len(v.Requests); n > shownRequests {
		return v.Requests[n-shownRequests:]
	}
	return v.Requests
}

// HiddenRequests is how many request rows the live view leaves out.
func (v Live) HiddenRequests() int {
	return v.DroppedRequests + len(v.Requests) - len(v.RecentRequests())
}

// TenantLabel names a tenant setting value: the tenant's name, ” or NULL.
func (v Live) TenantLabel(t *string) string {
	switch {
	case t == nil:
		return "NULL"
	case *t == "":
		return "'' (empty)"
	}
	if n, ok := v.TenantNames[*t]; ok {
		return n + " (" + *t + ")"
	}
	if _, err := strconv.Atoi(*t); err == nil {
		return "Tenant " + *t // added by a scenario (the shared-pool crowd)
	}
	return "'" + *t + "'"
}

// TenantClass is the CSS class that colours a tenant setting value.
func TenantClass(t *string) string {
	switch {
	case t == nil:
		return "tenant-null"
	case *t == "":
		return "tenant-empty"
	}
	if n, err := strconv.Atoi(*t); err == nil && n >= 1 && n <= 6 {
		return "tenant-" + *t
	}
	return "tenant-other"
}

// InFlight is what the row of a request still in flight shows: its backend
// and phase at a teaching pace; at full speed only that it is in flight,
// since its phases pass faster than frames (and each would cost a frame
// its row).
func (v Live) InFlight(r engine.RequestRow) (pid uint32, phase string) {
	if v.Speed == "max" {
		return 0, "in flight"
	}
	return r.PID, r.Phase
}

// RowClass is the CSS class of a request log row.
func RowClass(r engine.RequestRow) string {
	switch {
	case r.Leak:
		return "leak"
	case r.Error != "":
		return "failed"
	case r.Phase == engine.PhaseCommand:
		return "command"
	case r.FinishedAt != 0:
		if r.Rows == 0 {
			return "closed"
		}
		return "ok"
	}
	return "pending"
}

// Verdict is the short word shown in a request row's last column.
func Verdict(r engine.RequestRow) string {
	switch {
	case r.Leak:
		return "LEAK"
	case r.Error != "":
		if r.SQLState != "" {
			return "ERROR " + r.SQLState
		}
		return "ERROR"
	case r.Phase == engine.PhaseCommand:
		return "command, no rows"
	case r.FinishedAt == 0:
		return r.Phase
	case r.Rows == 0:
		return "0 rows, fails closed"
	}
	return "own rows"
}

// WhyText is a request's explanation without the "LEAK: " the verdict
// column already says.
func WhyText(r engine.RequestRow) string { return strings.TrimPrefix(r.Why, "LEAK: ") }

// Itoa formats an integer.
func Itoa[T ~int | ~int32 | ~int64 | ~uint32](n T) string { return strconv.FormatInt(int64(n), 10) }

// PIDText shows a backend PID, or a dash before it is known.
func PIDText(pid uint32) string {
	if pid == 0 {
		return "–"
	}
	return strconv.FormatUint(uint64(pid), 10)
}

// PairLine is one client↔server link of the PgBouncer view.
type PairLine struct{ Y1, Y2 float64 }

// PairingView is the PgBouncer view ready to draw: both columns and the
// lines between linked connections.
type PairingView struct {
	*engine.Pairing
	Height float64
	Lines  []PairLine
}

// pairRow is the height of one connection in the PgBouncer view.
const pairRow = 34.0

// PairingDrawing lays out the PgBouncer view, or returns nil.
func (v Live) PairingDrawing() *PairingView {
	p := v.Pairing
	if p == nil {
		return nil
	}
	clients := append([]engine.PeerConn(nil), p.Clients...)
	sort.SliceStable(clients, func(i, j int) bool { return clients[i].Label < clients[j].Label })
	p2 := *p
	p2.Clients = clients
	pos := map[string]float64{}
	for i, s := range p.Servers {
		pos[s.Ptr] = float64(i)*pairRow + pairRow/2
	}
	out := &PairingView{Pairing: &p2, Height: float64(max(len(clients), len(p.Servers), 1)) * pairRow}
	for i, c := range clients {
		if y2, ok := pos[c.Link]; ok && c.Link != "" {
			out.Lines = append(out.Lines, PairLine{Y1: float64(i)*pairRow + pairRow/2, Y2: y2})
		}
	}
	return out
}

// F formats a float for an SVG attribute.
func F(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }

// Option is one choice of a select element.
type Option struct {
	Value, Label string
	Selected     bool
}

// SpeedOptions are the speeds offered in the controls.
func SpeedOptions(current string) []Option {
	out := []Option{}
	for _, s := range []string{"0.25", "0.5", "1", "2", "4", "max", "step"} {
		label := s + "×"
		switch s {
		case "max":
			label = "full speed"
		case "step":
			label = "single step"
		}
		out = append(out, Option{Value: s, Label: label, Selected: s == current})
	}
	return out
}
