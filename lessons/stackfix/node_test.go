package stackfix_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// nodeChecks is one "node fixes.js --serve" process that runs every check
// of one test, one after the other: starting node and loading TypeORM
// takes seconds on a loaded machine, longer than the checks themselves.
type nodeChecks struct {
	mu     sync.Mutex
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr bytes.Buffer
}

// nodeInstalled returns the path of node and of the fixes app, or "" when
// node or the app's packages are not installed.
func nodeInstalled() (node, dir string) {
	node, err := exec.LookPath("node")
	if err != nil {
		return "", ""
	}
	dir, _ = filepath.Abs(nodeApp)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "typeorm")); err != nil {
		return "", ""
	}
	return node, dir
}

// nodeChecks returns the test's node process, started on first use and
// ended when the test ends, or nil when node or the app's packages are
// not installed.
func (f *fixture) nodeChecks(t *testing.T) *nodeChecks {
	t.Helper()
	f.nodeOnce.Do(func() {
		node, dir := nodeInstalled()
		if node == "" {
			return
		}
		n := &nodeChecks{cmd: exec.CommandContext(f.ctx, node, "fixes.js", "--serve")}
		n.cmd.Dir = dir
		n.cmd.Stderr = &n.stderr
		in, err := n.cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := n.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := n.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		n.in, n.out = in, bufio.NewReader(out)
		f.nodeProc = n
		// Registered on the test that made the fixture (not on a subtest),
		// after the lab's cleanup, so that it runs before the lab is dropped.
		f.t.Cleanup(func() {
			n.in.Close()
			if err := n.cmd.Wait(); err != nil {
				t.Errorf("node fixes.js --serve: %v\n%s", err, n.stderr.String())
			}
		})
	})
	return f.nodeProc
}

// node runs one check of fixes.js against url with args (pairs of flag
// names without dashes and values) and decodes what it prints into out.
// It returns false, having run nothing, when node or the app's packages
// are not installed.
func (f *fixture) node(t *testing.T, url, check string, out any, args ...string) bool {
	t.Helper()
	n := f.nodeChecks(t)
	if n == nil {
		return false
	}
	req := map[string]string{"url": url, "check": check}
	for i := 0; i+1 < len(args); i += 2 {
		req[args[i]] = args[i+1]
	}
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, err := n.in.Write(append(b, '\n')); err != nil {
		t.Fatalf("%s: %v\n%s", check, err, n.stderr.String())
	}
	line, err := n.out.ReadBytes('\n')
	if err != nil {
		t.Fatalf("%s: node ended: %v\n%s", check, err, n.stderr.String())
	}
	var failed struct{ Failure *string }
	if err := json.Unmarshal(line, &failed); err != nil {
		t.Fatalf("%s printed %q: %v", check, line, err)
	}
	if failed.Failure != nil {
		t.Fatalf("%s: %s", check, *failed.Failure)
	}
	if err := json.Unmarshal(line, out); err != nil {
		t.Fatalf("%s printed %q: %v", check, line, err)
	}
	t.Logf("%s: %s", check, strings.TrimSpace(string(line)))
	return true
}
