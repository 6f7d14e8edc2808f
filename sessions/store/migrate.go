package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rlslab/rlslab"
)

// migrateLockKey is the pg_advisory_xact_lock key that serializes
// migrations of one database ("rlslab" in ASCII). Advisory locks are per
// database, so labs and other databases are not affected.
const migrateLockKey int64 = 0x726c736c6162

// migration is one versioned change of the rlslab schema. Versions start at
// 1 and follow each other without gaps; a released migration never changes.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns every migration in version order.
func migrations() []migration {
	return []migration{
		{1, "learners, progress, workshops, participants, recordings", `
CREATE TABLE rlslab.learners (
	id                text PRIMARY KEY,
	token_hash        bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
	created_at        timestamptz NOT NULL DEFAULT now(),
	last_run_lesson   text,
	last_run_scenario text,
	last_run_variant  text,
	last_run_status   text,
	last_run_leaks    integer,
	last_run_at       timestamptz
);

CREATE TABLE rlslab.progress (
	learner_id   text NOT NULL REFERENCES rlslab.learners ON DELETE CASCADE,
	lesson       text NOT NULL,
	variants_run text[] NOT NULL DEFAULT '{}',
	leak_seen    boolean NOT NULL DEFAULT false,
	fix_run      boolean NOT NULL DEFAULT false,
	updated_at   timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (learner_id, lesson)
);

CREATE TABLE rlslab.predictions (
	learner_id  text NOT NULL,
	lesson      text NOT NULL,
	variant     text NOT NULL,
	choice      text NOT NULL,
	correct     boolean NOT NULL,
	answered_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (learner_id, lesson, variant),
	FOREIGN KEY (learner_id, lesson) REFERENCES rlslab.progress ON DELETE CASCADE
);

CREATE TABLE rlslab.workshops (
	id               text PRIMARY KEY,
	title            text NOT NULL,
	lessons          text[] NOT NULL CHECK (cardinality(lessons) > 0),
	code             text NOT NULL,
	facilitator_hash bytea NOT NULL CHECK (octet_length(facilitator_hash) = 32),
	current_lesson   integer NOT NULL DEFAULT 0,
	created_at       timestamptz NOT NULL DEFAULT now(),
	ended_at         timestamptz,
	CHECK (current_lesson >= 0 AND current_lesson < cardinality(lessons))
);
-- A join code is unique among open workshops; an ended workshop's code may
-- be handed out again.
CREATE UNIQUE INDEX workshops_open_code ON rlslab.workshops (code) WHERE ended_at IS NULL;

CREATE TABLE rlslab.participants (
	learner_id  text PRIMARY KEY REFERENCES rlslab.learners ON DELETE CASCADE,
	workshop_id text NOT NULL REFERENCES rlslab.workshops ON DELETE CASCADE,
	name        text NOT NULL,
	lab_id      text,
	joined_at   timestamptz NOT NULL DEFAULT now(),
	seq         bigint GENERATED ALWAYS AS IDENTITY
);
CREATE UNIQUE INDEX participants_name ON rlslab.participants (workshop_id, lower(name));

CREATE TABLE rlslab.recordings (
	id                text PRIMARY KEY,
	seq               bigint GENERATED ALWAYS AS IDENTITY,
	lab_id            text NOT NULL,
	learner_id        text REFERENCES rlslab.learners ON DELETE SET NULL,
	scenario          text NOT NULL,
	variant           text NOT NULL,
	params            jsonb NOT NULL,
	status            text NOT NULL,
	error             text NOT NULL,
	leaks             integer NOT NULL,
	errors            integer NOT NULL,
	outcome           jsonb NOT NULL,
	postgres_version  text NOT NULL,
	pgbouncer_version text NOT NULL,
	started_at        timestamptz NOT NULL,
	finished_at       timestamptz NOT NULL,
	frame_count       integer NOT NULL,
	frames            bytea NOT NULL
);
CREATE INDEX recordings_lab ON rlslab.recordings (lab_id, finished_at DESC, seq DESC);
CREATE INDEX recordings_finished ON rlslab.recordings (finished_at);
`},
		{2, "pending predictions; what a checked prediction's run showed", `
CREATE TABLE rlslab.pending_predictions (
	learner_id  text NOT NULL,
	lesson      text NOT NULL,
	variant     text NOT NULL,
	choice      integer NOT NULL CHECK (choice >= 0 AND choice < 16),
	choice_text text NOT NULL,
	chosen_at   timestamptz NOT NULL,
	PRIMARY KEY (learner_id, lesson, variant),
	FOREIGN KEY (learner_id, lesson) REFERENCES rlslab.progress ON DELETE CASCADE
);

ALTER TABLE rlslab.predictions
	ADD COLUMN actual   text NOT NULL DEFAULT '',
	ADD COLUMN evidence text NOT NULL DEFAULT '';
`},
		{3, "a participant's current lesson; recordings by learner", `
ALTER TABLE rlslab.participants
	ADD COLUMN current_lesson    text,
	ADD COLUMN current_lesson_at timestamptz;

CREATE INDEX recordings_learner ON rlslab.recordings (learner_id, scenario, variant, finished_at DESC)
	WHERE learner_id IS NOT NULL;
`},
		{4, "a workshop's expected size", `
ALTER TABLE rlslab.workshops
	ADD COLUMN expected integer NOT NULL DEFAULT 0 CHECK (expected BETWEEN 0 AND 2000);
`},
		{5, "instances and their leases of each server's connection budget", `
-- A running rlslab instance: its name, where it serves HTTP (for
-- forwarding a request to the instance that runs a lab), the advisory lock
-- it holds while it runs (the marker on its labs), the tag its lab ids
-- begin with, and its heartbeat: an instance that stops renewing
-- expires_at, or whose lock is gone, is dead.
CREATE TABLE rlslab.instances (
	name       text PRIMARY KEY,
	address    text NOT NULL DEFAULT '',
	lock_id    bigint NOT NULL,
	tag        text NOT NULL DEFAULT '',
	started_at timestamptz NOT NULL DEFAULT now(),
	expires_at timestamptz NOT NULL
);

-- A PostgreSQL server whose connections rlslab instances share, by its
-- system identifier; its row is locked while a lease changes.
CREATE TABLE rlslab.servers (
	id         text PRIMARY KEY,
	budget     integer NOT NULL CHECK (budget > 0),
	updated_at timestamptz NOT NULL DEFAULT now()
);

-- What one instance has claimed of one server's budget: conns (its own
-- connections and its runs' leases), used (what it holds now), and what
-- waits in its admission queue, so that the other instances keep
-- connections for a run that has waited long and count it in their queue
-- messages. A lease lives as long as its instance.
CREATE TABLE rlslab.leases (
	server        text NOT NULL REFERENCES rlslab.servers ON DELETE CASCADE,
	instance      text NOT NULL REFERENCES rlslab.instances ON DELETE CASCADE,
	conns         integer NOT NULL CHECK (conns >= 0),
	used          integer NOT NULL DEFAULT 0,
	oldest_since  timestamptz,
	oldest_need   integer NOT NULL DEFAULT 0,
	waiting_since timestamptz[] NOT NULL DEFAULT '{}',
	PRIMARY KEY (server, instance)
);
`},
		{6, "the outcome kind of a learner's last run", `
ALTER TABLE rlslab.learners
	ADD COLUMN last_run_outcome text NOT NULL DEFAULT '';
`},
		{7, "the spare sandboxes each instance keeps ready on each server", `
-- ready: the spare sandboxes the instance has built on the server and not
-- yet given to a lab, so that a workshop's dashboard, read on any
-- instance, counts the labs prepared on all of them.
ALTER TABLE rlslab.leases
	ADD COLUMN ready integer NOT NULL DEFAULT 0;
`},
		{8, "where each instance's PostgreSQL proxy is", `
-- proxy_address: where the instance's PostgreSQL proxy is reached by the
-- other instances ('' when it has none), so that an app connecting to any
-- instance's proxy reaches a lab another instance runs.
ALTER TABLE rlslab.instances
	ADD COLUMN proxy_address text NOT NULL DEFAULT '';
`},
	}
}

