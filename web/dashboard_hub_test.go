package web_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/web"
)

// countingWorkshops is the real workshop service, counting its board reads.
type countingWorkshops struct {
	web.Workshops
	boards atomic.Int64
}

func (c *countingWorkshops) Board(ctx context.Context, id string) (sessions.Board, error) {
	c.boards.Add(1)
	return c.Workshops.Board(ctx, id)
}

// mustStartCountingServer serves rlslab as mustStartServer does, logging
// to log (nil: nowhere), its workshop service counting board reads.
func mustStartCountingServer(tb testing.TB, cfg sessions.Config, log *slog.Logger) (*testServer, *countingWorkshops) {
	tb.Helper()
	var counted *countingWorkshops
	s := mustStartServerWith(tb, cfg, serverOptions{log: log, services: func(sv web.Services) web.Services {
		counted = &countingWorkshops{Workshops: sv.Workshops}
		sv.Workshops = counted
		return sv
	}})
	return s, counted
}

// wsReader reads a websocket all the time, as a browser does (answering
// pings), and hands its messages on.
type wsReader struct {
	frames chan string
	err    chan error
}

// keepReading reads conn until it fails.
func keepReading(conn *websocket.Conn) *wsReader {
	r := &wsReader{frames: make(chan string, 4096), err: make(chan error, 1)}
	go func() {
		for {
			_, b, err := conn.ReadMessage()
			if err != nil {
				r.err <- err
				return
			}
			r.frames <- string(b)
		}
	}()
	return r
}

// until returns the first message that has want, or fails the test after
// 15 s without one.
func (r *wsReader) until(t *testing.T, what, want string) string {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case f := <-r.frames:
			if strings.Contains(f, want) {
				return f
			}
		case err := <-r.err:
			t.Fatalf("%s: the websocket ended: %v", what, err)
		case <-timeout:
			t.Fatalf("%s: no frame with %q within 15 s", what, want)
		}
	}
}

// TestDashboardTabsShareOneBoardRead opens ten dashboard tabs of one
// workshop: the facilitator's move to another lesson shows in all ten
// after one or two board reads (one a tick for the workshop), not one read
// per tab as when each tab ran its own loop of reads. When the workshop
// ends, every tab is told live.
func TestDashboardTabsShareOneBoardRead(t *testing.T) {
	t.Parallel()
	const tabs = 10
	s, counted := mustStartCountingServer(t, sessions.Config{MaxLabs: 2}, nil)
	w := mustCreateWorkshop(t, s, "Ten tabs", "set-leak", "shared-pool")
	fac := facilitatorClient(t, s, w)
	readers := make([]*wsReader, tabs)
	for i := range readers {
		conn, _, err := dialPath(t, s, fac, "/workshops/"+w.ID+"/ws")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		readers[i] = keepReading(conn)
		readers[i].until(t, "first frame", `data-joined="0"`)
	}

	// While a participant joins, the tabs watch: the reads per second
	// with ten tabs open.
	r0, t0 := counted.boards.Load(), time.Now()
	c := newBrowserClient(t)
	mustJoin(t, w, c, "Zoe")
	r1, t1 := counted.boards.Load(), time.Now()
	t.Logf("%d tabs: %d board reads in %v (%.1f a second)", tabs, r1-r0, t1.Sub(t0).Round(time.Millisecond), float64(r1-r0)/t1.Sub(t0).Seconds())

	for i, r := range readers {
		r.until(t, "tab "+strconv.Itoa(i)+" after the join", `data-name="Zoe"`)
	}

	// The facilitator moves to lesson 2: the reads it takes for every tab
	// to show it.
	r2 := counted.boards.Load()
	if code, body := do(t, fac, "POST", s.URL+"/workshops/"+w.ID+"/lesson", ctForm, "lesson=2", "Accept", ctJSON); code != http.StatusOK {
		t.Fatalf("move: %d %s", code, body)
	}
	for i, r := range readers {
		r.until(t, "tab "+strconv.Itoa(i)+" after the move", "at lesson 2:")
	}
	if n := counted.boards.Load() - r2; n >= tabs/2 {
		t.Errorf("%d board reads before %d tabs showed the move; want one or two (one a tick for the workshop)", n, tabs)
	} else {
		t.Logf("%d board reads before %d tabs showed the move", n, tabs)
	}

	if code, body := do(t, fac, "POST", s.URL+"/workshops/"+w.ID+"/end", "", "", "Accept", ctJSON); code != http.StatusOK {
		t.Fatalf("end: %d %s", code, body)
	}
	for i, r := range readers {
		r.until(t, "tab "+strconv.Itoa(i)+" after the end", "This workshop has ended")
	}
}

// TestDashboardSocketThatDoesNotReadIsDropped opens a dashboard websocket
// that never reads next to one that reads: the server drops the first
// within 10 s (as it does a lab's), and the second, open longer than the
// time allowed between pongs, still gets the next change.
func TestDashboardSocketThatDoesNotReadIsDropped(t *testing.T) {
	t.Parallel()
	dropped := make(chan string, 1)
	s, _ := mustStartCountingServer(t, sessions.Config{MaxLabs: 1}, slog.New(dropLog{dropped: dropped}))
	w := mustCreateWorkshop(t, s, "Idle tab", "set-leak", "shared-pool")
	fac := facilitatorClient(t, s, w)
	conn, _, err := dialPath(t, s, fac, "/workshops/"+w.ID+"/ws")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	reader := keepReading(conn)
	reader.until(t, "first frame", `data-joined="0"`)

	key := w.FacilitatorURL[strings.Index(w.FacilitatorURL, "?key=")+len("?key="):]
	addr := strings.TrimPrefix(s.URL, "http://")
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.(*net.TCPConn).SetReadBuffer(4096)
	req := "GET /workshops/" + w.ID + "/ws?key=" + key + " HTTP/1.1\r\nHost: " + addr + "\r\nOrigin: " + s.URL +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := raw.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	select {
	case <-dropped:
		t.Logf("the dashboard websocket that does not read was dropped after %v", time.Since(start).Round(time.Millisecond))
	case err := <-reader.err:
		t.Fatalf("the reading websocket ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("a dashboard websocket that does not read is still open after 10 s")
	}

	if code, body := do(t, fac, "POST", s.URL+"/workshops/"+w.ID+"/lesson", ctForm, "lesson=2", "Accept", ctJSON); code != http.StatusOK {
		t.Fatalf("move: %d %s", code, body)
	}
	reader.until(t, "the reading tab after the move", "at lesson 2:")
}
