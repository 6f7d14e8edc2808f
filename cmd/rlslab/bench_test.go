package main

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

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

// TestStatCPU reads the CPU times of a /proc/PID/stat line whose command
// name holds a space and a parenthesis, with and without the children that
// have exited, and refuses text that is not one.
func TestStatCPU(t *testing.T) {
	line := "4242 (postgres: a) b) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 300 200 20 0 1 0 100 1000 10"
	if got, want := statCPU(line, false), 2*time.Second; got != want {
		t.Errorf("own CPU = %v, want %v", got, want)
	}
	if got, want := statCPU(line, true), 7*time.Second; got != want {
		t.Errorf("CPU with children = %v, want %v", got, want)
	}
	for _, bad := range []string{"", "no parenthesis", "1 (x) S 1 2"} {
		if got := statCPU(bad, true); got != -1 {
			t.Errorf("statCPU(%q) = %v, want -1", bad, got)
		}
	}
	if procCPU(os.Getpid(), false) < 0 {
		t.Errorf("procCPU cannot read this process")
	}
}
