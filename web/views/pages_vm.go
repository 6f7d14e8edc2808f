package views

import "net/url"

// wsURL is the address of a lab's websocket; with a scenario, it asks for
// that scenario's frames only.
func wsURL(lab, scenario string) string {
	u := "/labs/" + lab + "/ws"
	if scenario != "" {
		u += "?scenario=" + url.QueryEscape(scenario)
	}
	return u
}
