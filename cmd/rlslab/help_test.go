package main

import (
	"strings"
	"testing"
)

// TestDBHelpSaysWhereTheClusterLives checks -db's help: serve keeps the
// local cluster it starts (in -data-dir), a one-off run removes it.
func TestDBHelpSaysWhereTheClusterLives(t *testing.T) {
	for _, c := range []struct {
		cmd, want, not string
	}{
		{"serve", "kept in -data-dir", "temporary local cluster"},
		{"run", "temporary local cluster", "kept in -data-dir (temporary"},
	} {
		_, stderr, code := runCmd(t, nil, c.cmd, "-help")
		if code != 2 {
			t.Errorf("%s -help: exit %d", c.cmd, code)
		}
		db := ""
		lines := strings.Split(stderr, "\n")
		for i, l := range lines {
			if strings.TrimSpace(l) == "-db string" && i+1 < len(lines) {
				db = lines[i+1]
			}
		}
		if !strings.Contains(db, c.want) || strings.Contains(db, c.not) || strings.Contains(db, "binaries in a temporary cluster") {
			t.Errorf("%s -help says for -db: %q; want %q", c.cmd, db, c.want)
		}
	}
}
