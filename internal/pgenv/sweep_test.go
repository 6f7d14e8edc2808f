package pgenv

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestSweepAbandonedRemovesOnlyDeadClusters: a directory whose lock is free
// goes whatever its age, one whose lock is held stays whatever its age, and
// one without a lock file (an older rlslab's) goes only when old and dead.
func TestSweepAbandonedRemovesOnlyDeadClusters(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, age time.Duration, pid int) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Join(p, "data"), 0o755); err != nil {
			t.Fatal(err)
		}
		if pid > 0 {
			if err := os.WriteFile(filepath.Join(p, "data", "postmaster.pid"), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		old := time.Now().Add(-age)
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
		return p
	}
	dead := mk("rlslab-pg-dead", 2*time.Hour, 0)
	deadPid := mk("rlslab-pg-deadpid", 2*time.Hour, 999999)
	young := mk("rlslab-pg-young", time.Minute, 0)
	other := mk("something-else", 2*time.Hour, 0)
	// With lock files: a crashed rlslab's (free, a minute old) and a
	// running one's (held, two hours old).
	crashed := mk("rlslab-pg-crashed", time.Minute, 0)
	l, _, err := tryLock(filepath.Join(crashed, lockName))
	if err != nil {
		t.Fatal(err)
	}
	l.unlock()
	running := mk("rlslab-pg-running", 2*time.Hour, 0)
	held, _, err := tryLock(filepath.Join(running, lockName))
	if err != nil {
		t.Fatal(err)
	}
	defer held.unlock()
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(running, old, old); err != nil {
		t.Fatal(err)
	}
	sweepAbandoned(slog.New(slog.DiscardHandler), dir, time.Hour)
	for p, want := range map[string]bool{dead: false, deadPid: false, young: true, other: true, crashed: false, running: true} {
		_, err := os.Stat(p)
		if got := err == nil; got != want {
			t.Errorf("%s: exists=%v, want %v", filepath.Base(p), got, want)
		}
	}
}
