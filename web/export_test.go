package web

import "strings"

// NextMessages turns frames, as the hub renders them, into the websocket
// messages one browser gets (nil: none sent for that frame). When tally is
// not nil it receives the bytes sent per kind of part (the part id without
// its number).
func NextMessages(frames [][]byte, tally map[string]int) [][]byte {
	d := &frameDiff{}
	if tally != nil {
		d.tally = func(id string, n int) { tally[strings.TrimRight(id, "0123456789_")] += n }
	}
	out := make([][]byte, len(frames))
	for i, f := range frames {
		out[i] = d.next(f)
	}
	return out
}
