package sessions

import (
	"fmt"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// appEndedNarration is the narration of an app session that ended for why,
// after requests requests of which leaks leaked.
func appEndedNarration(why string, requests, leaks int) string {
	return fmt.Sprintf("Your app's session ended (%s): %s, %s.", why, engine.CountOf(requests, "request", "requests"), engine.CountOf(leaks, "leak", "leaks"))
}
