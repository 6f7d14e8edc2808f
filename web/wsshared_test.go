package web

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/gorilla/websocket"
)

// wsPairs opens n websockets to a test server and returns the server's
// ends; a client asks for compression when compress(i) says so.
func wsPairs(tb testing.TB, n int, compress func(i int) bool) (server, client []*websocket.Conn) {
	tb.Helper()
	got := make(chan *websocket.Conn, n)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{WriteBufferSize: 16 << 10, EnableCompression: true}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		got <- c
	}))
	tb.Cleanup(srv.Close)
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	for i := range n {
		d := websocket.Dialer{EnableCompression: compress(i)}
		c, _, err := d.Dial(url, nil)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close() })
		client = append(client, c)
		s := <-got
		tb.Cleanup(func() { s.Close() })
		server = append(server, s)
	}
	return server, client
}

// frameMessage is a message like a lab frame's: about 12 KB of HTML rows.
func frameMessage(seed int) []byte {
	var b bytes.Buffer
	for i := range 60 {
		fmt.Fprintf(&b, `<tr id="req-%d" class="row tenant-%d"><td class="pid">%d</td><td><code>SELECT * FROM invoices</code></td><td class="setting">acme</td><td>%d rows</td></tr>`,
			i, i%3, 4000+seed+i, (seed*7+i)%11)
	}
	return b.Bytes()
}

func TestSharedMessagesEncodeOnceForEveryBrowser(t *testing.T) {
	// Browsers with and without compression, as a room's would be.
	server, client := wsPairs(t, 4, func(i int) bool { return i%2 == 0 })
	shared := newSharedMessages()
	msg := frameMessage(1)
	for i, s := range server {
		if err := shared.write(s, msg); err != nil {
			t.Fatal(err)
		}
		if i == 0 && shared.prepared(msg) {
			t.Fatal("a message written once was prepared: a lab with one watcher should write as before")
		}
	}
	if !shared.prepared(msg) {
		t.Fatal("the message written by four websockets was not prepared once for all")
	}
	other := frameMessage(2) // a browser that skipped a frame gets another message
	if err := shared.write(server[1], other); err != nil {
		t.Fatal(err)
	}
	for i, c := range client {
		kind, got, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("browser %d: %v", i, err)
		}
		if kind != websocket.TextMessage || !bytes.Equal(got, msg) {
			t.Fatalf("browser %d got %d bytes (kind %d), want the %d bytes sent", i, len(got), kind, len(msg))
		}
	}
	if _, got, err := client[1].ReadMessage(); err != nil || !bytes.Equal(got, other) {
		t.Fatalf("browser 1's second message: %d bytes, %v", len(got), err)
	}
	if shared.prepared(other) {
		t.Fatal("a message written once was prepared")
	}
}

func TestSharedMessagesNilWritesOnItsOwn(t *testing.T) {
	server, client := wsPairs(t, 1, func(int) bool { return true })
	var shared *sharedMessages
	msg := frameMessage(3)
	if err := shared.write(server[0], msg); err != nil {
		t.Fatal(err)
	}
	if _, got, err := client[0].ReadMessage(); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("got %d bytes, %v", len(got), err)
	}
}

// BenchmarkFrameFanOut measures sending one frame's message (about 12 KB
// of HTML) to every browser watching a lab, all taking compression: "each"
// writes it on each websocket (deflating it once per browser), "shared"
// through the frame's sharedMessages. One op is one frame to all watchers;
// the browsers' ends read the raw bytes and discard them.
func BenchmarkFrameFanOut(b *testing.B) {
	for _, n := range []int{1, 10, 200} {
		for _, mode := range []string{"each", "shared"} {
			b.Run(fmt.Sprintf("watchers=%d/%s", n, mode), func(b *testing.B) {
				server, client := wsPairs(b, n, func(int) bool { return true })
				var wg sync.WaitGroup
				for _, c := range client {
					wg.Add(1)
					go func() {
						defer wg.Done()
						_, _ = io.Copy(io.Discard, c.NetConn())
					}()
				}
				msgs := [][]byte{frameMessage(1), frameMessage(2)}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					msg := msgs[i%2]
					var shared *sharedMessages
					if mode == "shared" {
						shared = newSharedMessages()
					}
					for _, s := range server {
						if err := shared.write(s, msg); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.StopTimer()
				for _, c := range client {
					c.NetConn().Close()
				}
				wg.Wait()
			})
		}
	}
}
