package pgproxy

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// runClient runs a client program and returns its standard output.
func runClient(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return out
}

// node-postgres through the proxy gets what it gets direct; with the seed's
// pattern on a pool of 2, the proxy reports the forgetful request's query
// (tenant 2 declared) on the PID the app read, under tenant 1's setting,
// with tenant 1's rows: a leak.
func TestNodePostgres(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: install Node.js to run the node-postgres test")
	}
	dir, _ := filepath.Abs("testdata/node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "pg")); err != nil {
		t.Skip("node-postgres is not installed: run npm ci --prefix internal/pgproxy/testdata/node")
	}
	f := newFixture(t, nil)
	type output struct {
		Results json.RawMessage
		Seed    json.RawMessage
		PIDs    struct{ A, B uint32 }
	}
	var direct, proxied output
	if err := json.Unmarshal(runClient(t, node, filepath.Join(dir, "run.js"), f.directURL), &direct); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(runClient(t, node, filepath.Join(dir, "run.js"), f.proxyURL), &proxied); err != nil {
		t.Fatal(err)
	}
	if string(proxied.Results) != string(direct.Results) || string(proxied.Seed) != string(direct.Seed) {
		t.Errorf("through the proxy:\n%s\n%s\ndirect:\n%s\n%s", proxied.Results, proxied.Seed, direct.Results, direct.Seed)
	}
	if proxied.PIDs.A == 0 || proxied.PIDs.A != proxied.PIDs.B {
		t.Fatalf("the two requests ran on backends %d and %d, want one pooled connection", proxied.PIDs.A, proxied.PIDs.B)
	}
	f.events.mu.Lock()
	defer f.events.mu.Unlock()
	var leak *Result
	var leakPID uint32
	for i, r := range f.events.results {
		if r.Declared == "2" && r.Rows > 0 && !r.InTransaction {
			leak, leakPID = &f.events.results[i], f.events.resultPIDs[i]
		}
	}
	if leak == nil {
		t.Fatal("no result for the forgetful request's query")
	}
	if leakPID != proxied.PIDs.B {
		t.Errorf("the leak is reported on backend %d, the app read %d", leakPID, proxied.PIDs.B)
	}
	if !leak.Leak() || leak.Setting.Value != "1" || leak.ForeignRows != leak.Rows || leak.Rows != 3 {
		t.Errorf("the forgetful request's result = %+v, want 3 rows all foreign under setting 1", *leak)
	}
}

// psycopg 3 (Debian's python3-psycopg) through the proxy gets what it gets
// direct: prepared statements, a pipeline with an error, SET LOCAL, COPY.
func TestPsycopg(t *testing.T) {
	t.Parallel()
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import psycopg").Run(); err != nil {
		t.Skip("psycopg is not installed for /usr/bin/python3: apt-get install python3-psycopg")
	}
	f := newFixture(t, nil)
	script, _ := filepath.Abs("testdata/psycopg_run.py")
	var want, got any
	if err := json.Unmarshal(runClient(t, py, script, f.directURL), &want); err != nil {
		t.Fatal(err)
	}
	if _, err := f.admin.Exec(context.Background(), "TRUNCATE "+f.schema+".notes"); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(runClient(t, py, script, f.proxyURL), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("through the proxy:\n%v\ndirect:\n%v", got, want)
	}
}
