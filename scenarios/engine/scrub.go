package engine

import (
	"regexp"
	"strings"
)

// A run's narration, notes and errors are public (anyone may watch a lab)
// and kept in its recording, and an error text from pgx or the server
// carries where rlslab connects and as whom: "failed to connect to
// `user=rlslab_admin database=pgbouncer`: 127.0.0.1:6433 (127.0.0.1): dial
// error". Scrub takes those out where text enters the state.
var (
	// connectPrefix is pgconn's "failed to connect to `user=... database=...`".
	connectPrefix = regexp.MustCompile("failed to connect to `[^`]*`")
	// perDial is pgconn's "address (host): " before each dial's error.
	perDial = regexp.MustCompile(`(?:(?:\[[^\]\s]+\]|[\w.\-]+):\d+|/[\w.\-/]+) \([^()\s]*\): `)
	// connURL is a connection URL.
	connURL = regexp.MustCompile(`\b(?:postgres|postgresql|pgbouncer)://\S+`)
	// keyValue is a connection setting that says where or as whom.
	keyValue = regexp.MustCompile(`\b(?:user|host|hostaddr|port|password|dbname|sslrootcert|sslcert|sslkey|passfile)=(?:'[^']*'|"[^"]*"|[^\s,;]*[^\s,;:])`)
	// socketPath is a unix socket or another absolute path of the server.
	socketPath = regexp.MustCompile(`(?:^|[\s("'])((?:/[\w.\-]+){2,}/?)`)
	// address is an IPv4 or bracketed IPv6 address or localhost, with
	// its port if any, or a bare host:port.
	address = regexp.MustCompile(`\[[0-9A-Fa-f:.%\w]+\](?::\d+)?|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b|\blocalhost(?::\d+)?\b|\b[\w\-]+(?:\.[\w\-]+)+:\d+\b`)
	// quotedRole is a role or user named in a server message.
	quotedRole = regexp.MustCompile(`\b(role|user) "([^"]*)"`)
	// ownName is one of rlslab's own role names.
	ownName = regexp.MustCompile(`\brlslab_\w+`)
	// spaces are runs of blanks left behind.
	spaces = regexp.MustCompile(`[ \t]{2,}`)
)

// Scrub returns text without the hosts, ports, socket paths, connection
// settings and role names of rlslab's own that error texts carry. The roles
// of a lab (lab_<id>_app and lab_<id>_owner) are the lesson's and stay.
func Scrub(text string) string {
	if text == "" {
		return text
	}
	text = connectPrefix.ReplaceAllString(text, "failed to connect")
	text = perDial.ReplaceAllString(text, "")
	text = connURL.ReplaceAllString(text, "(a connection URL)")
	text = keyValue.ReplaceAllString(text, "")
	text = socketPath.ReplaceAllStringFunc(text, func(m string) string {
		i := strings.IndexByte(m, '/')
		return m[:i] + "(a local path)"
	})
	text = address.ReplaceAllString(text, "(the server's address)")
	text = quotedRole.ReplaceAllStringFunc(text, func(m string) string {
		sub := quotedRole.FindStringSubmatch(m)
		if strings.HasPrefix(sub[2], "lab_") {
			return m
		}
		return sub[1] + " (one of rlslab's own)"
	})
	text = ownName.ReplaceAllString(text, "(one of rlslab's own roles)")
	return strings.TrimSpace(spaces.ReplaceAllString(text, " "))
}
