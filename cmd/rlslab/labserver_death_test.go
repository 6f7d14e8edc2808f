package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// countTries holds the address of a crashed server and counts the
// connections made to it until stop is called (the server's port must be
// free again for it to start): every one of rlslab's retry loops comes
// here while the server is down, so a loop that does not back off shows
// as hundreds of connections a second.
func countTries(t *testing.T, addr string) (tries *atomic.Int64, stop func()) {
	t.Helper()
	var ln net.Listener
	var err error
	// The crashed postmaster's socket may take a moment to be released.
	waitFor(t, 10*time.Second, "the crashed server's port to be free", func() bool {
		ln, err = net.Listen("tcp", addr)
		return err == nil
	})
	tries = &atomic.Int64{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tries.Add(1)
			c.Close() // as a server that is gone: the connection ends at once
		}
	}()
	return tries, func() { ln.Close(); <-done }
}

// labsOn returns the lab databases on the server at url.
func labsOn(t *testing.T, ctx context.Context, url string) map[string]bool {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("lab databases on %s: %v", url, err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE 'lab\_%'`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, n := range names {
		out[n] = true
	}
	return out
}

// labTables lists the tables of database db on the server at url.
func labTables(t *testing.T, ctx context.Context, url, db string) []string {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = db
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return []string{"(cannot connect: " + err.Error() + ")"}
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY 1`)
	if err != nil {
		return []string{"(" + err.Error() + ")"}
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return []string{"(" + err.Error() + ")"}
	}
	return names
}

