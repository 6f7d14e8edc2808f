package views

import (
	"net/url"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// wsURL is the address of a lab's websocket; with a scenario, it asks for
// that scenario's frames only.
func wsURL(lab, scenario string) string {
	u := "/labs/" + lab + "/ws"
	if scenario != "" {
		u += "?scenario=" + url.QueryEscape(scenario)
	}
	return u
}

// outcomeChipClass colours a chip of outcome kind: red when data crossed
// tenants, green when nothing did, plain otherwise (an error, a
// measurement).
func outcomeChipClass(kind string) string {
	switch {
	case engine.Crossed(kind):
		return "leak-chip"
	case kind == engine.KindNone || kind == engine.KindFailedClosed:
		return "ok-chip"
	}
	return "kind-chip"
}
