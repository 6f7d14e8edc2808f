package pgproxy

import (
	"context"
	"errors"
	"io"
	"maps"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/goleak"
)

// TestEncodeStartupRoundTrip: a StartupMessage re-encoded for the proxy a
// connection is forwarded to reads back as the client's.
func TestEncodeStartupRoundTrip(t *testing.T) {
	st := startup{params: map[string]string{"user": "app", "database": "lab_1", "application_name": "psql"}}
	b := encodeStartup(st)
	body, err := readStartup(bytesReader(b))
	if err != nil {
		t.Fatal(err)
	}
	got, unsupported, err := parseStartup(body)
	if err != nil || len(unsupported) > 0 || !maps.Equal(got.params, st.params) || got.user != "app" || got.database != "lab_1" {
		t.Errorf("round trip: %+v %v %v", got, unsupported, err)
	}
}

// bytesReader reads b.
func bytesReader(b []byte) io.Reader { return &sliceReader{b: b} }

type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// FuzzForward plays the fuzzed bytes as what the proxy a connection is
// forwarded to answers, to a client that logs in and then sends a query:
// the forwarding proxy must not panic, must close the client's connection
// once the other side has closed, and must leave no goroutine behind.
func FuzzForward(f *testing.F) {
	f.Cleanup(func() { goleak.VerifyNone(f, goleak.IgnoreCurrent()) })
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { up.Close() })
	answers := make(chan []byte, 1)
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			data := <-answers
			go func() {
				defer c.Close()
				_, _ = readStartup(c)
				_, _ = c.Write(data)
			}()
		}
	}()
	lookup := func(ctx context.Context, database, user string) (Target, error) {
		return Target{Forward: up.Addr().String()}, nil
	}
	addr := serve(f, Config{Lookup: lookup, HandshakeTimeout: 5 * time.Second})
	f.Add(encode(f, &pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}}))
	f.Add(encode(f, &pgproto3.AuthenticationOk{}, &pgproto3.BackendKeyData{ProcessID: 7, SecretKey: []byte{1, 2, 3, 4}}, &pgproto3.ReadyForQuery{TxStatus: 'I'}))
	f.Add(encode(f, &pgproto3.AuthenticationCleartextPassword{}, &pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "password authentication failed"}))
	f.Add([]byte{'R', 0, 0, 0, 5, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		answers <- data
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		login, err := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "app", "database": "lab_1"}}).Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		login = append(login, encode(t, &pgproto3.PasswordMessage{Password: "secret"}, &pgproto3.Query{String: "SELECT 1"})...)
		_, _ = nc.Write(login)
		_ = nc.(*net.TCPConn).CloseWrite()
		var ne net.Error
		if _, err := io.Copy(io.Discard, nc); errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the proxy did not close the connection: %v", err)
		}
	})
}
