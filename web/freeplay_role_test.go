package web_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/sessions"
)

// TestFreePlayPanelNamesTheRoleAsTheBoxesDo: the free-play panel's result
// says the request ran "as app", as the pool boxes and the timeline name
// the lab's app role, not as lab_<id>_app.
func TestFreePlayPanelNamesTheRoleAsTheBoxesDo(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 2})
	c, lab := newOwnedLab(t, ts)
	code, frag := do(t, c, "POST", ts.URL+"/labs/"+lab.ID+"/sql", "application/x-www-form-urlencoded", "sql=SELECT+1&tenant=1", "HX-Request", "true")
	if code != http.StatusOK {
		t.Fatalf("free play: %d %s", code, frag)
	}
	if !strings.Contains(frag, "as <code>app</code>") || strings.Contains(frag, "lab_"+lab.ID) {
		t.Errorf("the panel names the role otherwise than the boxes: %s", frag)
	}
}
