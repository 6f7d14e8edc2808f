package web

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/web/live"
	"github.com/rlslab/rlslab/web/views"
)

// serverCountsEvery is how often a watched lab's server-side counts are
// read again.
const serverCountsEvery = 250 * time.Millisecond

// labFrame is one frame of a lab's live view, as its hub hands it to every
// websocket watching the lab: the live view's parts (sections and their
// items, each with a stable id), and the same with the presenter's pinned
// head. Each websocket sends its browser only the parts that changed since
// what that browser last got (see frameDiff), so a browser that skipped
// frames still ends up with the whole state. A frame is never changed once
// made: its HTML is shared by every watcher.
type labFrame struct {
	parts    []views.Part
	withHead []views.Part
	scenario string // the scenario of the run the frame shows ("" when none)
	// msgs lets the websockets that send this frame the same message
	// share its encoding (the frame's HTML does not change; only this
	// memo of its encodings fills as they are written).
	msgs *sharedMessages
}

// sharedMessages returns the frame's shared encodings.
func (f labFrame) sharedMessages() *sharedMessages { return f.msgs }

// labSource renders one lab's frames for its hub; it keeps the lab's
// finished request rows rendered.
type labSource struct {
	lab     *sessions.Lab
	cat     *engine.Catalog
	log     *slog.Logger
	rows    *views.RowCache
	version uint64
	framed  bool
}

// openLabSource is the source of the lab's hub.
func (s *Server) openLabSource(lab *sessions.Lab) live.Source[labFrame] {
	return newLabSource(lab, s.labs.Catalog(), s.log)
}

// newLabSource returns the source of lab's frames.
func newLabSource(lab *sessions.Lab, cat *engine.Catalog, log *slog.Logger) *labSource {
	return &labSource{lab: lab, cat: cat, log: log, rows: views.NewRowCache()}
}

// Changes tells when the lab's state changed.
func (src *labSource) Changes() (<-chan struct{}, func()) { return src.lab.Tracker().Subscribe() }

// Done is closed when the lab closes.
func (src *labSource) Done() <-chan struct{} { return src.lab.Done() }

// Refresh reads the lab's server-side counts into its state; an outage
// shows in the state itself.
func (src *labSource) Refresh(ctx context.Context) { _ = src.lab.RefreshServer(ctx) }

// Frame renders the lab's current state, unless its version is the one
// rendered last.
func (src *labSource) Frame(context.Context) (labFrame, bool) {
	st := src.lab.Tracker().Snapshot()
	if src.framed && st.Version == src.version {
		return labFrame{}, false
	}
	f, err := renderLabFrame(st, src.cat, src.rows)
	if err != nil {
		src.log.Error("render frame", "lab", st.Lab, "err", err)
		return labFrame{}, false
	}
	src.version, src.framed = st.Version, true
	return f, true
}

// renderLabFrame renders st as a frame; rows keeps the lab's finished
// request rows rendered (nil renders them all).
func renderLabFrame(st engine.State, cat *engine.Catalog, rows *views.RowCache) (labFrame, error) {
	parts, err := rows.FrameParts(views.NewFrame(st, st.Tenants))
	if err != nil {
		return labFrame{}, err
	}
	var head bytes.Buffer
	if err := views.PresentHead(headOf(cat, st), true).Render(context.Background(), &head); err != nil {
		return labFrame{}, err
	}
	withHead := append(parts[:len(parts):len(parts)], views.Part{ID: "present-head", HTML: head.Bytes()})
	return labFrame{parts: parts, withHead: withHead, scenario: st.Scenario, msgs: newSharedMessages()}, nil
}

// frameDiff remembers what one browser was sent and turns each new frame
// into the htmx out-of-band swaps of what changed: a changed section is
// swapped whole (and its items sent again), a new item is appended to its
// container, a changed item is swapped by id, a gone one deleted.
type frameDiff struct {
	sent     map[string][]byte
	sections map[string]string // each sent part's section
	// tally, when set, adds up the bytes sent per part id (for the
	// benchmark).
	tally func(id string, n int)
}

// next returns the message that brings the browser from what it was sent
// to parts, or nil when nothing changed. It keeps parts' HTML, shared with
// every other watcher, and copies none of it.
func (d *frameDiff) next(parts []views.Part) []byte {
	var out bytes.Buffer
	resent := map[string]bool{}
	now := make(map[string][]byte, len(parts))
	for _, p := range parts {
		before := out.Len()
		now[p.ID] = p.HTML
		old, had := d.sent[p.ID]
		switch {
		case p.Section == "":
			if !had || !bytes.Equal(old, p.HTML) {
				out.Write(p.HTML)
				resent[p.ID] = true
			}
		case resent[p.Section] || !had || !bytes.Equal(old, p.HTML):
			switch {
			case p.Container != "" && (resent[p.Section] || !had):
				fmt.Fprintf(&out, `<%s hx-swap-oob="beforeend:#%s">`, p.Wrap, p.Container)
				out.Write(p.HTML)
				fmt.Fprintf(&out, `</%s>`, p.Wrap)
			case p.Container == "" && p.Wrap != "":
				fmt.Fprintf(&out, `<%s hx-swap-oob="innerHTML:#%s">`, p.Wrap, p.ID)
				out.Write(p.HTML)
				fmt.Fprintf(&out, `</%s>`, p.Wrap)
			default:
				out.Write(p.HTML)
			}
		}
		if d.tally != nil {
			d.tally(p.ID, out.Len()-before)
		}
	}
	sections := map[string]string{}
	for _, p := range parts {
		sections[p.ID] = p.Section
	}
	gone := make([]string, 0)
	for id := range d.sent {
		if _, ok := now[id]; !ok {
			gone = append(gone, id)
		}
	}
	slices.Sort(gone)
	for _, id := range gone {
		// A part that is gone: delete it, unless its section was just
		// swapped without it.
		if s, ok := d.sections[id]; ok && resent[s] {
			continue
		}
		fmt.Fprintf(&out, `<div id="%s" hx-swap-oob="delete"></div>`, id)
	}
	d.sent, d.sections = now, sections
	if out.Len() == 0 {
		return nil
	}
	return out.Bytes()
}
