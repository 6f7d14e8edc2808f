package views

import (
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// TestOutageSaysItOnce: during an outage the outcome bar says "The
// database is not answering." once, and then what else the message says
// ("Retrying."), not the same sentence again in lower case.
func TestOutageSaysItOnce(t *testing.T) {
	for msg, want := range map[string]string{
		"the database is not answering; retrying": "Retrying.",
		"the database is not answering":           "",
		"connection refused by 127.0.0.1:5432":    "Connection refused by 127.0.0.1:5432.",
	} {
		v := NewLive(engine.State{Lab: "abc", Status: engine.StatusIdle, Outage: msg}, nil)
		if o := v.Outcome(); o.Kind != "outage" || o.Head != "The database is not answering." || o.Detail != want {
			t.Errorf("outage %q: %+v, want detail %q", msg, o, want)
		}
	}
}
