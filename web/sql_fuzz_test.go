package web

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/sessions"
)

// FuzzReadSQLRequest feeds readSQLRequest (the body of POST /labs/{id}/sql)
// arbitrary bodies as JSON and as a form: it never panics, refuses only
// with EINVALID, and what it accepts is within the documented bounds.
func FuzzReadSQLRequest(f *testing.F) {
	for _, seed := range []struct{ ct, body string }{
		{"application/json", `{"connection": 1, "sql": "SELECT 1", "tenant": "Acme", "pattern": "session-set"}`},
		{"application/json", `{"sql": "", "tenant": "2", "pattern": "forgot", "pool_size": 3}`},
		{"application/json", `{"pid": 12345, "sql": "SELECT current_setting('app.current_tenant', true)"}`},
		{"application/json", `{"connection": 0}`},
		{"application/json", `{"connection": 1, "pid": 2}`},
		{"application/json", `{"sql": "x"} {"sql": "y"}`},
		{"application/json", `{"nope": 1}`},
		{"application/x-www-form-urlencoded", "sql=SELECT+1&tenant=Globex&pattern=tx-local&connection=2"},
		{"application/x-www-form-urlencoded", "sql=%00&connection=x"},
		{"", "pid=-1"},
		{"application/json", `{"tenant": "Acme", "times": 3}`},
		{"application/x-www-form-urlencoded", "tenant=Acme&times=10&pool_size=2"},
		{"application/x-www-form-urlencoded", "pid=5&times=2"},
	} {
		f.Add(seed.ct, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		q, times, err := readSQLRequest(ct, body)
		if err != nil {
			if rlslab.ErrorCode(err) != rlslab.EINVALID {
				t.Fatalf("refused with %q, want EINVALID: %v", rlslab.ErrorCode(err), err)
			}
			return
		}
		switch {
		case times < 1 || times > sessions.MaxFreePlayConns:
			t.Fatalf("times %d accepted", times)
		case q.PID != 0 && times != 1:
			t.Fatalf("a look %d times accepted", times)
		case q.Connection < 0 || q.Connection > sessions.MaxFreePlayConns:
			t.Fatalf("connection %d accepted", q.Connection)
		case q.PoolSize < 0 || q.PoolSize > sessions.MaxFreePlayConns:
			t.Fatalf("pool size %d accepted", q.PoolSize)
		case q.PID != 0 && q.Connection != 0:
			t.Fatalf("both a pid and a connection accepted: %+v", q)
		case len(q.SQL) > sessions.MaxSQLLen || !utf8.ValidString(q.SQL) || strings.ContainsRune(q.SQL, 0):
			t.Fatalf("SQL of %d bytes accepted", len(q.SQL))
		case len(q.Tenant) > 64:
			t.Fatalf("tenant of %d bytes accepted", len(q.Tenant))
		case q.Pattern != "" && !slices.Contains(sessions.FreePlayPatterns, q.Pattern):
			t.Fatalf("pattern %q accepted", q.Pattern)
		}
	})
}

func TestReadSQLRequest(t *testing.T) {
	q, times, err := readSQLRequest("application/json", []byte(`{"connection": 1, "sql": "SELECT 1", "tenant": " Acme ", "pattern": "split", "pool_size": 4}`))
	if err != nil || times != 1 || q != (sessions.SQLRequest{Connection: 1, SQL: "SELECT 1", Tenant: "Acme", Pattern: "split", PoolSize: 4}) {
		t.Errorf("JSON: %+v, %d times, %v", q, times, err)
	}
	q, times, err = readSQLRequest("application/x-www-form-urlencoded", []byte("sql=SELECT+2&tenant=&pattern=&connection=&pool_size=&pid=77&times="))
	if err != nil || times != 1 || q != (sessions.SQLRequest{SQL: "SELECT 2", PID: 77}) {
		t.Errorf("form: %+v, %d times, %v", q, times, err)
	}
	q, times, err = readSQLRequest("application/x-www-form-urlencoded", []byte("tenant=Acme&times=3"))
	if err != nil || times != 3 || q != (sessions.SQLRequest{Tenant: "Acme"}) {
		t.Errorf("form, three at once: %+v, %d times, %v", q, times, err)
	}
	for _, bad := range []string{`{"connection": 11}`, `{"connection": -1}`, `{"pool_size": 0}`, `{"pid": 0}`, `{"pattern": "yolo"}`, `{"sql": 1}`, `{"extra": true}`, `[]`, `{"pid": 3, "connection": 1}`,
		`{"times": 0}`, `{"times": 11}`, `{"pid": 3, "times": 2}`} {
		if _, _, err := readSQLRequest("application/json", []byte(bad)); rlslab.ErrorCode(err) != rlslab.EINVALID {
			t.Errorf("%s: %v, want EINVALID", bad, err)
		}
	}
}
