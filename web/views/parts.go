package views

import (
	"bytes"
	"context"

	"github.com/a-h/templ"
)

// Part is one piece of a websocket frame: a section of the live view, or an
// element inside one, with a stable element id.
type Part struct {
	ID string
	// Section is the id of the section the part sits in ("" for a
	// section): when a section is swapped, its parts must be sent again.
	Section string
	// Container is the id of the element an item is appended to when it is
	// new ("" for a part whose place the section already holds), and Wrap
	// the tag that may hold it in a fragment (div for a request row). A
	// part with Wrap but no Container is the inside of the element with
	// its id (svg: a timeline lane).
	Container, Wrap string
	HTML            []byte
}

// FrameParts renders the live view of v as parts, in document order: each
// section without its items, then the items. Every part carries
// hx-swap-oob, so that any subset of them is a valid frame.
func FrameParts(v Live) ([]Part, error) { return framePartsWith(v, nil) }

// FrameParts is the package function FrameParts, with the finished request
// rows taken from c where it has them.
func (c *RowCache) FrameParts(v Live) ([]Part, error) { return framePartsWith(v, c) }

func framePartsWith(v Live, rows *RowCache) ([]Part, error) {
	v.Frame = true
	var parts []Part
	add := func(id, section, container, wrap string, c templ.Component) error {
		var buf bytes.Buffer
		if err := c.Render(context.Background(), &buf); err != nil {
			return err
		}
		parts = append(parts, Part{ID: id, Section: section, Container: container, Wrap: wrap, HTML: buf.Bytes()})
		return nil
	}
	sections := []struct {
		id string
		c  templ.Component
	}{
		{"outcome", OutcomeBar(v)}, {"status", StatusBar(v)}, {"timeline", TimelinePanel(v)},
		{"conns", ConnsPanel(v)}, {"counts", ConnChartPanel(v)}, {"pairing", PairingPanel(v)},
		{"hidden-vars", HiddenVars(v)}, {"requests", RequestLog(v)}, {"findings", Findings(v)}, {"charts", ChartsPanel(v)},
	}
	for _, s := range sections {
		if err := add(s.id, "", "", "", s.c); err != nil {
			return nil, err
		}
	}
	for _, c := range v.Connections {
		if err := add(ConnID(c), "conns", "conn-boxes", "div", ConnBox(v, c)); err != nil {
			return nil, err
		}
	}
	if err := rows.render(v, func(id string, html []byte) {
		parts = append(parts, Part{ID: id, Section: "requests", Container: "request-rows", Wrap: "div", HTML: html})
	}); err != nil {
		return nil, err
	}
	if err := add("conn-chart", "counts", "", "", ConnChartView(v)); err != nil {
		return nil, err
	}
	for i, c := range v.Charts() {
		if err := add(ChartID(i), "charts", "", "", ChartItem(v, i, c)); err != nil {
			return nil, err
		}
	}
	if d := v.Timeline(); d != nil {
		for _, l := range d.Lanes {
			if err := add(LaneID(l), "timeline", "", "svg", TimelineLane(v, d, l)); err != nil {
				return nil, err
			}
		}
	}
	if err := add("requests-hidden", "requests", "", "", HiddenRequestsNote(v)); err != nil {
		return nil, err
	}
	return parts, nil
}
