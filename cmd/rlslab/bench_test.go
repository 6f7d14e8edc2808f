package main

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/rlslab/rlslab/scenarios"
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

// TestAlsoPhases checks -also: "all" is every variant but the crowd's, a
// list keeps its order, and a name that is not in the catalog is refused.
func TestAlsoPhases(t *testing.T) {
	all, err := alsoPhases("all", "1")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, p := range all {
		seen[p.run.scenario+"/"+p.run.variant] = true
	}
	if !seen["set-leak/session-set"] || !seen["rls-bypass/owner"] || seen["shared-pool/conn-per-user"] || seen["shared-pool/shared-pool"] {
		t.Errorf("-also all: %v", seen)
	}
	two, err := alsoPhases(" rls-bypass/owner, set-leak/tx-local", "2")
	if err != nil || len(two) != 2 || two[0].run.variant != "owner" || two[1].run.variant != "tx-local" || two[1].run.speed != "2" {
		t.Errorf("-also list: %+v, %v", two, err)
	}
	for _, bad := range []string{"set-leak", "nope/x", "set-leak/nope", "/", "set-leak/tx-local,"} {
		if _, err := alsoPhases(bad, "1"); err == nil {
			t.Errorf("-also %q: no error", bad)
		}
	}
}

// FuzzAlsoPhases feeds -also anything: it is refused with an error, or
// every phase it makes names a variant of the catalog.
func FuzzAlsoPhases(f *testing.F) {
	for _, s := range []string{"all", "set-leak/tx-local", "set-leak/tx-local,rls-bypass/owner", "", "x/y", "set-leak//", ",,"} {
		f.Add(s)
	}
	cat := scenarios.DefaultCatalog()
	f.Fuzz(func(t *testing.T, v string) {
		phases, err := alsoPhases(v, "1")
		if err != nil {
			if phases != nil {
				t.Fatalf("refused %q but made phases", v)
			}
			return
		}
		for _, p := range phases {
			sc, err := cat.Lookup(p.run.scenario)
			if err != nil {
				t.Fatalf("%q made a phase of %q: %v", v, p.run.scenario, err)
			}
			if _, ok := sc.Variant(p.run.variant); !ok {
				t.Fatalf("%q made a phase of %s/%s", v, p.run.scenario, p.run.variant)
			}
		}
	})
}
