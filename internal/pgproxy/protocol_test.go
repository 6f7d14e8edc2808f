package pgproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"go.uber.org/goleak"
)

// batchResults runs a batch and returns each query's rows as text or its
// error's SQLSTATE.
func batchResults(ctx context.Context, c *pgx.Conn, queries ...string) []string {
	b := &pgx.Batch{}
	for _, q := range queries {
		b.Queue(q)
	}
	br := c.SendBatch(ctx, b)
	var out []string
	for range queries {
		rows, err := br.Query()
		if err != nil {
			out = append(out, "error "+errCode(err))
			continue
		}
		var vals []string
		for rows.Next() {
			v, _ := rows.Values()
			vals = append(vals, fmt.Sprint(v...))
		}
		if err := rows.Err(); err != nil {
			vals = append(vals, "error "+errCode(err))
		}
		out = append(out, strings.Join(vals, "|"))
	}
	if err := br.Close(); err != nil {
		out = append(out, "close "+errCode(err))
	}
	return out
}

// A pipelined batch (set_config local, then the query) and a batch with an
// error in the middle give the same results as direct, and the connection
// goes on working after the error.
func TestBatchAndPipelineErrorSameAsDirect(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	ctx := context.Background()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec} {
		t.Run(mode.String(), func(t *testing.T) {
			direct := connect(t, f.directURL, mode)
			proxied := connect(t, f.proxyURL, mode)
			batches := [][]string{
				{"SELECT set_config('app.current_tenant', '3', true)", "SELECT id, tenant_id FROM items /* tenant='3' */ ORDER BY id"},
				{"SELECT 1", "SELECT 1/0", "SELECT 2", "SELECT count(*) FROM items"},
				{"SELECT count(*) FROM items", "SELECT current_setting('app.current_tenant', true)"},
			}
			for _, b := range batches {
				want := batchResults(ctx, direct, b...)
				got := batchResults(ctx, proxied, b...)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("batch %q: proxy %q, direct %q", b, got, want)
				}
			}
			r, ok := f.events.result("tenant='3'")
			if !ok || r.Rows != 3 || r.ForeignRows != 0 || r.Setting.Value != "3" || !r.Setting.Local || !r.Setting.Inferred || !r.InTransaction {
				t.Errorf("batch query result = %+v, want 3 rows of tenant 3 under an inferred local setting", r)
			}
			r, ok = f.events.result("SELECT 2")
			if !ok || r.Err == nil || r.Err.Code != "22012" {
				t.Errorf("the query after the failing one = %+v, want it skipped with 22012", r)
			}
		})
	}
}

// A raw pipeline: two syncs in flight, the first failing, then an idle
// point; the replies match direct's message for message.
func TestRawPipelineSameAsDirect(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	ctx := context.Background()
	run := func(url string) []string {
		c := connect(t, url, pgx.QueryExecModeCacheStatement).PgConn()
		p := c.StartPipeline(ctx)
		p.SendPrepare("", "SELECT $1::int / 0", nil)
		p.SendQueryParams("SELECT $1::int / 0", [][]byte{[]byte("1")}, nil, nil, nil)
		p.SendQueryParams("SELECT 7", nil, nil, nil, nil)
		if err := p.Sync(); err != nil {
			t.Fatal(err)
		}
		p.SendQueryParams("SELECT 8", nil, nil, nil, nil)
		if err := p.Sync(); err != nil {
			t.Fatal(err)
		}
		var out []string
		for {
			res, err := p.GetResults()
			if err != nil {
				out = append(out, "error "+errCode(err))
				continue
			}
			if res == nil {
				break
			}
			switch r := res.(type) {
			case *pgconn.ResultReader:
				rr := r.Read()
				out = append(out, fmt.Sprintf("rows %q err %s", rr.Rows, errCode(rr.Err)))
			case *pgconn.PipelineSync:
				out = append(out, "sync")
			case *pgconn.StatementDescription:
				out = append(out, "described")
			}
		}
		if err := p.Close(); err != nil {
			out = append(out, "close "+errCode(err))
		}
		return out
	}
	want := run(f.directURL)
	got := run(f.proxyURL)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("proxy %q\ndirect %q", got, want)
	}
}

