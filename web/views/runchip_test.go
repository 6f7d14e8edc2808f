package views

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions/store"
)

// TestRecentRunsChipNamesTheOutcome: each run in a recent-runs list shows
// its outcome kind as a word (a breach with no leaked request is not "no
// leak", a failed-closed run says so), with "outcome:" for a screen
// reader; a recording without a kind falls back on its leak count.
func TestRecentRunsChipNamesTheOutcome(t *testing.T) {
	at := time.Date(2026, 12, 5, 21, 0, 0, 0, time.UTC)
	runs := []store.RecordingSummary{
		{ID: "r5", Scenario: "side-channels", Variant: "truncate", Status: engine.StatusDone, Kind: engine.KindBreach, FinishedAt: at},
		{ID: "r4", Scenario: "side-channels", Variant: "unique-probe", Status: engine.StatusDone, Kind: engine.KindDisclosure, FinishedAt: at},
		{ID: "r3", Scenario: "set-leak", Variant: "tx-local-bad", Status: engine.StatusDone, Kind: engine.KindFailedClosed, FinishedAt: at},
		{ID: "r2", Scenario: "set-leak", Variant: "session-set", Status: engine.StatusDone, Kind: engine.KindLeak, Leaks: 2, FinishedAt: at},
		{ID: "r1", Scenario: "set-leak", Variant: "old", Status: engine.StatusDone, Leaks: 1, FinishedAt: at},
		{ID: "r0", Scenario: "split-calls", Variant: "set-param", Status: engine.StatusDone, Kind: engine.KindError, FinishedAt: at},
	}
	var buf bytes.Buffer
	if err := RunList(runs, len(runs)).Render(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	html := buf.String()
	chip := regexp.MustCompile(`<li data-run="(\w+)"[^>]*>(?s:.*?)<span class="([\w -]+)" data-kind="([\w-]*)"><span class="sr-only">outcome: </span>([^<]+)</span>`)
	got := map[string]string{}
	for _, m := range chip.FindAllStringSubmatch(html, -1) {
		got[m[1]] = m[3] + "|" + m[4] + "|" + m[2]
	}
	for id, want := range map[string]string{
		"r5": "breach|breach|leak-chip run-chip",
		"r4": "disclosure|disclosure|leak-chip run-chip",
		"r3": "failed-closed|failed closed|ok-chip run-chip",
		"r2": "leak|leak|leak-chip run-chip",
		"r1": "leak|leak|leak-chip run-chip",
		"r0": "error|error|kind-chip run-chip",
	} {
		if got[id] != want {
			t.Errorf("run %s: chip %q, want %q", id, got[id], want)
		}
	}
	if strings.Contains(html, "no leak") || strings.Contains(html, "leaked") {
		t.Errorf("the list still counts leaks: %s", html)
	}
}

// TestCompareHeadNamesTheOutcome: a comparison's heading says a run's
// outcome kind, not "0 leaked" for a breach.
func TestCompareHeadNamesTheOutcome(t *testing.T) {
	var buf bytes.Buffer
	if err := compareHead(RunSummary{ID: "r1", Variant: "truncate", Status: engine.StatusDone, Kind: engine.KindBreach, Frames: 9}).Render(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	html := buf.String()
	if !strings.Contains(html, `data-kind="breach"><span class="sr-only">outcome: </span>breach</span>`) || strings.Contains(html, "leaked") {
		t.Errorf("comparison heading of a breach: %s", html)
	}
}
