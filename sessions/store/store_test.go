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
	"unicode"
	"unicode/utf8"

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

// createDB creates the database name on the shared server, dropping any
// leftover of that name first.
func createDB(ctx context.Context, url, name string) error {
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		return err
	}
	_, err = admin.Exec(ctx, "CREATE DATABASE "+name)
	return err
}

// freshDB creates an empty database on the shared server, dropped when the
// test ends, and returns its name. Creating a database takes about half a
// second here, so only tests that need one of their own (migrations, global
// pruning) use it; the others share sharedDB.
func freshDB(t *testing.T) string {
	t.Helper()
	url := pgenvtest.MustServer(t).URL
	name := "store_test_" + strings.ToLower(hex.EncodeToString(hashSecret(randomString(8))[:6]))
	if err := createDB(testCtx(t), url, name); err != nil {
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

// shared is the database most tests share, created on first use. They keep
// apart through the random ids the Store hands out.
var shared struct {
	once sync.Once
	name string
	err  error
}

// sharedDB returns the name of the shared database.
func sharedDB(t *testing.T) string {
	t.Helper()
	url := pgenvtest.MustServer(t).URL
	shared.once.Do(func() {
		shared.name = "store_test_shared"
		shared.err = createDB(testCtx(t), url, shared.name)
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.name
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

// newStore opens a Store with opts on the shared database and returns it
// with its own pool.
func newStore(t *testing.T, opts ...Options) (*Store, *pgxpool.Pool) {
	t.Helper()
	return openStore(t, sharedDB(t), opts...)
}

// freshStore opens a Store with opts on a fresh database and returns it
// with its pool.
func freshStore(t *testing.T, opts ...Options) (*Store, *pgxpool.Pool) {
	t.Helper()
	return openStore(t, freshDB(t), opts...)
}

// openStore opens a Store with opts on the database and returns it with its
// own pool.
func openStore(t *testing.T, db string, opts ...Options) (*Store, *pgxpool.Pool) {
	t.Helper()
	pool := newPool(t, db)
	s, err := Open(testCtx(t), pool, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, pool
}

// newLabID returns a random lab id like the ones package sessions makes, so
// that tests on the shared database keep apart.
func newLabID() string {
	return hex.EncodeToString(hashSecret(randomString(8))[:4])
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
	s, pool := freshStore(t)
	want := []string{"instances", "learners", "leases", "participants", "pending_predictions", "predictions", "progress", "recordings", "schema_migrations", "servers", "workshops"}
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

	// A database migrated by a newer rlslab is refused.
	if _, err := pool.Exec(ctx, "INSERT INTO rlslab.schema_migrations (version, name) VALUES (999, 'from the future')"); err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, pool, nil)
	wantCode(t, err, rlslab.EUNAVAILABLE)
	if !strings.Contains(err.Error(), "999") {
		t.Fatalf("error %q does not name the version", err)
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
		if i == 3 { // after the leaky fix
			p, err := s.Progress(ctx, l.ID)
			if err != nil {
				t.Fatal(err)
			}
			if ls := p.Lessons; len(ls) != 1 || !ls[0].LeakSeen || ls[0].FixRun {
				t.Fatalf("after a fix that leaked: %+v, want leak seen and no fix run", ls)
			}
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

func TestWorkshops(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := newStore(t)
	lessons := []string{"set-leak", "split-calls", "rls-bypass"}
	w, secret, err := s.CreateWorkshop(ctx, "  Onboarding <Tuesday>  ", lessons)
	if err != nil {
		t.Fatal(err)
	}
	if w.Title != "Onboarding <Tuesday>" || fmt.Sprint(w.Lessons) != fmt.Sprint(lessons) || w.CurrentLesson != 0 || w.Ended() {
		t.Fatalf("created %+v", w)
	}
	if NormalizeCode(w.Code) != w.Code {
		t.Fatalf("join code %q is not in canonical form", w.Code)
	}
	if len(secret) < 40 || !plausibleID(secret) {
		t.Fatalf("facilitator secret %q: want a long URL-safe random string", secret)
	}

	got, err := s.Workshop(ctx, w.ID)
	if err != nil || fmt.Sprint(got) != fmt.Sprint(w) {
		t.Fatalf("Workshop = %+v, %v; want %+v", got, err, w)
	}
	typed := strings.ToLower(w.Code[:3]) + "-" + w.Code[3:] + " "
	if got, err := s.WorkshopByCode(ctx, typed); err != nil || got.ID != w.ID {
		t.Fatalf("WorkshopByCode(%q) = %+v, %v", typed, got, err)
	}

	// The facilitator secret.
	if err := s.VerifyFacilitator(ctx, w.ID, secret); err != nil {
		t.Fatal("right secret:", err)
	}
	for _, wrong := range []string{"", secret[:len(secret)-1], secret + "x", strings.Repeat("s", 10<<10), string(hashSecret(secret))} {
		wantCode(t, s.VerifyFacilitator(ctx, w.ID, wrong), rlslab.EFORBIDDEN)
	}
	other, otherSecret, err := s.CreateWorkshop(ctx, "Other room", []string{"set-leak"})
	if err != nil {
		t.Fatal(err)
	}
	if other.Code == w.Code || other.ID == w.ID {
		t.Fatal("two open workshops share a code or an id")
	}
	wantCode(t, s.VerifyFacilitator(ctx, w.ID, otherSecret), rlslab.EFORBIDDEN)

	// The current lesson.
	if err := s.SetCurrentLesson(ctx, w.ID, 2); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []int{-1, 3, 1 << 40} {
		wantCode(t, s.SetCurrentLesson(ctx, w.ID, bad), rlslab.EINVALID)
	}
	if got, _ := s.Workshop(ctx, w.ID); got.CurrentLesson != 2 {
		t.Fatalf("current lesson %d, want 2", got.CurrentLesson)
	}

	// Participants, their labs and last runs.
	ada, adaToken, err := s.Join(ctx, w.ID, " Ada ")
	if err != nil {
		t.Fatal(err)
	}
	bob, _, err := s.Join(ctx, w.ID, "<b>Bob</b>")
	if err != nil {
		t.Fatal(err)
	}
	if ada.Name != "Ada" || bob.Name != "<b>Bob</b>" || ada.Workshop != w.ID {
		t.Fatalf("joined %+v and %+v", ada, bob)
	}
	if l, err := s.LearnerByToken(ctx, adaToken); err != nil || l.ID != ada.Learner {
		t.Fatalf("Ada's token finds %+v, %v", l, err)
	}
	_, _, err = s.Join(ctx, w.ID, "ADA")
	wantCode(t, err, rlslab.ECONFLICT)
	if _, _, err := s.Join(ctx, other.ID, "Ada"); err != nil {
		t.Fatal("the same name in another workshop:", err)
	}
	if err := s.SetParticipantLab(ctx, ada.Learner, "a1b2c3d4"); err != nil {
		t.Fatal(err)
	}
	run := Run{Lesson: "set-leak", Scenario: "set-leak", Variant: "session-set", Status: "done", Leaks: 2, Outcome: "leak"}
	if err := s.RecordRun(ctx, ada.Learner, run); err != nil {
		t.Fatal(err)
	}
	ps, err := s.Participants(ctx, w.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].Name != "Ada" || ps[0].Lab != "a1b2c3d4" || ps[1].Name != "<b>Bob</b>" || ps[1].Lab != "" || ps[1].LastRun != nil {
		t.Fatalf("participants %+v", ps)
	}
	lr := ps[0].LastRun
	if lr == nil || lr.Lesson != "set-leak" || lr.Scenario != "set-leak" || lr.Variant != "session-set" || lr.Status != "done" || lr.Leaks != 2 || lr.Outcome != "leak" || lr.At.IsZero() {
		t.Fatalf("Ada's last run %+v", lr)
	}
	if p, err := s.Participant(ctx, bob.Learner); err != nil || p.Name != "<b>Bob</b>" || p.Workshop != w.ID {
		t.Fatalf("Participant(Bob) = %+v, %v", p, err)
	}
	progress, err := s.WorkshopProgress(ctx, w.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(progress) != 2 || len(progress[bob.Learner].Lessons) != 0 || !progress[ada.Learner].Lessons[0].LeakSeen {
		t.Fatalf("workshop progress %+v", progress)
	}
	if err := s.SetParticipantLab(ctx, bob.Learner, "ffff0000"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetParticipantLab(ctx, bob.Learner, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.SetParticipantLab(ctx, bob.Learner, "0000ffff"); err != nil {
		t.Fatal(err)
	}

	// The end.
	labs, err := s.EndWorkshop(ctx, w.ID)
	if err != nil || fmt.Sprint(labs) != "[a1b2c3d4 0000ffff]" {
		t.Fatalf("EndWorkshop = %v, %v; want [a1b2c3d4 0000ffff]", labs, err)
	}
	ended, err := s.Workshop(ctx, w.ID)
	if err != nil || !ended.Ended() {
		t.Fatalf("after the end: %+v, %v", ended, err)
	}
	again, err := s.EndWorkshop(ctx, w.ID)
	if err != nil || fmt.Sprint(again) != fmt.Sprint(labs) {
		t.Fatalf("EndWorkshop again = %v, %v", again, err)
	}
	if got, _ := s.Workshop(ctx, w.ID); !got.EndedAt.Equal(ended.EndedAt) {
		t.Fatal("ending twice moved the end time")
	}
	_, _, err = s.Join(ctx, w.ID, "Late")
	wantCode(t, err, rlslab.ECONFLICT)
	_, err = s.WorkshopByCode(ctx, w.Code)
	wantCode(t, err, rlslab.ENOTFOUND)
	wantCode(t, s.SetCurrentLesson(ctx, w.ID, 0), rlslab.ECONFLICT)
	wantCode(t, s.SetParticipantLab(ctx, ada.Learner, "deadbeef"), rlslab.ECONFLICT)
	if err := s.VerifyFacilitator(ctx, w.ID, secret); err != nil {
		t.Fatal("the facilitator of an ended workshop:", err)
	}
	if ps, err := s.Participants(ctx, w.ID); err != nil || len(ps) != 2 {
		t.Fatalf("participants after the end: %v, %v", ps, err)
	}
	// The other workshop is untouched.
	if got, err := s.WorkshopByCode(ctx, other.Code); err != nil || got.ID != other.ID {
		t.Fatalf("other workshop by code: %+v, %v", got, err)
	}
}

func TestWorkshopsBadInput(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, pool := newStore(t)
	cases := []struct {
		title   string
		lessons []string
	}{
		{"", []string{"set-leak"}},
		{"   ", []string{"set-leak"}},
		{strings.Repeat("t", 101), []string{"set-leak"}},
		{strings.Repeat("t", 10<<10), []string{"set-leak"}},
		{"Title\nwith a newline", []string{"set-leak"}},
		{"Room", nil},
		{"Room", []string{""}},
		{"Room", []string{"Set Leak"}},
		{"Room", []string{"set-leak", "set-leak"}},
		{"Room", []string{"set-leak/../x"}},
		{"Room", make([]string, MaxWorkshopLessons+1)},
	}
	room := "Room " + randomString(6) // apart from other tests' workshops
	var titles []string
	for i, c := range cases {
		if c.title == "Room" {
			c.title = room
		}
		titles = append(titles, c.title, strings.TrimSpace(c.title))
		_, _, err := s.CreateWorkshop(ctx, c.title, c.lessons)
		if rlslab.ErrorCode(err) != rlslab.EINVALID {
			t.Errorf("case %d: %v, want EINVALID", i, err)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM rlslab.workshops WHERE title = ANY ($1)", titles).Scan(&n); err != nil || n != 0 {
		t.Fatalf("bad input stored %d workshops (%v)", n, err)
	}

	for _, unknown := range []string{"", "nope", "ABCDEF", strings.Repeat("w", 10<<10), "a b"} {
		_, err := s.Workshop(ctx, unknown)
		wantCode(t, err, rlslab.ENOTFOUND)
		_, err = s.WorkshopByCode(ctx, unknown)
		wantCode(t, err, rlslab.ENOTFOUND)
		wantCode(t, s.VerifyFacilitator(ctx, unknown, "secret"), rlslab.ENOTFOUND)
		wantCode(t, s.SetCurrentLesson(ctx, unknown, 0), rlslab.ENOTFOUND)
		_, err = s.EndWorkshop(ctx, unknown)
		wantCode(t, err, rlslab.ENOTFOUND)
		_, _, err = s.Join(ctx, unknown, "Ada")
		wantCode(t, err, rlslab.ENOTFOUND)
		_, err = s.Participants(ctx, unknown)
		wantCode(t, err, rlslab.ENOTFOUND)
		_, err = s.WorkshopProgress(ctx, unknown)
		wantCode(t, err, rlslab.ENOTFOUND)
		_, err = s.Participant(ctx, unknown)
		wantCode(t, err, rlslab.ENOTFOUND)
		wantCode(t, s.SetParticipantLab(ctx, unknown, "a1b2c3d4"), rlslab.ENOTFOUND)
	}
	// A learner who is not a participant.
	l, _, err := s.CreateLearner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Participant(ctx, l.ID)
	wantCode(t, err, rlslab.ENOTFOUND)
	wantCode(t, s.SetParticipantLab(ctx, l.ID, "a1b2c3d4"), rlslab.ENOTFOUND)
	w, _, err := s.CreateWorkshop(ctx, "Room", []string{"set-leak"})
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := s.Join(ctx, w.ID, "Ada")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"lab 1", strings.Repeat("l", 65), "a/b", "<x>"} {
		wantCode(t, s.SetParticipantLab(ctx, p.Learner, bad), rlslab.EINVALID)
	}
}

func TestJoinNames(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, pool := newStore(t)
	w, _, err := s.CreateWorkshop(ctx, "Names", []string{"set-leak"})
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string]string{
		"10 KB":              strings.Repeat("n", 10<<10),
		"41 characters":      strings.Repeat("é", 41),
		"empty":              "",
		"only spaces":        " \t\n ",
		"NUL":                "Ada\x00",
		"newline inside":     "Ada\nLovelace",
		"escape":             "\x1b[31mAda",
		"DEL":                "Ada\x7f",
		"C1 control":         "Ada\u0085x",
		"right-to-left mark": "Ada\u202eecalevol",
		"line separator":     "Ada\u2028x",
		"zero-width space":   "Ada\u200b",
		"invalid UTF-8":      "Ada\xff",
	} {
		_, _, err := s.Join(ctx, w.ID, bad)
		if rlslab.ErrorCode(err) != rlslab.EINVALID {
			t.Errorf("%s: %v, want EINVALID", name, err)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM rlslab.participants WHERE workshop_id = $1", w.ID).Scan(&n); err != nil || n != 0 {
		t.Fatalf("bad names stored %d rows (%v)", n, err)
	}
	for _, good := range []string{strings.Repeat("é", 40), "<script>alert(1)</script>", "Zoë 👩‍💻", "O'Brien; DROP TABLE x", "李"} {
		p, _, err := s.Join(ctx, w.ID, "  "+good+"  ")
		if err != nil || p.Name != good {
			t.Errorf("Join(%q) = %+v, %v", good, p, err)
		}
	}
	ps, err := s.Participants(ctx, w.ID)
	if err != nil || len(ps) != 5 || ps[1].Name != "<script>alert(1)</script>" {
		t.Fatalf("participants %+v, %v", ps, err)
	}
}

func TestNameKey(t *testing.T) {
	for _, alike := range [][]string{
		{"ann", "Ann", "ANN", "аnn", "Аnn", "αnn", "ａｎｎ", "ann"},
		{"Paco", "Рaсо", "Ρacο"},
		{"Bex", "Вех", "ΒΕΧ"},
		{"fiona", "ﬁona", "FIONA"},
	} {
		for _, name := range alike[1:] {
			if NameKey(name) != NameKey(alike[0]) {
				t.Errorf("%q and %q look alike: keys %q and %q", name, alike[0], NameKey(name), NameKey(alike[0]))
			}
		}
	}
	for _, pair := range [][2]string{{"ann", "anna"}, {"Zoë", "Zoe"}, {"李", "季"}, {"Ивана", "Ivan"}} {
		if NameKey(pair[0]) == NameKey(pair[1]) {
			t.Errorf("%q and %q have one key %q", pair[0], pair[1], NameKey(pair[0]))
		}
	}
}

// TestJoinRefusesLookAlikeNames: once "ann" joined, a name that looks
// the same (Cyrillic а, Greek alpha, full-width letters, another case) is
// refused with the name already there; a different name joins.
func TestJoinRefusesLookAlikeNames(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := newStore(t)
	w, _, err := s.CreateWorkshop(ctx, "Look-alikes", []string{"set-leak"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Join(ctx, w.ID, "ann"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"аnn", "αnn", "ａｎｎ", "ANN", " Аnn "} {
		_, _, err := s.Join(ctx, w.ID, name)
		if rlslab.ErrorCode(err) != rlslab.ECONFLICT || !strings.Contains(rlslab.ErrorMessage(err), `"ann"`) {
			t.Errorf("Join(%q) next to ann: %v, want ECONFLICT naming ann", name, err)
		}
	}
	if _, _, err := s.Join(ctx, w.ID, "anna"); err != nil {
		t.Errorf("anna next to ann: %v", err)
	}
}

func TestJoinConcurrently(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := newStore(t)
	w, _, err := s.CreateWorkshop(ctx, "Busy room", []string{"set-leak"})
	if err != nil {
		t.Fatal(err)
	}
	const joiners = 12
	var wg sync.WaitGroup
	errs := make([]error, 2*joiners)
	for i := range joiners {
		wg.Go(func() { _, _, errs[i] = s.Join(ctx, w.ID, fmt.Sprintf("P%d", i)) })
		wg.Go(func() { _, _, errs[joiners+i] = s.Join(ctx, w.ID, "Same") })
	}
	wg.Wait()
	same := 0
	for i, err := range errs {
		switch {
		case i < joiners && err != nil:
			t.Errorf("joiner %d: %v", i, err)
		case i >= joiners && err == nil:
			same++
		case i >= joiners && rlslab.ErrorCode(err) != rlslab.ECONFLICT:
			t.Errorf("joiner %d: %v, want ECONFLICT", i, err)
		}
	}
	if same != 1 {
		t.Fatalf("%d joined as %q, want 1", same, "Same")
	}
	ps, err := s.Participants(ctx, w.ID)
	if err != nil || len(ps) != joiners+1 {
		t.Fatalf("%d participants (%v), want %d", len(ps), err, joiners+1)
	}
}

func TestEndRacesSetParticipantLab(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := newStore(t)
	// Every lab set before the end is returned by it; none is set after.
	for round := range 5 {
		w, _, err := s.CreateWorkshop(ctx, "Race", []string{"set-leak"})
		if err != nil {
			t.Fatal(err)
		}
		var ps []Participant
		for i := range 4 {
			p, _, err := s.Join(ctx, w.ID, fmt.Sprint("P", i))
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, p)
		}
		var wg sync.WaitGroup
		set := make([]error, len(ps))
		for i, p := range ps {
			wg.Go(func() { set[i] = s.SetParticipantLab(ctx, p.Learner, fmt.Sprintf("lab%d%d", round, i)) })
		}
		var labs []string
		var endErr error
		wg.Go(func() { labs, endErr = s.EndWorkshop(ctx, w.ID) })
		wg.Wait()
		if endErr != nil {
			t.Fatal(endErr)
		}
		returned := map[string]bool{}
		for _, l := range labs {
			returned[l] = true
		}
		for i, err := range set {
			lab := fmt.Sprintf("lab%d%d", round, i)
			switch {
			case err == nil && !returned[lab]:
				t.Errorf("round %d: lab %s was set but EndWorkshop did not return it", round, lab)
			case err != nil && rlslab.ErrorCode(err) != rlslab.ECONFLICT:
				t.Errorf("round %d: %v", round, err)
			}
		}
	}
}

func TestJoinCodes(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 2000 {
		c := newCode()
		if len(c) != codeLen || NormalizeCode(c) != c {
			t.Fatalf("code %q", c)
		}
		if strings.ContainsAny(c, "01OIL") {
			t.Fatalf("code %q holds an ambiguous character", c)
		}
		seen[c] = true
	}
	if len(seen) < 1990 {
		t.Fatalf("only %d distinct codes of 2000", len(seen))
	}
	for in, want := range map[string]string{"abc-d2f": "ABCD2F", " AB CD 23 ": "ABCD23", "ABCD2": "", "ABCD2F7": "", "ABCD0F": "", "ÄBCD2F": "", strings.Repeat("A", 1000): ""} {
		if got := NormalizeCode(in); got != want {
			t.Errorf("NormalizeCode(%q) = %q, want %q", in, got, want)
		}
	}
}

// testRecording returns a finished run of lab with n frames of about size
// bytes each, finished at finished.
func testRecording(lab string, finished time.Time, n, size int) Recording {
	frames := make([]Frame, n)
	for i := range frames {
		state := fmt.Sprintf(`{"status":"running","step":%d,"html":"<td class=\"leak\">Acme & Globex</td>","pad":%q}`, i, strings.Repeat("x", size))
		frames[i] = Frame{AtMs: int64(i * 50), State: json.RawMessage(state)}
	}
	return Recording{
		Lab: lab, Scenario: "set-leak", Variant: "session-set",
		Params: json.RawMessage(`{"speed": 1, "tenants": ["acme", "globex"]}`),
		Status: "done", Leaks: 2, Errors: 1,
		Outcome:         json.RawMessage(`{"scenario":"set-leak","variant":"session-set","leaks":2}`),
		PostgresVersion: "PostgreSQL 15.18", BouncerVersion: "",
		StartedAt: finished.Add(-time.Duration(n) * 50 * time.Millisecond), FinishedAt: finished,
		Frames: frames,
	}
}

// sameJSON reports whether a and b are the same JSON value.
func sameJSON(t *testing.T, a, b json.RawMessage) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return fmt.Sprint(x) == fmt.Sprint(y)
}

// checkSameRecording fails the test unless got is want as stored.
func checkSameRecording(t *testing.T, got, want Recording) {
	t.Helper()
	if got.ID != want.ID || got.Lab != want.Lab || got.Learner != want.Learner || got.Scenario != want.Scenario ||
		got.Variant != want.Variant || got.Status != want.Status || got.Error != want.Error || got.Leaks != want.Leaks ||
		got.Errors != want.Errors || got.PostgresVersion != want.PostgresVersion || got.BouncerVersion != want.BouncerVersion ||
		!got.StartedAt.Equal(want.StartedAt.Truncate(time.Microsecond)) || !got.FinishedAt.Equal(want.FinishedAt.Truncate(time.Microsecond)) {
		t.Fatalf("recording\n got %+v\nwant %+v", summary(got), summary(want))
	}
	if !sameJSON(t, got.Params, want.Params) || !sameJSON(t, got.Outcome, want.Outcome) {
		t.Fatalf("params %s, outcome %s; want %s, %s", got.Params, got.Outcome, want.Params, want.Outcome)
	}
	if len(got.Frames) != len(want.Frames) {
		t.Fatalf("%d frames, want %d", len(got.Frames), len(want.Frames))
	}
	for i := range got.Frames {
		if got.Frames[i].AtMs != want.Frames[i].AtMs || string(got.Frames[i].State) != string(want.Frames[i].State) {
			t.Fatalf("frame %d: %d %s, want %d %s", i, got.Frames[i].AtMs, truncate(string(got.Frames[i].State), 80),
				want.Frames[i].AtMs, truncate(string(want.Frames[i].State), 80))
		}
	}
}

// summary is r without its frames, for messages.
func summary(r Recording) Recording {
	r.Frames = nil
	return r
}

func TestRecordings(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, pool := newStore(t)
	l, _, err := s.CreateLearner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	lab := newLabID()
	// A few hundred KB of frames.
	big := testRecording(lab, now.Add(-time.Minute), 300, 1000)
	big.Learner = l.ID
	big.Error = "timeout: the lab's connection limit was reached"
	big.BouncerVersion = "PgBouncer 1.18.0"
	id, err := s.SaveRecording(ctx, big)
	if err != nil {
		t.Fatal(err)
	}
	if len(id) != 22 || !plausibleID(id) {
		t.Fatalf("recording id %q: want 22 URL-safe characters (128 random bits)", id)
	}
	got, err := s.GetRecording(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	big.ID = id
	checkSameRecording(t, got, big)

	// Newest first, without frames; other labs apart.
	small := testRecording(lab, now, 0, 0)
	small.Status, small.Leaks = "failed", 0
	small.Params, small.Outcome = nil, nil
	id2, err := s.SaveRecording(ctx, small)
	if err != nil {
		t.Fatal(err)
	}
	got2, err := s.GetRecording(ctx, id2)
	if err != nil {
		t.Fatal(err)
	}
	if string(got2.Params) != "{}" || string(got2.Outcome) != "null" || got2.Frames == nil || len(got2.Frames) != 0 || got2.Learner != "" {
		t.Fatalf("defaults: params %s, outcome %s, frames %#v, learner %q", got2.Params, got2.Outcome, got2.Frames, got2.Learner)
	}
	if _, err := s.SaveRecording(ctx, testRecording(newLabID(), now, 1, 10)); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListRecordings(ctx, lab)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(list)
	want := fmt.Sprintf(`[{"id":%q,"scenario":"set-leak","variant":"session-set","status":"failed","leaks":0,"finished_at":%s,"kind":""},`+
		`{"id":%q,"scenario":"set-leak","variant":"session-set","status":"done","leaks":2,"finished_at":%s,"kind":""}]`,
		id2, mustJSON(t, got2.FinishedAt), id, mustJSON(t, got.FinishedAt))
	if string(b) != want {
		t.Fatalf("ListRecordings\n got %s\nwant %s", b, want)
	}
	if list, err := s.ListRecordings(ctx, newLabID()); err != nil || list == nil || len(list) != 0 {
		t.Fatalf("a lab without recordings: %#v, %v", list, err)
	}

	// The frames column really holds them, and the export shape.
	var frameCount, stored int
	if err := pool.QueryRow(ctx, "SELECT frame_count, octet_length(frames) FROM rlslab.recordings WHERE id = $1", id).Scan(&frameCount, &stored); err != nil {
		t.Fatal(err)
	}
	if frameCount != 300 || stored < 300*1000 {
		t.Fatalf("stored %d frames in %d bytes", frameCount, stored)
	}
	export, err := json.Marshal(got2)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(export), `"frames":[]`) || strings.Contains(string(export), "learner") {
		t.Fatalf("export %s", export)
	}
}

// mustJSON returns v as JSON.
func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRecordingsBadInput(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, pool := newStore(t)
	now := time.Now()
	lab := newLabID()
	bad := map[string]func(r *Recording){
		"no lab":           func(r *Recording) { r.Lab = "" },
		"lab with a space": func(r *Recording) { r.Lab = "a b" },
		"long lab":         func(r *Recording) { r.Lab = strings.Repeat("l", 10<<10) },
		"no scenario":      func(r *Recording) { r.Scenario = "" },
		"bad variant":      func(r *Recording) { r.Variant = "Session SET" },
		"no status":        func(r *Recording) { r.Status = "" },
		"negative leaks":   func(r *Recording) { r.Leaks = -1 },
		"negative errors":  func(r *Recording) { r.Errors = -1 },
		"params not JSON":  func(r *Recording) { r.Params = json.RawMessage(`{"speed":`) },
		"outcome not JSON": func(r *Recording) { r.Outcome = json.RawMessage(`<html>`) },
		"frame not JSON":   func(r *Recording) { r.Frames[1].State = json.RawMessage(`{"a":}`) },
		"frame empty":      func(r *Recording) { r.Frames[1].State = nil },
		"frames backwards": func(r *Recording) { r.Frames[2].AtMs = 1 },
		"no start":         func(r *Recording) { r.StartedAt = time.Time{} },
		"finish before":    func(r *Recording) { r.FinishedAt = r.StartedAt.Add(-time.Second) },
		"unknown learner":  func(r *Recording) { r.Learner = "nobody" },
		"bad learner":      func(r *Recording) { r.Learner = "no body" },
		"huge error":       func(r *Recording) { r.Error = strings.Repeat("e", 10<<10) },
		"huge frames": func(r *Recording) {
			r.Frames[0].State = json.RawMessage(`"` + strings.Repeat("f", MaxFramesBytes) + `"`)
		},
	}
	for name, spoil := range bad {
		r := testRecording(lab, now, 3, 10)
		spoil(&r)
		if _, err := s.SaveRecording(ctx, r); rlslab.ErrorCode(err) != rlslab.EINVALID {
			t.Errorf("%s: %v, want EINVALID", name, err)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM rlslab.recordings WHERE lab_id = $1", lab).Scan(&n); err != nil || n != 0 {
		t.Fatalf("bad input stored %d recordings (%v)", n, err)
	}
	for _, unknown := range []string{"", "nope", "AAAAAAAAAAAAAAAAAAAAAA", strings.Repeat("r", 10<<10), "../etc/passwd"} {
		_, err := s.GetRecording(ctx, unknown)
		wantCode(t, err, rlslab.ENOTFOUND)
	}
	_, err := s.ListRecordings(ctx, "a b")
	wantCode(t, err, rlslab.EINVALID)
}

// saveAt saves a recording of lab finished at the time and returns its id.
func saveAt(t *testing.T, s *Store, lab string, finished time.Time) string {
	t.Helper()
	id, err := s.SaveRecording(testCtx(t), testRecording(lab, finished, 2, 10))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// listIDs returns the ids ListRecordings returns for lab.
func listIDs(t *testing.T, s *Store, lab string) []string {
	t.Helper()
	list, err := s.ListRecordings(testCtx(t), lab)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(list))
	for i, r := range list {
		ids[i] = r.ID
	}
	return ids
}

func TestPruneByCount(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, pool := freshStore(t, Options{KeepRecordings: 3})
	now := time.Now()
	var a []string
	for i := range 5 {
		a = append(a, saveAt(t, s, "laba", now.Add(time.Duration(i)*time.Second)))
	}
	b := saveAt(t, s, "labb", now)
	// SaveRecording keeps its lab within the count, newest first.
	if got, want := listIDs(t, s, "laba"), []string{a[4], a[3], a[2]}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("lab a keeps %v, want %v", got, want)
	}
	if got := listIDs(t, s, "labb"); fmt.Sprint(got) != fmt.Sprint([]string{b}) {
		t.Fatalf("lab b keeps %v", got)
	}
	_, err := s.GetRecording(ctx, a[0])
	wantCode(t, err, rlslab.ENOTFOUND)

	// Prune applies the count to every lab, here with a smaller one.
	s1, err := Open(ctx, pool, nil, Options{KeepRecordings: 1})
	if err != nil {
		t.Fatal(err)
	}
	n, err := s1.Prune(ctx)
	if err != nil || n != 2 {
		t.Fatalf("Prune = %d, %v; want 2", n, err)
	}
	if got := listIDs(t, s, "laba"); fmt.Sprint(got) != fmt.Sprint([]string{a[4]}) {
		t.Fatalf("lab a keeps %v, want [%s]", got, a[4])
	}
	if got := listIDs(t, s, "labb"); len(got) != 1 {
		t.Fatalf("lab b keeps %v", got)
	}
	if n, err := s1.Prune(ctx); err != nil || n != 0 {
		t.Fatalf("second Prune = %d, %v; want 0", n, err)
	}
}

func TestPruneByAge(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, pool := freshStore(t)
	now := time.Now()
	old := saveAt(t, s, "laba", now.Add(-DefaultRecordingAge-time.Hour))
	hourOld := saveAt(t, s, "laba", now.Add(-time.Hour))
	fresh := saveAt(t, s, "labb", now)
	n, err := s.Prune(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1", n, err)
	}
	_, err = s.GetRecording(ctx, old)
	wantCode(t, err, rlslab.ENOTFOUND)
	if got := listIDs(t, s, "laba"); fmt.Sprint(got) != fmt.Sprint([]string{hourOld}) {
		t.Fatalf("lab a keeps %v, want [%s]", got, hourOld)
	}
	// A shorter age limit.
	s30, err := Open(ctx, pool, nil, Options{RecordingAge: 30 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s30.Prune(ctx); err != nil || n != 1 {
		t.Fatalf("Prune (30 min) = %d, %v; want 1", n, err)
	}
	if _, err := s.GetRecording(ctx, fresh); err != nil {
		t.Fatal("the fresh recording:", err)
	}
}

func TestRecordingSurvivesReopen(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	db := sharedDB(t)
	pool := newPool(t, db)
	s, err := Open(ctx, pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := testRecording(newLabID(), time.Now(), 20, 100)
	id, err := s.SaveRecording(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	want.ID = id
	s.Close()
	_, err = s.GetRecording(ctx, id)
	wantCode(t, err, rlslab.EUNAVAILABLE)
	_, err = s.SaveRecording(ctx, want)
	wantCode(t, err, rlslab.EUNAVAILABLE)
	pool.Close()

	s2, err := Open(ctx, newPool(t, db), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s2.GetRecording(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	checkSameRecording(t, got, want)
}

// FuzzCleanName checks the display-name rules on any input: CleanName
// either rejects a name with EINVALID or returns a trimmed, valid name of
// 1 to MaxNameLen characters without control characters, which it accepts
// again unchanged.
func FuzzCleanName(f *testing.F) {
	for _, seed := range []string{"Ada", "  Ada  ", "", " ", "<b>Bob</b>", "Zoë 👩‍💻", "a\x00b", "a\nb", "\u202eRLO", "\xff", strings.Repeat("é", 40), strings.Repeat("é", 41),
		"аnn", "ΑΝΝ", "ａｎｎ", "Ann\u0345", "ﬁona", "Straße", "ǅ"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := CleanName(in)
		if err != nil {
			if code := rlslab.ErrorCode(err); code != rlslab.EINVALID {
				t.Fatalf("CleanName(%q): code %q, want EINVALID", in, code)
			}
			if out != "" {
				t.Fatalf("CleanName(%q) rejected but returned %q", in, out)
			}
			// A rejection has a reason (an input over the bound is refused
			// unread, however short it is once trimmed).
			trimmed := strings.TrimSpace(in)
			if len(in) <= textBound(MaxNameLen) && utf8.ValidString(in) && trimmed != "" && utf8.RuneCountInString(trimmed) <= MaxNameLen &&
				!strings.ContainsFunc(trimmed, isControl) {
				t.Fatalf("CleanName(%q) rejected a good name: %v", in, err)
			}
			return
		}
		if !utf8.ValidString(out) {
			t.Fatalf("CleanName(%q) = %q: not UTF-8", in, out)
		}
		if n := utf8.RuneCountInString(out); n < 1 || n > MaxNameLen {
			t.Fatalf("CleanName(%q) = %q: %d characters", in, out, n)
		}
		if out != strings.TrimSpace(out) || !strings.Contains(in, out) {
			t.Fatalf("CleanName(%q) = %q: not the input trimmed", in, out)
		}
		for _, r := range out {
			if isControl(r) || unicode.IsControl(r) {
				t.Fatalf("CleanName(%q) = %q holds control character %U", in, out, r)
			}
		}
		if again, err := CleanName(out); err != nil || again != out {
			t.Fatalf("CleanName(%q) = %q, %v; want it unchanged", out, again, err)
		}
		// A name's look-alike key is stable, and the key of its key, and of
		// the name in upper case, is the same.
		key := NameKey(out)
		if NameKey(out) != key || NameKey(key) != key || NameKey(strings.ToUpper(out)) != NameKey(strings.ToUpper(key)) {
			t.Fatalf("NameKey(%q) = %q: the key of the key is %q", out, key, NameKey(key))
		}
	})
}