// A transaction with SET LOCAL: the statements inside are marked in a
// transaction, the setting is inferred local while it lasts, and after
// COMMIT the probe reads it gone again.
func TestTransactionSetLocal(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	ctx := context.Background()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		t.Run(mode.String(), func(t *testing.T) {
			c := connect(t, f.proxyURL, mode)
			pid := c.PgConn().PID()
			n := f.waitProbe(t, pid, 0)
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "SET LOCAL app.current_tenant = '2'"); err != nil {
				t.Fatal(err)
			}
			var count int
			if err := tx.QueryRow(ctx, "SELECT count(*) FROM items WHERE tenant_id = 2 -- in tx").Scan(&count); err != nil || count != 3 {
				t.Fatalf("count = %d, %v", count, err)
			}
			if got := f.probes(pid); got != n {
				t.Errorf("probes inside the transaction: %d, want %d", got, n)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			r, ok := f.events.result("-- in tx")
			if !ok || !r.Setting.Inferred || !r.Setting.Local || r.Setting.Value != "2" {
				t.Errorf("in-transaction query result %+v, want the inferred local 2", r)
			}
			f.events.mu.Lock()
			var inTx bool
			for _, s := range f.events.sent {
				if strings.Contains(s.Text, "-- in tx") {
					inTx = s.InTransaction
				}
			}
			f.events.mu.Unlock()
			if !inTx {
				t.Error("the query inside BEGIN/COMMIT was not marked in a transaction")
			}
			f.waitProbe(t, pid, n)
			f.events.mu.Lock()
			last, _ := f.events.lastSetting(pid)
			f.events.mu.Unlock()
			if last.Inferred || last.Local || !(last.Null || last.Value == "") {
				t.Errorf("after COMMIT the setting is %+v, want read empty", last)
			}
		})
	}
}

// probes returns how many probes the backend pid has finished.
func (f *fixture) probes(pid uint32) int {
	f.events.mu.Lock()
	defer f.events.mu.Unlock()
	return f.events.probes[pid]
}

// A cancelled pg_sleep: pgx's cancel request reaches the backend through
// the proxy (the query fails with 57014, the connection stays), and a cancel
// with a wrong key does nothing.
func TestCancelReachesTheBackend(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	c := connectCancelling(t, f.proxyURL)
	pid := c.PgConn().PID()
	started := make(chan struct{})
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		close(started)
		_, err := c.Exec(ctx, "SELECT pg_sleep(15)")
		done <- err
	}()
	<-started
	// Wait until the backend runs the sleep.
	waitActivity(t, f, pid, "active")
	// A wrong key: the proxy reads it and closes, nothing is cancelled.
	nc, err := net.Dial("tcp", f.proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	var pkt [16]byte
	binary.BigEndian.PutUint32(pkt[0:], 16)
	binary.BigEndian.PutUint32(pkt[4:], codeCancel)
	binary.BigEndian.PutUint32(pkt[8:], pid)
	binary.BigEndian.PutUint32(pkt[12:], 12345)
	if _, err := nc.Write(pkt[:]); err != nil {
		t.Fatal(err)
	}
	var one [1]byte
	_, _ = nc.Read(one[:]) // the proxy closes once it has handled it
	nc.Close()
	select {
	case err := <-done:
		t.Fatalf("a cancel with a wrong key ended the query: %v", err)
	default:
	}
	cancel()
	select {
	case err := <-done:
		if errCode(err) != "57014" {
			t.Fatalf("cancelled query error = %v, want SQLSTATE 57014 (the cancel reached the backend)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the cancelled query did not end")
	}
	var state string
	if err := c.QueryRow(context.Background(), "SELECT state FROM pg_stat_activity WHERE pid = pg_backend_pid()").Scan(&state); err != nil {
		t.Fatalf("the connection after the cancel: %v", err)
	}
}

// connectCancelling connects with pgx set to cancel with a cancel request
// and keep the connection (pgx's default closes it): if the request never
// reaches the backend, the deadline closes the connection after 10 s and the
// query fails with something else than 57014.
func connectCancelling(t *testing.T, connString string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		t.Fatal(err)
	}
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: 10 * time.Second}
	}
	c, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// waitActivity waits until pg_stat_activity shows the backend in state.
