package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"
)

// procRSS returns process pid's resident memory now (VmRSS) in MB.
func procRSS(t *testing.T, pid int) float64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}

// loadAvg returns the machine's load averages, for the record.
func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// TestMeasureWatchedLabs measures what the README's figures for 2,000
// participants rest on; it runs only when RLSLAB_MEASURE_LABS is set (the
// number of labs, e.g. 40). One instance on its own stock PostgreSQL
// server, behind HAProxy with deploy/haproxy.cfg: the labs are made one
// after another (time and disk per lab), each gets two live views through
// HAProxy (its owner and a facilitator), and every lab runs lesson 1 at
// teaching pace again and again for RLSLAB_MEASURE_SECONDS (default 60);
// the instance's CPU and memory, HAProxy's CPU and the frames through it
// are read over that window, beside the instance idle with the labs open.
func TestMeasureWatchedLabs(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("RLSLAB_MEASURE_LABS"))
	if n <= 0 {
		t.Skip("set RLSLAB_MEASURE_LABS to the number of labs to measure")
	}
	window := 60 * time.Second
	if s, _ := strconv.Atoi(os.Getenv("RLSLAB_MEASURE_SECONDS")); s > 0 {
		window = time.Duration(s) * time.Second
	}
	srv := startPgCtlServer(t)
	tmp := traversableTempDir(t)
	child := startServeChild(t, tmp, "-addr", "127.0.0.1:0", "-db", srv.URL, "-spares", "-1", "-labs-per-address", "0",
		"-max-labs", fmt.Sprint(n+10), "-proxy-addr", "off", "-instance", uniqueName("measure"))
	direct := child.listening(t, 2*time.Minute)
	addr := strings.TrimPrefix(direct, "http://")
	base := startHAProxy(t, addr, addr)
	pid := child.cmd.Process.Pid
	ctx := context.Background()
	t.Logf("load average at start: %s", loadAvg())

	var budget int
	conn, err := pgx.Connect(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var maxConns, reserved int
	if err := conn.QueryRow(ctx, `SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int`).Scan(&maxConns, &reserved); err != nil {
		t.Fatal(err)
	}
	child.waitLine(t, time.Minute, "connection budget shared")
	for _, l := range strings.Split(child.log(), "\n") {
		if i := strings.Index(l, " budget="); i >= 0 {
			budget, _ = strconv.Atoi(strings.Fields(l[i+len(" budget="):])[0])
			break
		}
	}
	t.Logf("server: max_connections %d, reserved %d, rlslab's budget %d", maxConns, reserved, budget)

	rssEmpty := procRSS(t, pid)
	// Labs, one after another, as many browsers.
	type lab struct {
		id string
		c  *http.Client
	}
	labs := make([]lab, n)
	begin := time.Now()
	for i := range labs {
		c := client(t)
		labs[i] = lab{newLab(t, c, base), c}
	}
	made := time.Since(begin)
	var dbBytes, dbCount int64
	if err := conn.QueryRow(ctx, `SELECT coalesce(sum(pg_database_size(datname)), 0), count(*) FROM pg_database WHERE datname LIKE 'lab\_%'`).Scan(&dbBytes, &dbCount); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d labs made one after another in %s: %.2f s a lab; %d lab databases, %.1f MB each (load average %s)",
		n, made.Round(time.Millisecond), made.Seconds()/float64(n), dbCount, float64(dbBytes)/float64(dbCount)/1e6, loadAvg())

	// Two live views per lab, through HAProxy.
	var frames, bytes atomic.Int64
	var wg sync.WaitGroup
	var views []*websocket.Conn
	var mu sync.Mutex
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second}
	for _, l := range labs {
		for range 2 {
			ws, _, err := d.Dial("ws"+strings.TrimPrefix(base, "http")+"/labs/"+l.id+"/ws", http.Header{"Origin": {base}})
			if err != nil {
				t.Fatalf("live view of %s: %v", l.id, err)
			}
			mu.Lock()
			views = append(views, ws)
			mu.Unlock()
			wg.Go(func() {
				for {
					_, msg, err := ws.ReadMessage()
					if err != nil {
						return
					}
					frames.Add(1)
					bytes.Add(int64(len(msg)))
				}
			})
		}
	}
	defer func() {
		for _, ws := range views {
			ws.Close()
		}
		wg.Wait()
	}()

	// Idle with the labs open and watched.
	idle := 15 * time.Second
	cpu0, f0 := procCPU(pid, false), frames.Load()
	time.Sleep(idle)
	cpuIdle, fIdle := procCPU(pid, false)-cpu0, frames.Load()-f0
	rssIdle := procRSS(t, pid)
	t.Logf("idle, %d labs with %d live views: RSS %.0f MB (%.0f MB before the labs), CPU %.1f%% of a core, %d frames in %s (load average %s)",
		n, len(views), rssIdle, rssEmpty, 100*cpuIdle.Seconds()/idle.Seconds(), fIdle, idle, loadAvg())

	// Every lab runs lesson 1 at teaching pace, again and again.
	hpids := childrenNamed(os.Getpid(), "haproxy")
	var hcpu0 time.Duration
	for _, p := range hpids {
		hcpu0 += procCPU(p, false)
	}
	stop := make(chan struct{})
	var runs atomic.Int64
	var rwg sync.WaitGroup
	for _, l := range labs {
		rwg.Go(func() {
			for wait := 100 * time.Millisecond; ; {
				select {
				case <-stop:
					return
				case <-time.After(wait):
				}
				code, _ := call(t, l.c, "POST", base+"/labs/"+l.id+"/runs", "application/json", `{"scenario":"set-leak","variant":"session-set","speed":"1"}`)
				if code == http.StatusAccepted {
					runs.Add(1)
					wait = 100 * time.Millisecond
				} else {
					wait = min(2*wait, 2*time.Second) // running: ask again later
				}
			}
		})
	}
	cpu0, f0, b0 := procCPU(pid, false), frames.Load(), bytes.Load()
	var peakBackends int
	start := time.Now()
	for time.Since(start) < window {
		time.Sleep(time.Second)
		var b int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'`).Scan(&b); err == nil {
			peakBackends = max(peakBackends, b)
		}
	}
	took := time.Since(start)
	cpuRun, fRun, bRun := procCPU(pid, false)-cpu0, frames.Load()-f0, bytes.Load()-b0
	var hcpu time.Duration
	for _, p := range hpids {
		hcpu += procCPU(p, false)
	}
	hcpu -= hcpu0
	rssRun := procRSS(t, pid)
	close(stop)
	rwg.Wait()
	t.Logf("running, %d labs with %d live views for %s: %d runs started, RSS %.0f MB, CPU %.1f%% of a core (%.2f%% a lab), peak client backends %d; "+
		"%d frames through HAProxy (%.0f a second, %.0f KB/s), HAProxy CPU %.1f%% of a core (load average %s)",
		n, len(views), took.Round(time.Second), runs.Load(), rssRun, 100*cpuRun.Seconds()/took.Seconds(), 100*cpuRun.Seconds()/took.Seconds()/float64(n), peakBackends,
		fRun, float64(fRun)/took.Seconds(), float64(bRun)/took.Seconds()/1e3, 100*hcpu.Seconds()/took.Seconds(), loadAvg())
}
