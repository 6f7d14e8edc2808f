package pgenv

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestSweepAbandonedRemovesOnlyOldDeadClusters(t *testing.T) {
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
	sweepAbandoned(slog.New(slog.DiscardHandler), dir, time.Hour)
	for p, want := range map[string]bool{dead: false, deadPid: false, young: true, other: true} {
		_, err := os.Stat(p)
		if got := err == nil; got != want {
			t.Errorf("%s: exists=%v, want %v", filepath.Base(p), got, want)
		}
	}
}
