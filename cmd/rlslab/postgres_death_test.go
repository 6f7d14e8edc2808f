package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// serveChild is rlslab serve running as a child process (the test binary
// itself, see serveEnv), with its log collected line by line.
type serveChild struct {
	cmd    *exec.Cmd
	exited chan error
	base   chan string // the address it listens on, once it does

	mu     sync.Mutex
	lines  []string
	waiter func(string) bool // called on every new line until it says true
	seen   chan struct{}
}

// startServeChild starts rlslab serve with args in a child process whose
// TMPDIR is tmp and whose environment has no DATABASE_URL.
func startServeChild(t *testing.T, tmp string, args ...string) *serveChild {
	t.Helper()
	c := &serveChild{exited: make(chan error, 1), base: make(chan string, 1)}
	c.cmd = exec.Command(os.Args[0], append([]string{"serve"}, args...)...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DATABASE_URL=") && !strings.HasPrefix(kv, "TMPDIR=") {
			env = append(env, kv)
		}
	}
	c.cmd.Env = append(env, serveEnv+"=1", "TMPDIR="+tmp)
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if base, ok := strings.CutPrefix(sc.Text(), "rlslab listening on "); ok {
				c.base <- base
			}
		}
	}()
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			c.mu.Lock()
			c.lines = append(c.lines, sc.Text())
			if c.waiter != nil && c.waiter(sc.Text()) {
				c.waiter = nil
				close(c.seen)
			}
			c.mu.Unlock()
		}
	}()
	go func() {
		<-read // Wait closes the pipe: read it to the end first
		c.exited <- c.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		err := <-c.exited
		c.exited <- err
	})
	return c
}

// listening waits until the child listens and returns its base URL.
func (c *serveChild) listening(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case base := <-c.base:
		return base
	case err := <-c.exited:
		c.exited <- err
		t.Fatalf("rlslab exited (%v) before listening; log:\n%s", err, c.log())
	case <-time.After(timeout):
		t.Fatalf("rlslab did not listen within %s; log:\n%s", timeout, c.log())
	}
	return ""
}

// waitLine waits until the child logs a line containing all of parts (or
// has logged one already); it fails the test after timeout.
func (c *serveChild) waitLine(t *testing.T, timeout time.Duration, parts ...string) {
	t.Helper()
	match := func(l string) bool {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				return false
			}
		}
		return true
	}
	c.mu.Lock()
	for _, l := range c.lines {
		if match(l) {
			c.mu.Unlock()
			return
		}
	}
	c.seen = make(chan struct{})
	c.waiter = match
	seen := c.seen
	c.mu.Unlock()
	select {
	case <-seen:
	case err := <-c.exited:
		c.exited <- err
		t.Fatalf("rlslab exited (%v) before logging %q; log:\n%s", err, parts, c.log())
	case <-time.After(timeout):
		t.Fatalf("rlslab did not log %q within %s; log:\n%s", parts, timeout, c.log())
	}
}

// log returns the child's log so far (its first 200 lines).
func (c *serveChild) log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.lines[:min(len(c.lines), 200)], "\n")
}

// lineCount returns how many lines the child logged.
func (c *serveChild) lineCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines)
}

// traversableTempDir returns a temporary directory of the test's own,
// removed when it ends, that PostgreSQL (which may run as another user) can
// enter.
func traversableTempDir(t *testing.T) string {
	t.Helper()
	tmp, err := os.MkdirTemp("", "rlslab-fault-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	return tmp
}

// TestFaultPostmasterDiesWhileSparesAreBuilt starts rlslab serve in auto
// mode (its own cluster) with many spares to build, kills its postmaster
// with SIGKILL as soon as it logs that it is building them, and expects
// rlslab to exit with status 1 within 2 s, having logged a bounded number
// of lines (no retry loop spinning on a dead server).
func TestFaultPostmasterDiesWhileSparesAreBuilt(t *testing.T) {
	tmp := traversableTempDir(t)
	c := startServeChild(t, tmp, "-addr", "127.0.0.1:0", "-db", "auto", "-ephemeral", "-spares", "60", "-v")
	c.waitLine(t, 60*time.Second, "building spare sandboxes")
	pgs := childrenNamed(c.cmd.Process.Pid, "postgres")
	if len(pgs) != 1 {
		t.Fatalf("postmasters of rlslab: %v; log:\n%s", pgs, c.log())
	}
	if err := syscall.Kill(pgs[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	select {
	case err := <-c.exited:
		c.exited <- err
		took := time.Since(killed)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("rlslab exited with %v, want status 1; log:\n%s", err, c.log())
		}
		if took > 2*time.Second {
			t.Errorf("rlslab exited %s after its postmaster died, want within 2s", took.Round(time.Millisecond))
		}
		t.Logf("rlslab exited (%v) %s after its postmaster was killed, %d log lines", err, took.Round(time.Millisecond), c.lineCount())
	case <-time.After(5 * time.Second):
		t.Errorf("rlslab still running 5s after its postmaster was killed; %d log lines so far; first of them:\n%s", c.lineCount(), c.log())
	}
	// Start-up logs some 20 lines, each failing sandbox build a few: a
	// retry loop without a pause logs thousands a second.
	if n := c.lineCount(); n > 60 {
		t.Errorf("rlslab logged %d lines; want a bounded log; first of them:\n%s", n, c.log())
	}
}
