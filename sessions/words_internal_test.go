package sessions

import (
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// TestCountsAgree checks that the counts said in sentences agree with
// their number: "1 leak", not "1 leaks".
func TestCountsAgree(t *testing.T) {
	for _, c := range []struct {
		why             string
		requests, leaks int
		want            string
	}{
		{"closed", 13, 1, "Your app's session ended (closed): 13 requests, 1 leak."},
		{"closed", 1, 0, "Your app's session ended (closed): 1 request, 0 leaks."},
		{"reset", 4, 2, "Your app's session ended (reset): 4 requests, 2 leaks."},
	} {
		if got := appEndedNarration(c.why, c.requests, c.leaks); got != c.want {
			t.Errorf("appEndedNarration(%q, %d, %d) = %q, want %q", c.why, c.requests, c.leaks, got, c.want)
		}
	}
	if got := engine.CountOf(1, "more request", "more requests") + " leaked"; got != "1 more request leaked" {
		t.Errorf("one more leak: %q", got)
	}
}
