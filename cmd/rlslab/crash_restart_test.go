package main

import (
	"errors"
	"net/http"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestFaultSIGKILLInAutoModeThenRestart kills rlslab serve (auto mode, a
// kept cluster, as the test's user: root here) with SIGKILL after a run was
// recorded, and starts it again on the same directory: it starts, the
// recording (and its learner) survived, and the dead instance's temporary
// directory (socket, log) is gone, found by its free lock and not by its
// age. After a clean stop nothing of either is left in TMPDIR.
func TestFaultSIGKILLInAutoModeThenRestart(t *testing.T) {
	// Its own cluster (or none): it runs beside the others.
	t.Parallel()
	tmp := traversableTempDir(t)
	dataDir := filepath.Join(tmp, "state", "pgdata")
	args := []string{"-addr", "127.0.0.1:0", "-db", "auto", "-data-dir", dataDir, "-spares", "-1"}
	first := startServeChild(t, tmp, args...)
	base := first.listening(t, 60*time.Second)
	c := client(t)
	id := newLab(t, c, base)
	if code, body := call(t, c, "POST", base+"/labs/"+id+"/runs", "application/json", `{"scenario":"set-leak","variant":"session-set","speed":"max"}`); code != http.StatusAccepted {
		t.Fatalf("run: %d %s", code, body)
	}
	var runs []struct{ ID string }
	deadline := time.Now().Add(30 * time.Second)
	for len(runs) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the run was never recorded")
		}
		// The recording is saved in the background: wait for it.
		first.waitLine(t, 30*time.Second, "run recorded")
		callJSON(t, c, "GET", base+"/labs/"+id+"/runs.json", "", &runs)
	}
	dead, _ := filepath.Glob(filepath.Join(tmp, "rlslab-pg-*"))
	if len(dead) != 1 {
		t.Fatalf("temporary directories of the first rlslab: %v", dead)
	}
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := <-first.exited
	first.exited <- err

	second := startServeChild(t, tmp, args...)
	base = second.listening(t, 60*time.Second)
	if code := callJSON(t, c, "GET", base+"/runs/"+runs[0].ID+".json", "", nil); code != http.StatusOK {
		t.Errorf("the recording after a SIGKILL and a restart: %d; log:\n%s", code, second.log())
	}
	left, _ := filepath.Glob(filepath.Join(tmp, "rlslab-pg-*"))
	if len(left) != 1 || left[0] == dead[0] {
		t.Errorf("temporary directories after the restart: %v; the dead rlslab's was %s", left, dead[0])
	}
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-second.exited:
		second.exited <- err
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		if err != nil {
			t.Errorf("rlslab after SIGTERM: %v; log:\n%s", err, second.log())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("rlslab did not exit within 20s of SIGTERM")
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "rlslab-pg-*")); len(left) != 0 {
		t.Errorf("temporary directories after a clean stop: %v", left)
	}
}
