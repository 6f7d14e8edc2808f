package sessions

import (
	"fmt"
	"strconv"
)

// countOf says n of a thing in the number that agrees with it: "1
// request", "13 requests".
func countOf(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// appEndedNarration is the narration of an app session that ended for why,
// after requests requests of which leaks leaked.
func appEndedNarration(why string, requests, leaks int) string {
	return fmt.Sprintf("Your app's session ended (%s): %s, %s.", why, countOf(requests, "request", "requests"), countOf(leaks, "leak", "leaks"))
}