// TestFaultLabServerCrashesInEveryPhase runs one instance with two lab
// servers, the second of which crashes (pg_ctl stop -m immediate) twice:
// while spare sandboxes are being built on it, and while a run holds
// connections in a lab on it. Each time, new labs keep coming from the
// first server (never a spare left on the dead one); the dead server's lab
// says its database is not answering (its run ends failed, its state
// shows the outage, a new run is refused with 503); while the server is
// down rlslab's tries to reach it back off (counted at its port); and once
// it is started again, rlslab uses it again by itself: spares are built on
// it and its lab runs to the end.
func TestFaultLabServerCrashesInEveryPhase(t *testing.T) {
	t.Parallel()
	home := pgenvtest.MustServer(t)
	second := startPgCtlServer(t)
	secondAddr := fmt.Sprintf("127.0.0.1:%d", second.port)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	const spares = 4
	tmp := traversableTempDir(t)
	child := startServeChild(t, tmp, "-addr", "127.0.0.1:0", "-db", home.URL, "-lab-db", home.URL, "-lab-db", second.URL,
		"-spares", fmt.Sprint(spares), "-labs-per-address", "0", "-proxy-addr", "off", "-instance", uniqueName("two-servers"))
	base := child.listening(t, 2*time.Minute)
	t.Cleanup(func() {
		if t.Failed() {
			child.mu.Lock()
			defer child.mu.Unlock()
			var warns []string
			for _, l := range child.lines {
				if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
					warns = append(warns, l)
				}
			}
			t.Logf("rlslab's warnings:\n%s", strings.Join(warns, "\n"))
		}
	})

	// newLabsFromHome makes n labs for new browsers and checks that each
	// is on the first server.
	newLabsFromHome := func(n int) {
		t.Helper()
		for range n {
			id := newLab(t, client(t), base)
			if !labsOn(t, ctx, home.URL)["lab_"+id] {
				t.Errorf("lab %s, made while the second server is down, is not on the first", id)
			}
		}
	}
	// crashed holds the dead server's port for a while, then reports the
	// tries counted there.
	crashed := func(phase string, during func()) {
		t.Helper()
		tries, stop := countTries(t, secondAddr)
		begin := time.Now()
		during()
		// Long enough for every loop's backoff to reach seconds.
		if left := 15*time.Second - time.Since(begin); left > 0 {
			time.Sleep(left)
		}
		stop()
		n, took := tries.Load(), time.Since(begin)
		t.Logf("%s: %d tries to reach the dead server in %s", phase, n, took.Round(time.Millisecond))
		// A loop without a pause tries hundreds of times a second; each
		// loop that backs off (from half a second, doubling) a few times
		// in 15 s.
		if rate := float64(n) / took.Seconds(); rate > 5 {
			t.Errorf("%s: %d tries in %s to reach the dead server (%.1f a second): a retry loop does not back off", phase, n, took, rate)
		}
	}

	// readyOn returns the spare sandboxes the instance has ready on the
	// second server, as its lease in rlslab's tables says.
	var secondID string
	func() {
		conn, err := pgx.Connect(ctx, second.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if err := conn.QueryRow(ctx, `SELECT system_identifier::text FROM pg_control_system()`).Scan(&secondID); err != nil {
			t.Fatal(err)
		}
	}()
	readyOn := func() int {
		conn, err := pgx.Connect(ctx, home.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var n int
		if err := conn.QueryRow(ctx, `SELECT coalesce(sum(ready), 0) FROM rlslab.leases WHERE server = $1`, secondID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Phase 1: the second server crashes while spares are built on it.
	waitFor(t, 2*time.Minute, "spares to be built on the second server", func() bool {
		return len(labsOn(t, ctx, second.URL)) > 0
	})
	second.Crash()
	crashed("spares", func() { newLabsFromHome(3) })
	second.Start()
	waitFor(t, 2*time.Minute, "spares built on the second server again", func() bool {
		return readyOn() >= spares
	})

	// Phase 2: it crashes while a run holds connections in a lab on it.
	owner := client(t)
	var id string
	for i := 0; id == ""; i++ {
		if i == 20 {
			t.Fatal("20 labs and none on the second server")
		}
		c := client(t)
		got := newLab(t, c, base)
		if labsOn(t, ctx, second.URL)["lab_"+got] {
			id, owner = got, c
		}
	}
	// Paced live, the run is still querying when the server crashes (a
	// replayed run has finished on the database before its first frame
	// is shown).
	if code, body := call(t, owner, "POST", base+"/labs/"+id+"/runs", "application/json", `{"scenario":"set-leak","variant":"session-set","speed":"1","pacing":"live"}`); code != http.StatusAccepted {
		t.Fatalf("run: %d %s", code, body)
	}
	waitFor(t, time.Minute, "the run to hold connections", func() bool {
		st := state(t, owner, base, id)
		return st.Status == engine.StatusRunning && len(st.Connections) > 0
	})
	second.Crash()
	crashed("run", func() {
		// The run ends, failed, and says why; the lab's state says the
		// database does not answer.
		var last engine.State
		waitFor(t, 2*time.Minute, "the run on the dead server to end", func() bool {
			last = state(t, owner, base, id)
			if last.Status != engine.StatusRunning && last.Status != engine.StatusFailed {
				t.Fatalf("the run on the dead server ended %s (error %q, outage %q), want failed", last.Status, last.Error, last.Outage)
			}
			return last.Status == engine.StatusFailed
		})
		st := state(t, owner, base, id)
		if st.Error == "" || !strings.Contains(st.Outage, "not answering") {
			t.Errorf("the lab on the dead server: error %q, outage %q; want the run's error and the outage in words", st.Error, st.Outage)
		}
		t.Logf("the run on the dead server: %s, %q; outage %q", st.Status, st.Error, st.Outage)
		// A new run in it is refused with 503, in words.
		code, body := call(t, owner, "POST", base+"/labs/"+id+"/runs", "application/json", `{"scenario":"set-leak","variant":"session-set","speed":"max"}`)
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "not answering") {
			t.Errorf("a run in a lab on the dead server: %d %s, want 503 saying the database is not answering", code, body)
		}
		newLabsFromHome(3)
	})
	second.Start()
	// Recovered by itself: the lab runs to its end again.
	waitFor(t, 2*time.Minute, "the lab on the restarted server to take a run", func() bool {
		code, _ := call(t, owner, "POST", base+"/labs/"+id+"/runs", "application/json", `{"scenario":"set-leak","variant":"session-set","speed":"max"}`)
		return code == http.StatusAccepted
	})
	waitFor(t, 2*time.Minute, "the run on the restarted server to end", func() bool {
		st := state(t, owner, base, id)
		return st.Status != engine.StatusRunning && st.Status != engine.StatusQueued
	})
	if st := state(t, owner, base, id); st.Status != engine.StatusDone || st.Outage != "" {
		// Seen once before maintenance connections committed
		// synchronously: the lab, a spare made just before the crash,
		// kept its database and lost its tables (42P01).
		t.Errorf("after the restart lab %s's run ended %s, outage %q, error %q; its database holds tables %v",
			id, st.Status, st.Outage, st.Error, labTables(t, ctx, second.URL, "lab_"+id))
	}
	waitFor(t, 2*time.Minute, "spares built on the second server after the second crash", func() bool {
		return readyOn() >= spares
	})
}
