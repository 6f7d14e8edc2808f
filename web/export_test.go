package web

import (
	"strings"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/web/views"
)

// NextMessages renders states as one lab's hub renders its frames, and
// turns them into the websocket messages one browser of the lab view gets
// (nil: none sent for that frame). When tally is not nil it receives the
// bytes sent per kind of part (the part id without its number).
func NextMessages(cat *engine.Catalog, states []engine.State, tally map[string]int) ([][]byte, error) {
	d := &frameDiff{}
	if tally != nil {
		d.tally = func(id string, n int) { tally[strings.TrimRight(id, "0123456789_")] += n }
	}
	rows := views.NewRowCache()
	out := make([][]byte, len(states))
	for i, st := range states {
		f, err := renderLabFrame(st, cat, rows)
		if err != nil {
			return nil, err
		}
		out[i] = d.next(f.parts)
	}
	return out, nil
}
