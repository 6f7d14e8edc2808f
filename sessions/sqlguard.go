package sessions

import (
	"fmt"
	"regexp"
	"strings"
)

// The SQL guard refuses, before anything reaches the server, the free-play
// statements that would reach outside the lab or outlive their statement.
// It is a belt beside the database's own privileges (see sandbox.go), not
// the only defence: text inside a dynamic EXECUTE can be assembled at run
// time, and there the privileges and rlslab's cleanup after every statement
// decide.

// sqlToken is one token of SQL text.
type sqlToken struct {
	kind tokenKind
	// text is a word folded to lower case, a quoted identifier as written
	// between its quotes, a string's contents, or the punctuation itself.
	text string
}

// tokenKind is what a token is.
type tokenKind int

const (
	tokWord   tokenKind = iota // a keyword or an unquoted identifier
	tokIdent                   // a "quoted identifier"
	tokString                  // a string literal, dollar-quoted or not
	tokNumber                  // a number or a $n parameter
	tokPunct                   // an operator or punctuation; ";" ends a statement
)

// lexSQL splits SQL text into statements of tokens, dropping comments and
// whitespace. It follows PostgreSQL's lexical rules closely enough for the
// guard: -- and nested /* */ comments, '…' with ” escapes, E'…' with
// backslash escapes, $tag$…$tag$, "…" with "" escapes. An unterminated
// string, identifier or comment runs to the end of the text, as the server
// would read it (and then refuse it).
func lexSQL(s string) [][]sqlToken {
	var stmts [][]sqlToken
	var cur []sqlToken
	emit := func(k tokenKind, text string) { cur = append(cur, sqlToken{kind: k, text: text}) }
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '-' && i+1 < len(s) && s[i+1] == '-':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			depth := 0
			for i < len(s) {
				if s[i] == '/' && i+1 < len(s) && s[i+1] == '*' {
					depth++
					i += 2
					continue
				}
				if s[i] == '*' && i+1 < len(s) && s[i+1] == '/' {
					depth--
					i += 2
					if depth == 0 {
						break
					}
					continue
				}
				i++
			}
		case c == ';':
			if len(cur) > 0 {
				stmts = append(stmts, cur)
			}
			cur = nil
			i++
		case c == '\'':
			text, n := lexQuoted(s[i:], '\'', false)
			emit(tokString, text)
			i += n
		case (c == 'e' || c == 'E') && i+1 < len(s) && s[i+1] == '\'':
			text, n := lexQuoted(s[i+1:], '\'', true)
			emit(tokString, text)
			i += 1 + n
		case (c == 'u' || c == 'U') && i+2 < len(s) && s[i+1] == '&' && (s[i+2] == '"' || s[i+2] == '\''):
			// Unicode escapes: the escapes are left as written, so a name
			// spelled with them is not recognised; the privileges decide.
			text, n := lexQuoted(s[i+2:], s[i+2], false)
			if s[i+2] == '"' {
				emit(tokIdent, text)
			} else {
				emit(tokString, text)
			}
			i += 2 + n
		case c == '"':
			text, n := lexQuoted(s[i:], '"', false)
			emit(tokIdent, text)
			i += n
		case c == '$' && i+1 < len(s) && isDigit(s[i+1]):
			j := i + 1
			for j < len(s) && isDigit(s[j]) {
				j++
			}
			emit(tokNumber, s[i:j])
			i = j
		case c == '$':
			if tag, ok := dollarTag(s[i:]); ok {
				body := s[i+len(tag):]
				end := strings.Index(body, tag)
				if end < 0 {
					emit(tokString, body)
					i = len(s)
				} else {
					emit(tokString, body[:end])
					i += len(tag) + end + len(tag)
				}
				continue
			}
			emit(tokPunct, "$")
			i++
		case isIdentStart(c):
			j := i
			for j < len(s) && isIdentPart(s[j]) {
				j++
			}
			emit(tokWord, strings.ToLower(s[i:j]))
			i = j
		case isDigit(c) || (c == '.' && i+1 < len(s) && isDigit(s[i+1])):
			j := i
			for j < len(s) && (isDigit(s[j]) || s[j] == '.' || s[j] == 'e' || s[j] == 'E' || s[j] == '_' ||
				((s[j] == '+' || s[j] == '-') && j > i && (s[j-1] == 'e' || s[j-1] == 'E'))) {
				j++
			}
			emit(tokNumber, s[i:j])
			i = j
		default:
			emit(tokPunct, string(c))
			i++
		}
	}
	if len(cur) > 0 {
		stmts = append(stmts, cur)
	}
	return stmts
}

