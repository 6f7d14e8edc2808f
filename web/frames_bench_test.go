package web_test

import (
	"bytes"
	"compress/flate"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
	"github.com/rlslab/rlslab/web"
	"github.com/rlslab/rlslab/web/live"
)

// recording is the sequence of states a watcher's hub would have rendered
// during one real run: a snapshot each time the state changed, no sooner
// than live.FrameInterval after the previous one.
type recording struct {
	name   string
	states []engine.State
}

// recordRun runs scenario/variant at speed in a fresh lab on the test
// PostgreSQL and records the states a hub would render.
func recordRun(tb testing.TB, name, scenario, variant, speed string, params map[string]string) recording {
	tb.Helper()
	labs := sessionstest.MustOpenManager(tb, sessions.Config{MaxLabs: 2})
	lab := sessionstest.MustCreateLab(tb, labs, "bench-owner-00000000000000000000")
	sp, err := engine.ParseSpeed(speed)
	if err != nil {
		tb.Fatal(err)
	}
	changes, cancel := lab.Tracker().Subscribe()
	defer cancel()
	rec := recording{name: name, states: []engine.State{lab.Tracker().Snapshot()}}
	if err := lab.Start(sessions.RunRequest{Scenario: scenario, Variant: variant, Speed: sp, Params: params}); err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		ctx, c := context.WithTimeout(context.Background(), 3*time.Minute)
		defer c()
		done <- lab.Wait(ctx)
	}()
	for {
		select {
		case err := <-done:
			if err != nil {
				tb.Fatalf("run %s/%s: %v", scenario, variant, err)
			}
			rec.states = append(rec.states, lab.Tracker().Snapshot())
			return rec
		case <-changes:
			rec.states = append(rec.states, lab.Tracker().Snapshot())
			time.Sleep(live.FrameInterval) // the hub's pace: at most 20 frames a second
		}
	}
}

var (
	recordOnce sync.Once
	recordings []recording
)

// benchRecordings records, once per test binary, lesson 1 (set-leak,
// session-set) at 1× and the shared-pool crowd (conn-per-user) at full
// speed.
func benchRecordings(b *testing.B) []recording {
	recordOnce.Do(func() {
		recordings = []recording{
			recordRun(b, "set-leak session-set 1x", "set-leak", engine.PatternSessionSet, "1", nil),
			recordRun(b, "shared-pool conn-per-user max", "shared-pool", "conn-per-user", "max", nil),
		}
	})
	if recordings == nil {
		b.Fatal("recording failed")
	}
	return recordings
}

// deflated is the size of frame compressed the way the websocket's
// permessage-deflate compresses one message (no context kept between
// messages, level 1).
func deflated(frame []byte) int {
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, 1)
	_, _ = w.Write(frame)
	_ = w.Flush()
	return buf.Len()
}

// BenchmarkFrameBytes renders every recorded state the way the server
// sends it to one watching browser (the hub renders a frame, the websocket
// sends what changed since its last message) and reports the mean bytes
// per message sent, before and after compression. Run it with
//
//	go test -run '^$' -bench FrameBytes -benchtime 1x ./web/
func BenchmarkFrameBytes(b *testing.B) {
	for _, rec := range benchRecordings(b) {
		b.Run(rec.name, func(b *testing.B) {
			var raw, wire, frames int
			var tally map[string]int
			for b.Loop() {
				raw, wire, frames = 0, 0, 0
				tally = map[string]int{}
				msgs, err := web.NextMessages(scenarios.DefaultCatalog(), rec.states, tally)
				if err != nil {
					b.Fatal(err)
				}
				for _, out := range msgs {
					if len(out) == 0 {
						continue
					}
					frames++
					raw += len(out)
					wire += deflated(out)
				}
			}
			if testing.Verbose() {
				for k, n := range tally {
					b.Logf("%-14s %8d bytes in %d messages", k, n, frames)
				}
			}
			b.ReportMetric(float64(raw)/float64(frames), "bytes/frame")
			b.ReportMetric(float64(wire)/float64(frames), "deflated-bytes/frame")
			b.ReportMetric(float64(frames), "frames")
		})
	}
}
