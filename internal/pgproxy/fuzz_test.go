package pgproxy

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"go.uber.org/goleak"
)

// encode builds a client message stream for seeds.
func encode(tb testing.TB, msgs ...encoder) []byte {
	b, err := appendMsgs(nil, msgs...)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// FuzzClientMessages logs into the proxy (in front of a real server) and
// sends the fuzzed bytes as the client's message stream: the proxy must not
// panic, must end the connection when the client goes, and must leave no
// goroutine and no backend behind.
func FuzzClientMessages(f *testing.F) {
	pgenvtest.MustServer(f)
	f.Cleanup(func() { goleak.VerifyNone(f, goleak.IgnoreCurrent()) })
	fx := newFixture(f, nil)
	f.Cleanup(func() { waitNoBackends(f, fx) })

	f.Add(encode(f, &pgproto3.Query{String: "SELECT 1; SET app.current_tenant = '1'"}))
	f.Add(encode(f,
		&pgproto3.Parse{Query: "SELECT $1::int, tenant_id FROM items /* tenant='1' */"},
		&pgproto3.Describe{ObjectType: 'S'},
		&pgproto3.Sync{},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("5")}, ResultFormatCodes: []int16{1}},
		&pgproto3.Execute{},
		&pgproto3.Sync{},
	))
	f.Add(encode(f,
		&pgproto3.Query{String: "BEGIN"},
		&pgproto3.Parse{Name: "s", Query: "SELECT set_config('app.current_tenant', $1, true)"},
		&pgproto3.Bind{PreparedStatement: "s", Parameters: [][]byte{[]byte("2")}},
		&pgproto3.Execute{},
		&pgproto3.Parse{Query: "SELECT 1/0"},
		&pgproto3.Bind{},
		&pgproto3.Execute{},
		&pgproto3.Sync{},
		&pgproto3.Query{String: "ROLLBACK"},
	))
	f.Add(encode(f,
		&pgproto3.Query{String: "COPY notes FROM STDIN"},
		&pgproto3.CopyData{Data: []byte("1\tx\n")},
		&pgproto3.Sync{},
		&pgproto3.CopyDone{},
		&pgproto3.Query{String: "COPY notes TO STDOUT"},
	))
	f.Add(encode(f, &pgproto3.Flush{}, &pgproto3.CopyFail{Message: "x"}, &pgproto3.Close{ObjectType: 'P'}, &pgproto3.Sync{}, &pgproto3.Terminate{}))
	f.Add([]byte("Q\x00\x00\x00\x04"))
	f.Add([]byte("P\xff\xff\xff\xff"))

	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		pc, err := pgconn.Connect(ctx, fx.proxyURL)
		if err != nil {
			t.Fatal(err)
		}
		hc, err := pc.Hijack()
		if err != nil {
			t.Fatal(err)
		}
		nc := hc.Conn
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(15 * time.Second))
		pid := hc.PID
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = io.Copy(io.Discard, nc)
		}()
		_, _ = nc.Write(data)
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		<-done
		fx.events.waitFor(t, 15*time.Second, "the proxy to close the connection", func(r *recorder) bool {
			for _, c := range r.closed {
				if c.PID == pid {
					return true
				}
			}
			return false
		})
	})
}

// waitNoBackends waits until the role has no backend left.
func waitNoBackends(tb testing.TB, fx *fixture) {
	tb.Helper()
	wait := time.Millisecond
	deadline := time.Now().Add(15 * time.Second)
	for {
		var n int
		err := fx.admin.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", fx.role).Scan(&n)
		if err == nil && n == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Errorf("%d backends of %s left (%v)", n, fx.role, err)
			return
		}
		time.Sleep(wait) // backends end on their own after the proxy closes them
		wait = min(2*wait, 100*time.Millisecond)
	}
}