// lexQuoted reads a quoted token that starts at s[0] (the quote) and
// returns its contents and its length in s. A doubled quote stands for
// itself; with backslash, a backslash escapes the next byte.
func lexQuoted(s string, quote byte, backslash bool) (string, int) {
	var b strings.Builder
	i := 1
	for i < len(s) {
		c := s[i]
		switch {
		case backslash && c == '\\' && i+1 < len(s):
			b.WriteByte(s[i+1])
			i += 2
		case c == quote && i+1 < len(s) && s[i+1] == quote:
			b.WriteByte(quote)
			i += 2
		case c == quote:
			return b.String(), i + 1
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String(), len(s)
}

// dollarTag returns the opening $tag$ at the start of s, if there is one.
func dollarTag(s string) (string, bool) {
	for j := 1; j < len(s); j++ {
		switch {
		case s[j] == '$':
			return s[:j+1], true
		case isIdentPart(s[j]) && s[j] != '$' && !(j == 1 && isDigit(s[j])):
		default:
			return "", false
		}
	}
	return "", false
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

func isIdentPart(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '$' }

// refusedFunctions are the functions free play never calls, with the
// reason given to the learner.
var refusedFunctions = map[string]string{
	"pg_read_file":                   "it reads the server's files",
	"pg_read_binary_file":            "it reads the server's files",
	"pg_stat_file":                   "it looks at the server's files",
	"pg_ls_dir":                      "it lists the server's directories",
	"pg_ls_logdir":                   "it lists the server's directories",
	"pg_ls_waldir":                   "it lists the server's directories",
	"pg_ls_tmpdir":                   "it lists the server's directories",
	"pg_ls_archive_statusdir":        "it lists the server's directories",
	"pg_ls_logicalmapdir":            "it lists the server's directories",
	"pg_ls_logicalsnapdir":           "it lists the server's directories",
	"pg_ls_replslotdir":              "it lists the server's directories",
	"pg_file_write":                  "it writes the server's files",
	"pg_file_rename":                 "it renames the server's files",
	"pg_file_unlink":                 "it removes the server's files",
	"lo_import":                      "it reads the server's files",
	"lo_export":                      "it writes the server's files",
	"pg_notify":                      "notifications reach other sessions",
	"pg_advisory_lock":               "a session-level advisory lock outlives the statement",
	"pg_advisory_lock_shared":        "a session-level advisory lock outlives the statement",
	"pg_try_advisory_lock":           "a session-level advisory lock outlives the statement",
	"pg_try_advisory_lock_shared":    "a session-level advisory lock outlives the statement",
	"pg_advisory_unlock":             "advisory locks are not part of free play",
	"pg_advisory_unlock_shared":      "advisory locks are not part of free play",
	"pg_advisory_unlock_all":         "advisory locks are not part of free play",
	"pg_terminate_backend":           "it signals other backends",
	"pg_cancel_backend":              "it signals other backends",
	"pg_reload_conf":                 "it signals the server",
	"pg_rotate_logfile":              "it signals the server",
	"pg_log_backend_memory_contexts": "it signals other backends",
	"pg_promote":                     "it changes the server",
	"pg_switch_wal":                  "it changes the server",
	"dblink":                         "it connects to other databases",
	"dblink_connect":                 "it connects to other databases",
	"dblink_connect_u":               "it connects to other databases",
	"dblink_exec":                    "it connects to other databases",
}

// refusedStatements are the statements free play never runs, by their
// first word, with the reason given to the learner.
var refusedStatements = map[string]string{
	"copy":       "COPY reads and writes the server's files, programs or the copy stream",
	"listen":     "LISTEN outlives the statement",
	"notify":     "NOTIFY reaches other sessions",
	"unlisten":   "LISTEN and NOTIFY are not part of free play",
	"create":     "free play changes no schema: the lesson's tables, roles and policies stay as they are",
	"alter":      "free play changes no schema or role: the lesson's tables, roles and policies stay as they are",
	"drop":       "free play changes no schema: the lesson's tables, roles and policies stay as they are",
	"truncate":   "free play changes no schema: the lesson's tables stay as they are",
	"comment":    "free play changes no schema",
	"grant":      "free play changes no privileges",
	"revoke":     "free play changes no privileges",
	"reassign":   "free play changes no roles",
	"security":   "free play changes no schema",
	"import":     "free play changes no schema",
	"refresh":    "free play changes no schema",
	"load":       "it loads code into the server",
	"checkpoint": "it works on the whole server",
	"cluster":    "it rewrites the lesson's tables",
	"reindex":    "it rebuilds the lesson's indexes",
	"vacuum":     "it works on the lesson's tables",
}

// refusal is why the guard refused some SQL.
type refusal struct{ reason string }

func (r *refusal) Error() string { return "refused by rlslab: " + r.reason }

// checkSQL returns a refusal when sql holds a statement free play never
// runs. appRole is the lab's app role, the one role SET ROLE may name;
// tenantRole reports whether a name is one of the lab's tenant roles.
func checkSQL(sql, appRole string, tenantRole func(string) bool) *refusal {
	for _, st := range lexSQL(sql) {
		if r := checkStatement(st, appRole, tenantRole); r != nil {
			return r
		}
	}
	return nil
}

// checkStatement checks one statement.
func checkStatement(st []sqlToken, appRole string, tenantRole func(string) bool) *refusal {
	if r := checkCalls(st, 0); r != nil {
		return r
	}
	// EXPLAIN [ANALYZE] and a leading WITH wrap the statement that runs.
	first := 0
	for first < len(st) && st[first].kind == tokPunct && st[first].text == "(" {
		first++
	}
	if first >= len(st) || st[first].kind != tokWord {
		return nil
	}
	word := st[first].text
	if why, ok := refusedStatements[word]; ok {
		return &refusal{fmt.Sprintf("%s (%s)", strings.ToUpper(word), why)}
	}
	if word == "set" || word == "reset" {
		return checkSet(st[first:], appRole, tenantRole)
	}
	// A data-modifying WITH may hold only SELECT, INSERT, UPDATE, DELETE
	// and MERGE; none of those is refused. DO bodies are strings: checkCalls
	// looked into them.
	return nil
}

// checkCalls refuses a call of a refused function anywhere in the tokens,
// also inside string literals (DO bodies, EXECUTE strings), up to a few
// levels of nesting. set_config may change any setting but the role.
func checkCalls(st []sqlToken, depth int) *refusal {
	for i, t := range st {
		switch t.kind {
		case tokWord, tokIdent:
			name := strings.ToLower(t.text)
			if !followedByParen(st, i) {
				continue
			}
			if why, ok := refusedFunctions[name]; ok {
				return &refusal{fmt.Sprintf("%s() (%s)", name, why)}
			}
			if name == "set_config" {
				if r := checkSetConfig(st[i+1:]); r != nil {
					return r
				}
			}
		case tokString:
			if depth < 3 && len(t.text) > 0 {
				for _, inner := range lexSQL(t.text) {
					if r := checkCalls(inner, depth+1); r != nil {
						return r
					}
				}
			}
		}
	}
	return nil
}

// followedByParen reports whether the token after st[i] is "(".
func followedByParen(st []sqlToken, i int) bool {
	return i+1 < len(st) && st[i+1].kind == tokPunct && st[i+1].text == "("
}

// checkSetConfig refuses set_config on the role or the session
// authorization (SET ROLE by another name) and on a setting named by an
// expression rather than a literal. rest starts at the call's "(".
func checkSetConfig(rest []sqlToken) *refusal {
	if len(rest) < 3 || rest[1].kind != tokString || rest[2].kind != tokPunct || rest[2].text != "," {
		return &refusal{"set_config() with a setting name that is not a literal (name the setting, e.g. 'app.current_tenant')"}
	}
	switch strings.ToLower(strings.TrimSpace(rest[1].text)) {
	case "role", "session_authorization":
		return &refusal{"set_config('" + rest[1].text + "', …) (use SET ROLE to the app role instead)"}
	}
	return nil
}

// checkSet allows every SET and RESET except SET ROLE and SET SESSION
// AUTHORIZATION to anything but the app role (or a tenant role of the lab,
// or NONE/DEFAULT). SET app.current_tenant to anything stays allowed.
func checkSet(st []sqlToken, appRole string, tenantRole func(string) bool) *refusal {
	if st[0].text == "reset" {
		return nil
	}
	i := 1
	if i < len(st) && st[i].kind == tokWord && (st[i].text == "local" || st[i].text == "session") {
		// SET SESSION AUTHORIZATION is not SET SESSION <name>.
		if !(st[i].text == "session" && i+1 < len(st) && st[i+1].kind == tokWord && st[i+1].text == "authorization") {
			i++
		}
	}
	if i >= len(st) || (st[i].kind != tokWord && st[i].kind != tokIdent) {
		return nil
	}
	var what string
	switch setting := strings.ToLower(st[i].text); { // setting names ignore case, quoted or not
	case setting == "role":
		what, i = "SET ROLE", i+1
	case setting == "session_authorization":
		what, i = "SET SESSION AUTHORIZATION", i+1
	case st[i].kind == tokWord && st[i].text == "session" && i+1 < len(st) && st[i+1].text == "authorization":
		what, i = "SET SESSION AUTHORIZATION", i+2
	default:
		return nil
	}
	if i < len(st) && ((st[i].kind == tokPunct && st[i].text == "=") || (st[i].kind == tokWord && st[i].text == "to")) {
		i++ // SET role TO x, SET "role" = x: the generic form
	}
	if i >= len(st) {
		return nil // the server refuses the syntax
	}
	t := st[i]
	name := t.text
	switch t.kind {
	case tokWord:
		if name == "none" || name == "default" {
			return nil
		}
	case tokIdent, tokString:
	default:
		return &refusal{what + " to anything but the app role " + appRole}
	}
	if name == appRole || (tenantRole != nil && tenantRole(name)) {
		if i+1 == len(st) {
			return nil
		}
	}
	return &refusal{fmt.Sprintf("%s %s (free play runs as the app role %s)", what, name, appRole)}
}

// readOnlyStart matches the first word of a statement that a look at a
// paused run's connection may run.
var readOnlyStart = regexp.MustCompile(`^(select|with|values|table|show|explain)$`)

// checkReadOnly refuses SQL that is not one read-only statement (the
// server enforces read-only-ness too: the look runs in a read-only
// transaction or subtransaction that is rolled back).
func checkReadOnly(sql string) *refusal {
	stmts := lexSQL(sql)
	if len(stmts) != 1 {
		return &refusal{"a look at a paused run's connection runs exactly one read-only statement"}
	}
	st := stmts[0]
	if st[0].kind != tokWord || !readOnlyStart.MatchString(st[0].text) {
		return &refusal{"a look at a paused run's connection runs only SELECT, WITH, VALUES, TABLE, SHOW or EXPLAIN"}
	}
	for _, t := range st {
		if t.kind == tokWord && (t.text == "set_config" || t.text == "nextval" || t.text == "setval") {
			return &refusal{t.text + "() changes the connection the paused run holds"}
		}
	}
	return nil
}

// dataWords are the words that make a statement change rows (or may: a DO
// block, a procedure, a prepared statement), wherever they stand in it.
var dataWords = map[string]bool{
	"insert": true, "update": true, "delete": true, "merge": true, "truncate": true,
	"copy": true, "do": true, "call": true, "execute": true, "nextval": true, "setval": true,
	"lo_import": true, "lo_unlink": true, "lo_create": true, "lo_from_bytea": true, "lo_put": true,
}

// mayChangeRows reports whether sql may change the lab's rows. It errs on
// the side of yes (SELECT … FOR UPDATE counts): the cost of a yes is that
// the next run puts the lab's rows back first.
func mayChangeRows(sql string) bool {
	for _, st := range lexSQL(sql) {
		for _, t := range st {
			if t.kind == tokWord && dataWords[t.text] {
				return true
			}
		}
	}
	return false
}

// tagChangedRows reports whether a CommandComplete tag says rows may have
// changed: INSERT, UPDATE, DELETE, MERGE or COPY of at least one row, or
// TRUNCATE.
func tagChangedRows(tag string) bool {
	f := strings.Fields(tag)
	if len(f) == 0 {
		return false
	}
	switch f[0] {
	case "TRUNCATE":
		return true
	case "INSERT", "UPDATE", "DELETE", "MERGE", "COPY":
		return f[len(f)-1] != "0"
	}
	return false
}