func waitActivity(t *testing.T, f *fixture, pid uint32, state string) {
	t.Helper()
	wait := time.Millisecond
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got string
		err := f.admin.QueryRow(context.Background(), "SELECT coalesce(state, '') FROM pg_stat_activity WHERE pid = $1", int32(pid)).Scan(&got)
		if err == nil && got == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend %d never reached %q (last %q, %v)", pid, state, got, err)
		}
		time.Sleep(wait) // pg_stat_activity has no notification; back off
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// COPY in (pgx CopyFrom, binary) and out (COPY TO STDOUT) through the proxy
// give the same as direct.
func TestCopyInAndOut(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	ctx := context.Background()
	rows := [][]any{{int32(1), "one"}, {int32(2), "two\ttab"}, {nil, "null tenant"}}
	out := func(url string, tenant int) string {
		c := connect(t, url, pgx.QueryExecModeCacheStatement)
		n, err := c.CopyFrom(ctx, pgx.Identifier{"notes"}, []string{"tenant_id", "body"}, pgx.CopyFromRows(rows))
		if err != nil || n != 3 {
			t.Fatalf("CopyFrom = %d, %v", n, err)
		}
		if _, err := c.Exec(ctx, "SELECT set_config('app.current_tenant', $1, false)", fmt.Sprint(tenant)); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := c.PgConn().CopyTo(ctx, &buf, "COPY (SELECT * FROM items ORDER BY id) TO STDOUT"); err != nil {
			t.Fatal(err)
		}
		buf.WriteString("--\n")
		if _, err := c.PgConn().CopyTo(ctx, &buf, "COPY (SELECT * FROM notes WHERE tenant_id IS DISTINCT FROM "+fmt.Sprint(tenant)+" ORDER BY body) TO STDOUT (FORMAT csv)"); err != nil {
			t.Fatal(err)
		}
		return buf.String()
	}
	want := out(f.directURL, 1)
	if _, err := f.admin.Exec(ctx, "TRUNCATE "+f.schema+".notes"); err != nil {
		t.Fatal(err)
	}
	got := out(f.proxyURL, 1)
	if got != want {
		t.Errorf("proxy:\n%s\ndirect:\n%s", got, want)
	}
	// Failed COPY FROMs leave the connection usable: a missing table (an
	// error before the copy starts), a value pgx cannot encode (CopyFail
	// in the middle), a row the server rejects (an error during the copy).
	c := connect(t, f.proxyURL, pgx.QueryExecModeCacheStatement)
	failing := []struct {
		table string
		rows  [][]any
	}{
		{"nope", rows},
		{"notes", [][]any{{int32(1), "ok"}, {"not a number", "x"}}},
		{"items", [][]any{{int32(1), int32(1), "duplicate key"}}},
	}
	for _, fc := range failing {
		cols := []string{"tenant_id", "body"}
		if fc.table == "items" {
			cols = []string{"id", "tenant_id", "name"}
		}
		if _, err := c.CopyFrom(ctx, pgx.Identifier{fc.table}, cols, pgx.CopyFromRows(fc.rows)); err == nil {
			t.Fatalf("CopyFrom into %s with %v worked", fc.table, fc.rows)
		}
		var one int
		if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
			t.Fatalf("after a failed copy into %s: %v", fc.table, err)
		}
	}
}

