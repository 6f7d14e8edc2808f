package views

import (
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions/store"
)

// RunChip is the chip a listed run shows: its outcome kind in a word, as
// the outcome bar names it, and the class that colours it.
type RunChip struct {
	Kind  string // engine.Judge's kind, or "" when the recording has none
	Label string // the chip's word: "leak", "breach", "failed closed", ...
	Class string
}

// RunChipOf is the chip of a run with outcome kind, leaks leaked requests
// and status. A recording made before outcomes had a kind falls back on
// its status and leak count.
func RunChipOf(kind string, leaks int, status string) RunChip {
	if kind == "" {
		switch {
		case leaks > 0:
			kind = engine.KindLeak
		case status == engine.StatusFailed || status == engine.StatusCancelled:
			kind = engine.KindError
		default:
			return RunChip{Label: "no leak counted", Class: "kind-chip"}
		}
	}
	label := engine.KindLabel(kind)
	if label == "" {
		label = kind
	}
	return RunChip{Kind: kind, Label: label, Class: outcomeChipClass(kind)}
}

// summaryChip is the chip of a listed recording.
func summaryChip(r store.RecordingSummary) RunChip { return RunChipOf(r.Kind, r.Leaks, r.Status) }
