package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/web/views"
)

// TestBenchReadsTheStatusBar: the bench finds the status and the frame
// number in the status bar as the live view renders it (it read nothing
// once another attribute came between them, and every run looked unstarted).
func TestBenchReadsTheStatusBar(t *testing.T) {
	st := engine.State{Scenario: "set-leak", Variant: "session-set", Status: engine.StatusRunning, Frame: 3}
	var buf bytes.Buffer
	if err := views.StatusBar(views.NewLive(st, nil)).Render(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	m := statusAttrs.FindSubmatch(buf.Bytes())
	if m == nil || string(m[1]) != engine.StatusRunning || string(m[2]) != "3" {
		t.Fatalf("status bar %s: read %q", buf.String(), m)
	}
}
