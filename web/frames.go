package web

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"

	"github.com/rlslab/rlslab/web/views"
)

// A frame travels from the hub to each websocket as its parts, encoded by
// encodeParts: a magic line, then per part a header line "id section
// container wrap length" (a dash for an empty field) and the part's HTML.
// Each websocket sends its browser only the parts that changed since what
// that browser last got (see frameDiff), so a browser that skipped frames
// still ends up with the whole state.
const framesMagic = "rlslab-parts 1\n"

// encodeParts writes parts in the frame encoding.
func encodeParts(parts []views.Part) []byte {
	var b bytes.Buffer
	b.WriteString(framesMagic)
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, p := range parts {
		fmt.Fprintf(&b, "%s %s %s %s %d\n", p.ID, dash(p.Section), dash(p.Container), dash(p.Wrap), len(p.HTML))
		b.Write(p.HTML)
	}
	return b.Bytes()
}

// decodeParts reads a frame written by encodeParts.
func decodeParts(frame []byte) ([]views.Part, error) {
	rest, ok := bytes.CutPrefix(frame, []byte(framesMagic))
	if !ok {
		return nil, fmt.Errorf("frame: no parts header")
	}
	undash := func(b []byte) string {
		if string(b) == "-" {
			return ""
		}
		return string(b)
	}
	var parts []views.Part
	for len(rest) > 0 {
		line, after, ok := bytes.Cut(rest, []byte("\n"))
		if !ok {
			return nil, fmt.Errorf("frame: truncated part header")
		}
		f := bytes.Fields(line)
		if len(f) != 5 {
			return nil, fmt.Errorf("frame: bad part header %q", line)
		}
		n, err := strconv.Atoi(string(f[4]))
		if err != nil || n < 0 || n > len(after) {
			return nil, fmt.Errorf("frame: bad part length in %q", line)
		}
		parts = append(parts, views.Part{ID: string(f[0]), Section: undash(f[1]), Container: undash(f[2]), Wrap: undash(f[3]), HTML: after[:n]})
		rest = after[n:]
	}
	return parts, nil
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
// to frame, or nil when nothing changed. A frame that cannot be decoded is
// sent as it is.
func (d *frameDiff) next(frame []byte) []byte {
	parts, err := decodeParts(frame)
	if err != nil {
		return frame
	}
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