// LISTEN through the proxy gets a NOTIFY sent from another session, while
// the probe keeps reading the idle connection.
func TestListenNotify(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := connect(t, f.proxyURL, pgx.QueryExecModeCacheStatement)
	pid := c.PgConn().PID()
	// Counted before the LISTEN: the probe after it may end before Exec
	// returns.
	before := f.probes(pid)
	if _, err := c.Exec(ctx, "LISTEN proxy_events"); err != nil {
		t.Fatal(err)
	}
	f.waitProbe(t, pid, before)
	if _, err := f.admin.Exec(ctx, "SELECT pg_notify('proxy_events', 'hello')"); err != nil {
		t.Fatal(err)
	}
	n, err := c.WaitForNotification(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n.Channel != "proxy_events" || n.Payload != "hello" {
		t.Errorf("notification %+v", n)
	}
	// A notice in the middle of a statement passes too.
	var notices []string
	cfg, _ := pgconn.ParseConfig(f.proxyURL)
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n.Message) }
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(ctx)
	if _, err := pc.Exec(ctx, "DO $$BEGIN RAISE NOTICE 'from the server'; END$$").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if len(notices) != 1 || notices[0] != "from the server" {
		t.Errorf("notices %q", notices)
	}
}

// sslmode=require works; verify-full works with the proxy's certificate as
// the root.
func TestTLS(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	ctx := context.Background()
	c := connect(t, f.url(clientPassword, labDB, "require"), pgx.QueryExecModeCacheStatement)
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM items").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.PgConn().Conn().(*tls.Conn); !ok {
		t.Errorf("sslmode=require connection is a %T, not TLS", c.PgConn().Conn())
	}
	root := filepath.Join(t.TempDir(), "root.crt")
	if err := os.WriteFile(root, f.srv.CertificatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	u := strings.Replace(f.url(clientPassword, labDB, "verify-full"), "127.0.0.1", "localhost", 1) + "&sslrootcert=" + root
	vc := connect(t, u, pgx.QueryExecModeCacheStatement)
	if err := vc.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		t.Fatal(err)
	}
	// TLS without an SSLRequest, as PostgreSQL 17's libpq can.
	dc := connect(t, f.url(clientPassword, labDB, "require")+"&sslnegotiation=direct", pgx.QueryExecModeCacheStatement)
	if err := dc.QueryRow(ctx, "SELECT count(*) FROM items").Scan(&n); err != nil {
		t.Fatal(err)
	}
}

// Wrong password and a refused user get 28P01; an unknown database 3D000;
// no backend is opened for them.
func TestRefusals(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cases := []struct{ url, code string }{
		{f.url("wrong", labDB, "disable"), "28P01"},
		{f.url(clientPassword, "other_lab", "disable"), "3D000"},
		{strings.Replace(f.proxyURL, f.role, "postgres", 1), "28P01"},
		{f.url(clientPassword, labDB, "require") + "&password=wrong", "28P01"},
	}
	for _, tc := range cases {
		_, err := pgconn.Connect(ctx, tc.url)
		if got := errCode(err); got != tc.code {
			t.Errorf("%s: error %v (%s), want %s", tc.url, err, got, tc.code)
		}
	}
	var n int
	if err := f.admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", f.role).Scan(&n); err != nil || n != 0 {
		t.Errorf("backends of the role after refusals: %d, %v", n, err)
	}
	if errors.Is(nil, ErrRefused) {
		t.Fatal()
	}
}

// When the probe fails (here: a setting name the server rejects), the
// connection goes on unobserved: after three failures no more probes, and
// the client's queries give the same results as direct.
func TestFailingProbeLeavesTheClientAlone(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *Config) { c.Setting = "\xff" })
	ctx := context.Background()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeDescribeExec, pgx.QueryExecModeSimpleProtocol} {
		direct := connect(t, f.directURL, mode)
		c := connect(t, f.proxyURL, mode)
		pid := c.PgConn().PID()
		n := 0
		for i := range 6 {
			sql := fmt.Sprintf("SELECT %d, count(*) FROM items", i)
			if got, want := collect(ctx, c, sql), collect(ctx, direct, sql); !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: proxy %q, direct %q", sql, got, want)
			}
			if n < maxProbeFailures {
				n = f.waitProbe(t, pid, n)
			}
		}
		if got := f.probes(pid); got != maxProbeFailures {
			t.Errorf("%d probes, want %d and then none", got, maxProbeFailures)
		}
	}
	f.events.mu.Lock()
	defer f.events.mu.Unlock()
	if f.events.probeErrs != 2*maxProbeFailures {
		t.Errorf("%d failed probes, want %d", f.events.probeErrs, 2*maxProbeFailures)
	}
}

