package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
)

func TestMain(m *testing.M) { pgenvtest.Main(m) }

// testTimeout bounds each test's database work.
const testTimeout = 30 * time.Second

// testCtx returns a context cancelled when the test ends or times out.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// freshDB creates an empty database on the shared server, dropped when the
// test ends, and returns its name.
func freshDB(t *testing.T) string {
	t.Helper()
	ctx := testCtx(t)
	url := pgenvtest.MustServer(t).URL
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	name := "store_test_" + strings.ToLower(hex.EncodeToString(hashSecret(randomString(8))[:6]))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Error(err)
		}
	})
	return name
}

// newPool opens a small pool (like rlslab's admin pool, 3 connections) on
// the database, closed when the test ends.
func newPool(t *testing.T, db string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(pgenvtest.MustServer(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Database = db
	cfg.MaxConns = 3
	pool, err := pgxpool.NewWithConfig(testCtx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// newStore opens a Store with opts on a fresh database and returns it with
// its pool.
func newStore(t *testing.T, opts ...Options) (*Store, *pgxpool.Pool) {
	t.Helper()
	pool := newPool(t, freshDB(t))
	s, err := Open(testCtx(t), pool, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, pool
}

// wantCode fails the test unless err carries the rlslab error code.
func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := rlslab.ErrorCode(err); got != code {
		t.Fatalf("error %v: code %q, want %q", err, got, code)
	}
}

// tablesIn returns the tables of a schema, sorted.
func tablesIn(t *testing.T, pool *pgxpool.Pool, schema string) []string {
	t.Helper()
	rows, err := pool.Query(testCtx(t),
		"SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1", schema)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// appliedVersions returns the versions recorded in rlslab.schema_migrations.
func appliedVersions(t *testing.T, pool *pgxpool.Pool) []int {
	t.Helper()
	rows, err := pool.Query(testCtx(t), "SELECT version FROM rlslab.schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	vs, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func TestMigrationsTwice(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, pool := newStore(t)
	want := []string{"learners", "participants", "predictions", "progress", "recordings", "schema_migrations", "workshops"}
	if got := tablesIn(t, pool, "rlslab"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("tables in rlslab: %v, want %v", got, want)
	}
	if got := tablesIn(t, pool, "public"); len(got) != 0 {
		t.Fatalf("tables in public: %v, want none", got)
	}
	// Data written before a second Open survives it.
	_, token, err := s.CreateLearner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, pool, nil)
	if err != nil {
		t.Fatal("second Open:", err)
	}
	if got := appliedVersions(t, pool); len(got) != len(migrations()) || got[len(got)-1] != len(migrations()) {
		t.Fatalf("applied versions %v, want 1..%d once each", got, len(migrations()))
	}
	if v, err := s2.schemaVersion(ctx); err != nil || v != len(migrations()) {
		t.Fatalf("schema version %d, %v; want %d", v, err, len(migrations()))
	}
	if _, err := s2.LearnerByToken(ctx, token); err != nil {
		t.Fatal("learner lost by the second Open:", err)
	}
}

func TestMigrationsConcurrently(t *testing.T) {
	t.Parallel()
	db := freshDB(t)
	// Each opener has its own pool, as two rlslab processes would.
	const openers = 6
	pools := make([]*pgxpool.Pool, openers)
	for i := range pools {
		pools[i] = newPool(t, db)
		if err := pools[i].Ping(testCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
	ctx := testCtx(t)
	start := make(chan struct{})
	errs := make([]error, openers)
	var wg sync.WaitGroup
	for i := range pools {
		wg.Go(func() {
			<-start
			_, errs[i] = Open(ctx, pools[i], nil)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("opener %d: %v", i, err)
		}
	}
	if got := appliedVersions(t, pools[0]); len(got) != len(migrations()) {
		t.Fatalf("applied versions %v, want each of 1..%d once", got, len(migrations()))
	}
}

func TestMigrationsNewerSchema(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	_, pool := newStore(t)
	if _, err := pool.Exec(ctx, "INSERT INTO rlslab.schema_migrations (version, name) VALUES (999, 'from the future')"); err != nil {
		t.Fatal(err)
	}
	_, err := Open(ctx, pool, nil)
	wantCode(t, err, rlslab.EUNAVAILABLE)
	if !strings.Contains(err.Error(), "999") {
		t.Fatalf("error %q does not name the version", err)
	}
}

func TestOpenOptions(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, pool := newStore(t)
	if got := s.Options(); got.KeepRecordings != DefaultKeepRecordings || got.RecordingAge != DefaultRecordingAge {
		t.Fatalf("default options %+v", got)
	}
	s2, err := Open(ctx, pool, nil, Options{KeepRecordings: 3, RecordingAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got := s2.Options(); got.KeepRecordings != 3 || got.RecordingAge != time.Hour {
		t.Fatalf("options %+v", got)
	}
	_, err = Open(ctx, pool, nil, Options{KeepRecordings: -1})
	wantCode(t, err, rlslab.EINVALID)
	_, err = Open(ctx, pool, nil, Options{}, Options{})
	wantCode(t, err, rlslab.EINVALID)
	_, err = Open(ctx, nil, nil)
	wantCode(t, err, rlslab.EINVALID)
}

func TestLearners(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := newStore(t)
	l, token, err := s.CreateLearner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(token) < 40 || !plausibleID(token) {
		t.Fatalf("token %q: want a long URL-safe random string", token)
	}
	got, err := s.LearnerByToken(ctx, token)
	if err != nil || got.ID != l.ID || !got.CreatedAt.Equal(l.CreatedAt) {
		t.Fatalf("LearnerByToken = %+v, %v; want %+v", got, err, l)
	}
	l2, token2, err := s.CreateLearner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l2.ID == l.ID || token2 == token {
		t.Fatal("two learners share an id or a token")
	}
	for _, bad := range []string{"", "x", l.ID, token + "x", strings.Repeat("a", 10<<10), "'; DROP TABLE rlslab.learners; --", "\x00"} {
		_, err := s.LearnerByToken(ctx, bad)
		wantCode(t, err, rlslab.ENOTFOUND)
	}
}

// dumpTables returns every row of every rlslab table as text.
func dumpTables(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var b strings.Builder
	for _, table := range tablesIn(t, pool, "rlslab") {
		rows, err := pool.Query(testCtx(t), "SELECT t::text FROM rlslab."+table+" t")
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:\n%s\n", table, strings.Join(lines, "\n"))
	}
	return b.String()
}

func TestSecretsAreStoredHashed(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, pool := newStore(t)
	_, learnerToken, err := s.CreateLearner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w, secret, err := s.CreateWorkshop(ctx, "Onboarding", []string{"set-leak"})
	if err != nil {
		t.Fatal(err)
	}
	_, participantToken, err := s.Join(ctx, w.ID, "Ada")
	if err != nil {
		t.Fatal(err)
	}
	dump := dumpTables(t, pool)
	for what, raw := range map[string]string{"learner token": learnerToken, "facilitator secret": secret, "participant token": participantToken} {
		if strings.Contains(dump, raw) {
			t.Errorf("the raw %s is stored:\n%s", what, dump)
		}
		sum := sha256.Sum256([]byte(raw))
		if !strings.Contains(dump, `\x`+hex.EncodeToString(sum[:])) {
			t.Errorf("the %s's SHA-256 is not stored:\n%s", what, dump)
		}
	}
}

// progressJSON returns the learner's progress as GET /progress.json would.
func progressJSON(t *testing.T, s *Store, learner string) string {
	t.Helper()
	p, err := s.Progress(testCtx(t), learner)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestProgress(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := newStore(t)
	l, _, err := s.CreateLearner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := progressJSON(t, s, l.ID), `{"lessons":[]}`; got != want {
		t.Fatalf("new learner's progress %s, want %s", got, want)
	}
	steps := []func() error{
		func() error {
			return s.RecordPrediction(ctx, l.ID, "set-leak", Prediction{Variant: "session-set", Choice: "Globex gets Acme's rows", Correct: true})
		},
		func() error {
			return s.RecordRun(ctx, l.ID, Run{Lesson: "set-leak", Scenario: "set-leak", Variant: "session-set", Status: "done", Leaks: 2})
		},
		func() error { // a second run of the same variant is listed once
			return s.RecordRun(ctx, l.ID, Run{Lesson: "set-leak", Scenario: "set-leak", Variant: "session-set", Status: "done", Leaks: 1})
		},
		func() error { // a fix that leaked does not count as the fix run
			return s.RecordRun(ctx, l.ID, Run{Lesson: "set-leak", Scenario: "set-leak", Variant: "batch-local", Status: "done", Leaks: 1, Fix: true})
		},
		func() error {
			return s.RecordPrediction(ctx, l.ID, "set-leak", Prediction{Variant: "tx-local", Choice: "no rows", Correct: false})
		},
		func() error {
			return s.RecordRun(ctx, l.ID, Run{Lesson: "set-leak", Scenario: "set-leak", Variant: "tx-local", Status: "done", Errors: 3, Fix: true})
		},
		func() error { // the later prediction about a variant replaces the earlier
			return s.RecordPrediction(ctx, l.ID, "set-leak", Prediction{Variant: "tx-local", Choice: "its own rows", Correct: true})
		},
		func() error {
			return s.RecordRun(ctx, l.ID, Run{Lesson: "rls-bypass", Scenario: "rls-bypass", Variant: "owner", Status: "failed"})
		},
		func() error {
			return s.RecordPrediction(ctx, l.ID, "split-calls", Prediction{Variant: "split", Choice: "a syntax error", Correct: false})
		},
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	want := `{"lessons":[` +
		`{"slug":"rls-bypass","variants_run":["owner"],"leak_seen":false,"fix_run":false,"predictions":[]},` +
		`{"slug":"set-leak","variants_run":["session-set","batch-local","tx-local"],"leak_seen":true,"fix_run":true,"predictions":[` +
		`{"variant":"session-set","choice":"Globex gets Acme's rows","correct":true},` +
		`{"variant":"tx-local","choice":"its own rows","correct":true}]},` +
		`{"slug":"split-calls","variants_run":[],"leak_seen":false,"fix_run":false,"predictions":[` +
		`{"variant":"split","choice":"a syntax error","correct":false}]}]}`
	if got := progressJSON(t, s, l.ID); got != want {
		t.Fatalf("progress\n got %s\nwant %s", got, want)
	}

	// Another learner's progress is their own.
	other, _, err := s.CreateLearner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := progressJSON(t, s, other.ID); got != `{"lessons":[]}` {
		t.Fatalf("other learner's progress %s", got)
	}
}

func TestProgressBadInput(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := newStore(t)
	l, _, err := s.CreateLearner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	good := Run{Lesson: "set-leak", Scenario: "set-leak", Variant: "session-set", Status: "done"}
	for _, unknown := range []string{"", "nobody", strings.Repeat("x", 10<<10)} {
		wantCode(t, s.RecordRun(ctx, unknown, good), rlslab.ENOTFOUND)
		wantCode(t, s.RecordPrediction(ctx, unknown, "set-leak", Prediction{Variant: "tx-local", Choice: "a"}), rlslab.ENOTFOUND)
		_, err := s.Progress(ctx, unknown)
		wantCode(t, err, rlslab.ENOTFOUND)
	}
	bad := []Run{
		{Scenario: "set-leak", Variant: "session-set", Status: "done"},
		{Lesson: "Set Leak", Scenario: "set-leak", Variant: "session-set", Status: "done"},
		{Lesson: "set-leak", Scenario: strings.Repeat("s", 65), Variant: "session-set", Status: "done"},
		{Lesson: "set-leak", Scenario: "set-leak", Variant: "", Status: "done"},
		{Lesson: "set-leak", Scenario: "set-leak", Variant: "session-set"},
		{Lesson: "set-leak", Scenario: "set-leak", Variant: "session-set", Status: "done", Leaks: -1},
		{Lesson: "set-leak", Scenario: "set-leak", Variant: "session-set", Status: "done", Errors: -1},
	}
	for i, r := range bad {
		if err := s.RecordRun(ctx, l.ID, r); rlslab.ErrorCode(err) != rlslab.EINVALID {
			t.Errorf("bad run %d (%+v): %v, want EINVALID", i, r, err)
		}
	}
	for i, p := range []Prediction{{Variant: "x"}, {Variant: "x", Choice: strings.Repeat("c", 10<<10)}, {Variant: "x", Choice: "a\x00b"}, {Choice: "a"}} {
		if err := s.RecordPrediction(ctx, l.ID, "set-leak", p); rlslab.ErrorCode(err) != rlslab.EINVALID {
			t.Errorf("bad prediction %d: %v, want EINVALID", i, err)
		}
	}
	if got := progressJSON(t, s, l.ID); got != `{"lessons":[]}` {
		t.Fatalf("bad input changed progress: %s", got)
	}
}