// migrate brings the rlslab schema up to the newest migration, in one
// transaction that holds the migration lock.
func (s *Store) migrate(ctx context.Context) error {
	start := time.Now()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return rlslab.Errorf(rlslab.EUNAVAILABLE, "store: cannot reach PostgreSQL to migrate rlslab's tables: %v", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit

	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrateLockKey); err != nil {
		return wrap("taking the migration lock", err)
	}
	if _, err := tx.Exec(ctx, `
CREATE SCHEMA IF NOT EXISTS rlslab;
CREATE TABLE IF NOT EXISTS rlslab.schema_migrations (
	version    integer PRIMARY KEY,
	name       text NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now()
)`); err != nil {
		return wrap("creating the schema", err)
	}
	var current int
	if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM rlslab.schema_migrations").Scan(&current); err != nil {
		return wrap("reading the schema version", err)
	}
	all := migrations()
	if current > len(all) {
		return rlslab.Errorf(rlslab.EUNAVAILABLE,
			"store: rlslab's tables are at version %d but this rlslab knows only up to %d: run a newer rlslab", current, len(all))
	}
	for _, m := range all[current:] {
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return wrap("migration "+m.name, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO rlslab.schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
			return wrap("recording migration "+m.name, err)
		}
	}
	if err := checkSchema(ctx, tx, len(all)); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return wrap("committing migrations", err)
	}
	if applied := len(all) - current; applied > 0 {
		s.log.Info("store: migrated rlslab's tables", "from", current, "to", len(all), "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// schemaVersion returns the newest applied migration.
func (s *Store) schemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM rlslab.schema_migrations").Scan(&v)
	return v, wrap("reading the schema version", err)
}

// schemaTables lists every table of the rlslab schema and its columns as
// the newest migration leaves them; schemaIndexes lists its indexes (beyond
// primary keys and unique constraints). A migration that adds or removes
// one changes these lists too (a test compares them with a migrated
// database).
var (
	schemaTables = []struct {
		name    string
		columns []string
	}{
		{"schema_migrations", []string{"version", "name", "applied_at"}},
		{"learners", []string{"id", "token_hash", "created_at", "last_run_lesson", "last_run_scenario", "last_run_variant", "last_run_status", "last_run_leaks", "last_run_at", "last_run_outcome"}},
		{"progress", []string{"learner_id", "lesson", "variants_run", "leak_seen", "fix_run", "updated_at"}},
		{"predictions", []string{"learner_id", "lesson", "variant", "choice", "correct", "answered_at", "actual", "evidence"}},
		{"pending_predictions", []string{"learner_id", "lesson", "variant", "choice", "choice_text", "chosen_at"}},
		{"workshops", []string{"id", "title", "lessons", "code", "facilitator_hash", "current_lesson", "created_at", "ended_at", "expected"}},
		{"participants", []string{"learner_id", "workshop_id", "name", "lab_id", "joined_at", "seq", "current_lesson", "current_lesson_at"}},
		{"recordings", []string{"id", "seq", "lab_id", "learner_id", "scenario", "variant", "params", "status", "error", "leaks", "errors", "outcome",
			"postgres_version", "pgbouncer_version", "started_at", "finished_at", "frame_count", "frames"}},
		{"instances", []string{"name", "address", "lock_id", "tag", "started_at", "expires_at", "proxy_address"}},
		{"servers", []string{"id", "budget", "updated_at"}},
		{"leases", []string{"server", "instance", "conns", "used", "oldest_since", "oldest_need", "waiting_since", "ready"}},
	}
	schemaIndexes = []string{"workshops_open_code", "participants_name", "recordings_lab", "recordings_finished", "recordings_learner"}
)

// wantedSchema returns the objects the newest migration leaves, as
// "table rlslab.t", "column rlslab.t.c" and "index rlslab.i", in order.
func wantedSchema() []string {
	var out []string
	for _, t := range schemaTables {
		out = append(out, "table rlslab."+t.name)
		for _, c := range t.columns {
			out = append(out, "column rlslab."+t.name+"."+c)
		}
	}
	for _, i := range schemaIndexes {
		out = append(out, "index rlslab."+i)
	}
	return out
}

// presentSchema returns the tables, columns and indexes that exist in the
// rlslab schema, named as wantedSchema names them.
func presentSchema(ctx context.Context, q pgx.Tx) (map[string]bool, error) {
	rows, err := q.Query(ctx, `
		SELECT 'table rlslab.' || c.relname FROM pg_class c
		WHERE c.relnamespace = 'rlslab'::regnamespace AND c.relkind IN ('r', 'p')
		UNION ALL
		SELECT 'column rlslab.' || c.relname || '.' || a.attname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
		WHERE c.relnamespace = 'rlslab'::regnamespace AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
		UNION ALL
		SELECT 'index rlslab.' || c.relname FROM pg_class c
		WHERE c.relnamespace = 'rlslab'::regnamespace AND c.relkind IN ('i', 'I')`)
	if err != nil {
		return nil, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = true
	}
	return out, nil
}

// checkSchema refuses a schema that lacks an object its migration version
// promises (a table dropped by hand, say): rlslab would start and then fail
// on every request that needs it. The error names what is missing.
func checkSchema(ctx context.Context, tx pgx.Tx, version int) error {
	have, err := presentSchema(ctx, tx)
	if err != nil {
		return wrap("checking the schema", err)
	}
	var missing []string
	for _, o := range wantedSchema() {
		if have[o] {
			continue
		}
		// A missing table's columns go without saying.
		if rest, ok := strings.CutPrefix(o, "column "); ok {
			if table := rest[:strings.LastIndexByte(rest, '.')]; !have["table "+table] {
				continue
			}
		}
		missing = append(missing, o)
	}
	if len(missing) == 0 {
		return nil
	}
	more := ""
	if len(missing) > 3 {
		more = fmt.Sprintf(" (and %d more)", len(missing)-3)
		missing = missing[:3]
	}
	return rlslab.Errorf(rlslab.EUNAVAILABLE,
		"store: rlslab schema is missing %s%s, though rlslab.schema_migrations says version %d: restore the schema from a backup, or drop schema rlslab (its data is lost) to have it created again",
		strings.Join(missing, ", "), more, version)
}
