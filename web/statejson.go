package web

import (
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
)

// GET /labs/{id}/state.json serves a lab's state as sessions.StateDoc, the
// document a recording keeps of each frame. The engine's State is what the
// scenarios fill; the document is what state.json and recordings promise
// their readers: its names are spelled out in sessions, so a rename or a
// removed tag in the engine cannot change the public JSON (the conversion
// stops compiling, or TestStateJSONCarriesEveryField fails, instead). The
// field names are pinned by testdata/state-json-fields.golden.

// stateJSON is a lab's live state as state.json serves it.
type stateJSON = sessions.StateDoc

// stateJSONOf converts a lab's state into state.json's document.
func stateJSONOf(st engine.State) stateJSON { return sessions.StateDocOf(st) }
