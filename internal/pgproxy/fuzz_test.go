package pgproxy

import (
	"context"
	"errors"
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

// FuzzStartup sends the fuzzed bytes as the first bytes of a connection,
// before any login: startup packets, SSL and GSS requests, cancel requests
// and the password exchange. The proxy must not panic, must close the
// connection, and must leave no goroutine behind. No server is needed: the
// password can never match.
func FuzzStartup(f *testing.F) {
	f.Cleanup(func() { goleak.VerifyNone(f, goleak.IgnoreCurrent()) })
	lookup := func(ctx context.Context, database, user string) (Target, error) {
		switch database {
		case "lab":
			return Target{URL: "postgres://127.0.0.1:1/none", ClientPassword: "secret"}, nil
		case "refused":
			return Target{}, ErrRefused
		}
		return Target{}, ErrUnknownDatabase
	}
	addr := serve(f, Config{Lookup: lookup, HandshakeTimeout: 5 * time.Second})
	startupMsg := func(params map[string]string) []byte {
		b, err := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params}).Encode(nil)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add(startupMsg(map[string]string{"user": "app", "database": "lab"}))
	f.Add(append(startupMsg(map[string]string{"user": "app", "database": "lab"}),
		encode(f, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=abcdef")})...))
	f.Add(append(startupMsg(map[string]string{"user": "app", "database": "lab"}),
		encode(f, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=abc")},
			&pgproto3.SASLResponse{Data: []byte("c=biws,r=abc,p=AAAA")})...))
	f.Add(startupMsg(map[string]string{"user": "app", "database": "refused", "_pq_.x": "1"}))
	f.Add(startupMsg(map[string]string{"user": "app", "replication": "database"}))
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 48}) // GSSENCRequest
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 47}) // SSLRequest
	f.Add([]byte{0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 0, 1, 0, 0, 0, 2})
	f.Add([]byte{0x16, 3, 1, 0, 5, 1, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = nc.Write(data)
		_ = nc.(*net.TCPConn).CloseWrite()
		// A reset is a close too (the proxy closed with bytes unread).
		var ne net.Error
		if _, err := io.Copy(io.Discard, nc); errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the proxy did not close the connection: %v", err)
		}
	})
}
