package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"github.com/rlslab/rlslab/scenarios/engine"
)

func TestMain(m *testing.M) { pgenvtest.Main(m) }

// runCmd runs the program with args and returns stdout, stderr, the error
// and its exit code.
func runCmd(t *testing.T, env map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := run(ctx, args, func(k string) string { return env[k] }, &out, &errb)
	code := 0
	if err != nil {
		code = exitCode(err)
		errb.WriteString(err.Error())
	}
	return out.String(), errb.String(), code
}

func TestListJSON(t *testing.T) {
	// Its own cluster (or none): it runs beside the others.
	t.Parallel()
	out, _, code := runCmd(t, nil, "list", "-json")
	var got []struct {
		ID       string `json:"id"`
		Title    string `json:"title"`
		Variants []struct {
			Name    string `json:"name"`
			Summary string `json:"summary"`
		} `json:"variants"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || len(got) == 0 {
		t.Fatalf("list -json: exit %d, %s", code, out)
	}
	if got[0].ID != "set-leak" || len(got[0].Variants) != 3 || got[0].Variants[0].Name != "session-set" || got[0].Variants[0].Summary == "" {
		t.Errorf("list -json: %+v", got[0])
	}
	out, _, code = runCmd(t, nil, "list")
	if code != 0 || !strings.Contains(out, "set-leak") || !strings.Contains(out, "batch-local") {
		t.Errorf("list: exit %d, %s", code, out)
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	// Its own cluster (or none): it runs beside the others.
	t.Parallel()
	for _, args := range [][]string{
		{"run", "nope", "-variant", "x"},
		{"run", "set-leak", "-variant", "nope"},
		{"run", "set-leak"},
		{"run"},
		{"run", "set-leak", "-variant", "tx-local", "-param", "pool=9"},
		{"bogus"},
		{"serve", "-max-labs", "0"},
		{"serve", "-no-such-flag"},
	} {
		_, stderr, code := runCmd(t, nil, args...)
		if code != 2 || stderr == "" {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a message", args, code, stderr)
		}
	}
}

func TestRunHeadless(t *testing.T) {
	srv := pgenvtest.MustServer(t)
	// Flags after the scenario id, -db as for serve.
	out, stderr, code := runCmd(t, nil, "run", "set-leak", "-variant", "session-set", "-json", "-db", srv.URL)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var o engine.Outcome
	if err := json.Unmarshal([]byte(out), &o); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if o.Scenario != "set-leak" || o.Variant != "session-set" || o.Leaks != 1 || len(o.Requests) != 3 {
		t.Errorf("outcome %+v", o)
	}
	// DATABASE_URL in auto mode, flags before the id.
	out, stderr, code = runCmd(t, map[string]string{"DATABASE_URL": srv.URL}, "run", "-json", "-variant", "tx-local", "set-leak")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	o = engine.Outcome{}
	if err := json.Unmarshal([]byte(out), &o); err != nil || o.Leaks != 0 || o.Variant != "tx-local" {
		t.Errorf("tx-local outcome %+v (%v)", o, err)
	}
}

func TestServeAndShutdown(t *testing.T) {
	srv := pgenvtest.MustServer(t)
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs lockedBuffer
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-db", srv.URL, "-max-labs", "2"}, func(string) string { return "" }, pw, &logs)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("serve printed nothing: %v", <-done)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	base, ok := strings.CutPrefix(strings.TrimSpace(line), "rlslab listening on ")
	if !ok {
		t.Fatalf("first line %q", line)
	}
	resp, err := http.Get(base + "/lessons/set-leak")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("lesson page: %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve returned %v after cancel", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not shut down")
	}
	// The labs it created are gone.
	if n, _, _ := leftovers(t, logs.String()); n != 0 {
		t.Errorf("%d lab databases left after shutdown", n)
	}
}

func TestDefaultDataDir(t *testing.T) {
	// Its own cluster (or none): it runs beside the others.
	t.Parallel()
	xdg := func(k string) string { return map[string]string{"XDG_DATA_HOME": "/x/data"}[k] }
	if got := defaultDataDir(xdg, 1000); got != "/x/data/rlslab/pgdata" {
		t.Errorf("with XDG_DATA_HOME: %q", got)
	}
	if got := defaultDataDir(func(string) string { return "" }, 1000); got != "" && !strings.HasSuffix(got, "rlslab/pgdata") {
		t.Errorf("without XDG_DATA_HOME: %q", got)
	}
	// As root, PostgreSQL runs as another user, who cannot reach root's
	// home: the cluster lives under /var/lib.
	if got := defaultDataDir(xdg, 0); got != "/var/lib/rlslab/pgdata" {
		t.Errorf("as root: %q", got)
	}
	var d dbFlags
	d.ephemeral, d.dataDir = true, t.TempDir()
	if _, err := d.provision(context.Background(), func(string) string { return "" }, nil); exitCode(err) != 2 {
		t.Errorf("-ephemeral with -data-dir: %v, want a usage error", err)
	}
}