// Server.Cancel cancels a connection's statement and keeps the connection
// with its session state.
func TestServerCancel(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	ctx := context.Background()
	c := connect(t, f.proxyURL, pgx.QueryExecModeCacheStatement)
	pid := c.PgConn().PID()
	if _, err := c.Exec(ctx, "SET app.current_tenant = '2'"); err != nil {
		t.Fatal(err)
	}
	var id uint64
	f.events.mu.Lock()
	for _, o := range f.events.opened {
		if o.PID == pid {
			id = o.ID
		}
	}
	f.events.mu.Unlock()
	if f.srv.Cancel(ctx, id+1000) {
		t.Error("Cancel of an unknown connection reported one")
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "SELECT pg_sleep(15)")
		done <- err
	}()
	waitActivity(t, f, pid, "active")
	if !f.srv.Cancel(ctx, id) {
		t.Fatal("Cancel found no connection")
	}
	if err := <-done; errCode(err) != "57014" {
		t.Fatalf("error %v, want 57014", err)
	}
	var tenant string
	if err := c.QueryRow(ctx, "SELECT current_setting('app.current_tenant')").Scan(&tenant); err != nil || tenant != "2" {
		t.Fatalf("after the cancel: %q, %v", tenant, err)
	}
}

// When following the protocol fails (here: a panic injected while a probe
// and a query are in flight), the connection goes on unobserved with the
// same results as direct.
func TestObservationFailureLeavesTheClientAlone(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	armed := make(chan struct{}, 1)
	f.srv.observing = func(typ byte) {
		if typ == 'D' {
			select {
			case <-armed:
				panic("injected")
			default:
			}
		}
	}
	ctx := context.Background()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeDescribeExec, pgx.QueryExecModeSimpleProtocol} {
		direct := connect(t, f.directURL, mode)
		c := connect(t, f.proxyURL, mode)
		f.waitProbe(t, c.PgConn().PID(), 0)
		armed <- struct{}{}
		for i := range 20 {
			sql := fmt.Sprintf("SELECT %d, id, tenant_id FROM items ORDER BY id", i)
			if got, want := collect(ctx, c, sql), collect(ctx, direct, sql); !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: proxy %q, direct %q", sql, got, want)
			}
		}
		if len(armed) != 0 {
			t.Fatal("the injected failure never ran")
		}
	}
}

// A GSSENCRequest is answered 'N', and the client goes on in the clear to
// the password exchange.
func TestGSSENCRequestRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	nc, err := net.Dial("tcp", f.proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	var pkt [8]byte
	binary.BigEndian.PutUint32(pkt[0:], 8)
	binary.BigEndian.PutUint32(pkt[4:], codeGSSENC)
	if _, err := nc.Write(pkt[:]); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := io.ReadFull(nc, b[:]); err != nil || b[0] != 'N' {
		t.Fatalf("answer %q, %v; want N", b[0], err)
	}
	msg, err := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": f.role, "database": labDB}}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(nc, b[:]); err != nil || b[0] != 'R' {
		t.Fatalf("after the startup message: %q, %v; want an authentication request", b[0], err)
	}
}

// An upstream on a Unix socket (the local cluster's URL): queries and
// cancel requests reach it.
func TestUnixSocketUpstream(t *testing.T) {
	t.Parallel()
	s := pgenvtest.MustServer(t)
	if s.Kind != "local" {
		t.Skip("the server is not a local cluster with a Unix socket")
	}
	f := newFixture(t, nil)
	addr := serve(t, Config{Lookup: func(ctx context.Context, database, user string) (Target, error) {
		return Target{URL: s.URL, User: f.role, ClientPassword: clientPassword}, nil
	}})
	c := connectCancelling(t, (&fixture{role: f.role, proxyAddr: addr}).url(clientPassword, labDB, "disable"))
	var user string
	if err := c.QueryRow(context.Background(), "SELECT current_user").Scan(&user); err != nil || user != f.role {
		t.Fatalf("current_user = %q, %v", user, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "SELECT pg_sleep(15)")
		done <- err
	}()
	waitActivity(t, f, c.PgConn().PID(), "active")
	cancel()
	if err := <-done; errCode(err) != "57014" {
		t.Fatalf("cancelled query error = %v, want SQLSTATE 57014 (the cancel reached the backend)", err)
	}
}

