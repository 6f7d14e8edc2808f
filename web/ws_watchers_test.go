package web_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
	"github.com/rlslab/rlslab/static"
	"github.com/rlslab/rlslab/web"
)

// dropLog is a log handler that reports each "websocket dropped" record.
type dropLog struct{ dropped chan string }

func (d dropLog) Enabled(context.Context, slog.Level) bool { return true }
func (d dropLog) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "websocket dropped") {
		select {
		case d.dropped <- r.Message:
		default:
		}
	}
	return nil
}
func (d dropLog) WithAttrs([]slog.Attr) slog.Handler { return d }
func (d dropLog) WithGroup(string) slog.Handler      { return d }

// serveLabs serves the web handler alone (no store) over labs, logging to
// log; it returns the server's address.
func serveLabs(tb testing.TB, labs *sessions.Manager, log *slog.Logger) string {
	tb.Helper()
	ls, err := lessons.Load(lessons.Content(), scenarios.DefaultCatalog())
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	handler := web.NewServer(labs, ls, static.FS(), log)
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() {
		handler.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return ln.Addr().String()
}

// dialRaw opens a lab's websocket by hand on a bare TCP connection with a
// small receive buffer, and never reads from it: not the server's answer,
// not a frame, not a ping.
func dialRaw(t *testing.T, addr, lab string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	req := fmt.Sprintf("GET /labs/%s/ws HTTP/1.1\r\nHost: %s\r\nOrigin: http://%s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", lab, addr, addr)
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestWebsocketThatDoesNotReadIsDropped opens a websocket that never reads
// next to one that reads, while a run plays: the server drops the first
// within 10 s (the fault budget), and the second, open longer than the
// time allowed between pongs, still gets the next run's frames.
func TestWebsocketThatDoesNotReadIsDropped(t *testing.T) {
	t.Parallel()
	dropped := make(chan string, 1)
	log := slog.New(dropLog{dropped: dropped})
	labs := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 1})
	lab := sessionstest.MustCreateLab(t, labs, "ws-drop-owner-00000000000000000000")
	addr := serveLabs(t, labs, log)

	reader, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/labs/"+lab.ID+"/ws", http.Header{"Origin": {"http://" + addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	frames := make(chan string, 1024)
	readErr := make(chan error, 1)
	go func() {
		for {
			_, b, err := reader.ReadMessage()
			if err != nil {
				readErr <- err
				close(frames)
				return
			}
			frames <- string(b)
		}
	}()
	if f := <-frames; !strings.Contains(f, `data-status="idle"`) {
		t.Fatalf("first frame is not the idle state: %.200s", f)
	}

	if err := lab.Start(sessions.RunRequest{Scenario: "set-leak", Variant: engine.PatternSessionSet, Speed: engine.Speed{Factor: 1}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	dialRaw(t, addr, lab.ID)
	select {
	case <-dropped:
		t.Logf("the websocket that does not read was dropped after %v", time.Since(start).Round(time.Millisecond))
	case err := <-readErr:
		t.Fatalf("the reading websocket ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("a websocket that does not read is still open after 10 s")
	}

	// The reader has been open longer than the pongs' deadline; it keeps
	// getting frames: the next run, to its end.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := lab.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lab.Start(sessions.RunRequest{Scenario: "set-leak", Variant: engine.PatternTxLocal, Speed: engine.Speed{Max: true}}); err != nil {
		t.Fatal(err)
	}
	runs := 0
	for f := range frames {
		if strings.Contains(f, `data-status="running"`) {
			runs++
		}
		if runs > 0 && strings.Contains(f, `data-status="done"`) {
			return
		}
	}
	t.Fatalf("the reading websocket ended before the second run did: %v", <-readErr)
}

// watchersMemory opens n reading websockets on a lab that shows a finished
// run and returns the heap and stack bytes they hold per watcher, server
// and client side together, once each has its first frame.
func watchersMemory(tb testing.TB, n int) float64 {
	tb.Helper()
	labs := sessionstest.MustOpenManager(tb, sessions.Config{MaxLabs: 1})
	lab := sessionstest.MustCreateLab(tb, labs, "ws-mem-owner-00000000000000000000")
	// The crowd through one small pool: as many request rows as the
	// conn-per-user crowd (60.7 KB a watcher with that run, 62.9 KB with
	// this one), without its ~300 refused server processes (17.4 CPU-s
	// for the test against 8.3).
	sessionstest.MustRun(tb, lab, "shared-pool", "shared-pool", nil)
	addr := serveLabs(tb, labs, nil)
	dialer := websocket.Dialer{ReadBufferSize: 512, WriteBufferSize: 512}
	// One watcher first, so that the hub and its rendered frame are not
	// counted per watcher.
	first, _, err := dialer.Dial("ws://"+addr+"/labs/"+lab.ID+"/ws", http.Header{"Origin": {"http://" + addr}})
	if err != nil {
		tb.Fatal(err)
	}
	defer first.Close()
	if _, _, err := first.ReadMessage(); err != nil {
		tb.Fatal(err)
	}
	measure := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc + m.StackInuse
	}
	before := measure()
	conns := make([]*websocket.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, _, err := dialer.Dial("ws://"+addr+"/labs/"+lab.ID+"/ws", http.Header{"Origin": {"http://" + addr}})
		if err != nil {
			tb.Fatal(err)
		}
		conns = append(conns, c)
		if _, _, err := c.ReadMessage(); err != nil {
			tb.Fatal(err)
		}
		// Keep reading (pongs are answered while reading), as a browser.
		go func() {
			for {
				if _, _, err := c.NextReader(); err != nil {
					return
				}
			}
		}()
	}
	after := measure()
	return float64(int64(after)-int64(before)) / float64(n)
}

// BenchmarkWatcherMemory reports the bytes one watcher holds, server and
// client side together. Run it with
//
//	go test -run '^$' -bench WatcherMemory -benchtime 1x ./web/
func BenchmarkWatcherMemory(b *testing.B) {
	var per float64
	for b.Loop() {
		per = watchersMemory(b, 200)
	}
	b.ReportMetric(per, "B/watcher")
}

// TestWebsocketMemoryPerWatcherIsBounded checks what a watcher costs: 100
// watchers of a lab showing a crowd's run hold under 96 KiB each, server
// and client together (each gets the whole state as its first frame; the
// server keeps only references to the hub's frame).
func TestWebsocketMemoryPerWatcherIsBounded(t *testing.T) {
	per := watchersMemory(t, 100)
	t.Logf("%.0f bytes per watcher (server and client)", per)
	if per > 96<<10 {
		t.Errorf("%.0f bytes per watcher, want under %d", per, 96<<10)
	}
}
