package web

import (
	"strings"
	"testing"
)

// FuzzLabOfPath: the lab id read from a path is the whole segment after
// /labs/, never contains a slash, and is empty for any other path.
func FuzzLabOfPath(f *testing.F) {
	for _, p := range []string{"/labs/0a1b2c3d", "/labs/0a1b2c3d/ws", "/labs/", "/lessons/x", "/labs//x", "/labsx/1"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		id := labOfPath(p)
		if strings.Contains(id, "/") {
			t.Fatalf("labOfPath(%q) = %q holds a slash", p, id)
		}
		if !strings.HasPrefix(p, "/labs/") && id != "" {
			t.Fatalf("labOfPath(%q) = %q for a path outside /labs/", p, id)
		}
		if id != "" && !strings.HasPrefix(p, "/labs/"+id) {
			t.Fatalf("labOfPath(%q) = %q is not the segment after /labs/", p, id)
		}
	})
}