// When Serve's context ends, every connection closes (one logged in and
// idle, one stuck before its startup packet), their goroutines end, and
// Serve returns nil.
func TestServeStopsWithContext(t *testing.T) {
	// Not parallel: it counts the package's goroutines.
	f := newFixture(t, nil)
	leaks := goleak.IgnoreCurrent()
	srv, err := New(Config{Lookup: f.srv.cfg.Lookup, Events: f.events})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	url := (&fixture{role: f.role, proxyAddr: ln.Addr().String()}).url(clientPassword, labDB, "disable")
	pc, err := pgconn.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	pid := pc.PID()
	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	f.events.waitFor(t, 5*time.Second, "the connection's Closed event", func(r *recorder) bool {
		for _, c := range r.closed {
			if c.PID == pid {
				return true
			}
		}
		return false
	})
	if _, err := pc.Exec(context.Background(), "SELECT 1").ReadAll(); err == nil {
		t.Error("a query after the proxy stopped worked")
	}
	_ = pc.Close(context.Background())
	_ = silent.SetDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	if _, err := silent.Read(b[:]); err == nil {
		t.Error("the connection stuck before its startup packet is still open")
	}
	goleak.VerifyNone(t, leaks)
}

// TestWrittenSettingIsEmptyAfterItsTransaction: a backend whose setting
// was read absent (NULL) holds it empty once a transaction wrote it, even
// locally or rolled back; the proxy infers so at the transaction's end,
// before the next reading, and the reading agrees. A forgetful request
// right after a tx-local request is shown running under the empty setting (what it
// really ran under), not under the NULL of the first reading.
func TestWrittenSettingIsEmptyAfterItsTransaction(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	ctx := context.Background()
	for _, end := range []string{"COMMIT", "ROLLBACK"} {
		t.Run(end, func(t *testing.T) {
			c := connect(t, f.proxyURL, pgx.QueryExecModeCacheStatement)
			pid := c.PgConn().PID()
			n := f.waitProbe(t, pid, 0)
			f.events.mu.Lock()
			first, _ := f.events.lastSetting(pid)
			f.events.mu.Unlock()
			if !first.Null || first.Inferred {
				t.Fatalf("a new backend's setting: %+v, want read NULL", first)
			}
			for _, q := range []string{"BEGIN", "SELECT set_config('app.current_tenant', '2', true)", end} {
				if _, err := c.Exec(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			f.waitProbe(t, pid, n)
			var direct *string
			if err := c.QueryRow(ctx, "SELECT current_setting('app.current_tenant', true)").Scan(&direct); err != nil || direct == nil || *direct != "" {
				t.Fatalf("the server says %v (%v), want ''", direct, err)
			}
			f.events.mu.Lock()
			all := append([]Setting(nil), f.events.settings[pid]...)
			f.events.mu.Unlock()
			written := false
			inferredEmpty := false
			for _, s := range all {
				if s.Value == "2" {
					written = true
					continue
				}
				if !written {
					continue
				}
				if s.Null {
					t.Errorf("after %s the proxy reported NULL again: %+v (all: %+v)", end, s, all)
				}
				if s.Inferred && s.Known && !s.Null && s.Value == "" {
					inferredEmpty = true
				}
			}
			last := all[len(all)-1]
			if !written || !inferredEmpty || last.Inferred || last.Null || last.Value != "" {
				t.Errorf("after %s: settings %+v; want the local 2, then '' inferred, then '' read", end, all)
			}
		})
	}
}
