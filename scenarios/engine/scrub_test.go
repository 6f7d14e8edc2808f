package engine_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// private are the texts of rlslab's own that must never reach a state.
func private(port string) []string {
	return []string{"rlslab_admin", "127.0.0.1", "localhost", ":" + port, "user=", "/tmp/", ".s.PGSQL"}
}

func TestScrubTakesOutWhereAndAsWhom(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"failed to connect to `user=rlslab_admin database=pgbouncer`: 127.0.0.1:6433 (127.0.0.1): dial error: dial tcp 127.0.0.1:6433: connect: connection refused",
			"failed to connect: dial error: dial tcp (the server's address): connect: connection refused"},
		{"failed to connect to `user=lab_1a2b_app database=lab_1a2b`: /tmp/rlslab-123/.s.PGSQL.5432 (/tmp/rlslab-123): server error: FATAL: too many connections for role \"lab_1a2b_app\" (SQLSTATE 53300)",
			"failed to connect: server error: FATAL: too many connections for role \"lab_1a2b_app\" (SQLSTATE 53300)"},
		{"FATAL: password authentication failed for user \"postgres\" (SQLSTATE 28P01)",
			"FATAL: password authentication failed for user (one of rlslab's own) (SQLSTATE 28P01)"},
		{"dial tcp [::1]:5432: connect: connection refused", "dial tcp (the server's address): connect: connection refused"},
		{"cannot reach postgres://rlslab_admin:secret@db.example.com:5432/x?sslmode=disable now", "cannot reach (a connection URL) now"},
		{"host=db.internal port=5433 user=admin: timeout", ": timeout"},
		{"read SHOW POOLS as rlslab_admin: EOF", "read SHOW POOLS as (one of rlslab's own roles): EOF"},
		{"Request #2 (Globex) finds backend 4242 holding acme: 3 rows of Acme's.", "Request #2 (Globex) finds backend 4242 holding acme: 3 rows of Acme's."},
		{`permission denied for table invoices; role "lab_x_owner" owns it`, `permission denied for table invoices; role "lab_x_owner" owns it`},
	} {
		if got := engine.Scrub(c.in); got != c.want {
			t.Errorf("Scrub(%q)\n got %q\nwant %q", c.in, got, c.want)
		}
	}
}

// TestRunErrorsEnterTheStateScrubbed plays a variant that meets a real
// connection error (a PgBouncer admin console that is gone: nothing
// listens on the port) in its narration, a note, a request's error and the
// run's own error: none of them shows the address, the port or the role.
func TestRunErrorsEnterTheStateScrubbed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there any more
	_, port, _ := net.SplitHostPort(addr)
	url := "postgres://rlslab_admin:pw@" + addr + "/pgbouncer?sslmode=disable&connect_timeout=5"
	sc := &engine.Scenario{ID: "gone", MinTenants: 1, Variants: []engine.Variant{{Name: "v", Conns: engine.Fixed(0),
		Run: func(ctx context.Context, env *engine.Env) error {
			_, err := pgx.Connect(ctx, url)
			if err == nil {
				return errors.New("connected to a closed port")
			}
			r := env.NewRequest(env.Sandbox.Tenants[0], engine.PatternSessionSet, "admin console", "waiting")
			r.Fail(err)
			env.Tracker().Note("Reading SHOW POOLS failed: " + err.Error())
			if err := env.Step(ctx, fmt.Sprintf("PgBouncer is gone: %v", err)); err != nil {
				return err
			}
			return fmt.Errorf("read pgbouncer pools: %w", err)
		}}}}
	tr := engine.NewTracker("x", nil)
	tr.Begin(sc.ID, "v", "max")
	sb := engine.Sandbox{Tenants: []engine.Tenant{{Name: "Acme", ID: 1}}}
	if err := engine.PlayAndClose(context.Background(), sc, "v", engine.NewEnv(sb, nil, tr, engine.NewPace(engine.Speed{Max: true}), nil)); err == nil {
		t.Fatal("the run did not fail")
	}
	st := tr.Snapshot()
	texts := map[string]string{"error": st.Error, "narration": st.Narration}
	for i, n := range st.Notes {
		texts[fmt.Sprintf("note %d", i)] = n
	}
	for _, r := range st.Requests {
		texts[fmt.Sprintf("request %d", r.Seq)] = r.Error
	}
	if len(texts) < 4 || !strings.Contains(st.Error, "connect") {
		t.Fatalf("the run's texts are not all there: %q", texts)
	}
	for where, text := range texts {
		for _, p := range private(port) {
			if strings.Contains(text, p) {
				t.Errorf("%s shows %q: %s", where, p, text)
			}
		}
	}
}
