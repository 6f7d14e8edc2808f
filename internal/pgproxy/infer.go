package pgproxy

import (
	"net/url"
	"strconv"
	"strings"
)

// This file reads what a statement does to the tenant setting, and which
// tenant it declares, from its text: a small SQL tokenizer that knows
// comments, quoting and dollar quoting, and the few statement shapes that
// write a setting (SET, SET LOCAL, set_config, RESET, DISCARD ALL).

// tokKind is the kind of a token.
type tokKind uint8

const (
	tokIdent  tokKind = iota // unquoted identifier or keyword, lower-cased
	tokQIdent                // "quoted identifier", unquoted
	tokString                // string constant, its value
	tokNumber
	tokParam // $1: text holds the number
	tokPunct // one of ( ) , ; . = [ ] and other operator characters
)

// token is one lexical unit of a statement.
type token struct {
	kind tokKind
	text string
}

// lexer splits SQL into tokens and collects its comments.
type lexer struct {
	src      string
	pos      int
	comments []string
}

// next returns the next token; ok is false at the end.
func (l *lexer) next() (token, bool) {
	for l.pos < len(l.src) {
		c := l.src[l.pos]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			l.pos++
		case c == '-' && strings.HasPrefix(l.src[l.pos:], "--"):
			end := strings.IndexByte(l.src[l.pos:], '\n')
			if end < 0 {
				l.pos = len(l.src)
			} else {
				l.pos += end + 1
			}
		case c == '/' && strings.HasPrefix(l.src[l.pos:], "/*"):
			l.blockComment()
		default:
			return l.token(), true
		}
	}
	return token{}, false
}

// blockComment skips a (nested) block comment and records its text.
func (l *lexer) blockComment() {
	start := l.pos + 2
	depth := 0
	for l.pos < len(l.src) {
		switch {
		case strings.HasPrefix(l.src[l.pos:], "/*"):
			depth++
			l.pos += 2
		case strings.HasPrefix(l.src[l.pos:], "*/"):
			depth--
			l.pos += 2
			if depth == 0 {
				l.comments = append(l.comments, l.src[start:l.pos-2])
				return
			}
		default:
			l.pos++
		}
	}
	l.comments = append(l.comments, l.src[start:])
}

// token reads the token at pos, which is not space or a comment.
func (l *lexer) token() token {
	s := l.src
	c := s[l.pos]
	switch {
	case c == '\'':
		return token{tokString, l.quoted('\'', false)}
	case (c == 'e' || c == 'E') && l.pos+1 < len(s) && s[l.pos+1] == '\'':
		l.pos++
		return token{tokString, l.quoted('\'', true)}
	case c == '"':
		return token{tokQIdent, l.quoted('"', false)}
	case c == '$':
		if l.pos+1 < len(s) && isDigit(s[l.pos+1]) {
			start := l.pos + 1
			l.pos++
			for l.pos < len(s) && isDigit(s[l.pos]) {
				l.pos++
			}
			return token{tokParam, s[start:l.pos]}
		}
		if tag, ok := dollarTag(s[l.pos:]); ok {
			body := l.pos + len(tag)
			end := strings.Index(s[body:], tag)
			if end < 0 {
				l.pos = len(s)
				return token{tokString, s[body:]}
			}
			l.pos = body + end + len(tag)
			return token{tokString, s[body : body+end]}
		}
		l.pos++
		return token{tokPunct, "$"}
	case isDigit(c) || (c == '.' && l.pos+1 < len(s) && isDigit(s[l.pos+1])):
		start := l.pos
		for l.pos < len(s) && (isDigit(s[l.pos]) || s[l.pos] == '.' || s[l.pos] == '_' || isLetter(s[l.pos])) {
			l.pos++
		}
		return token{tokNumber, s[start:l.pos]}
	case isLetter(c) || c >= 0x80:
		start := l.pos
		for l.pos < len(s) && (isLetter(s[l.pos]) || isDigit(s[l.pos]) || s[l.pos] == '$' || s[l.pos] >= 0x80) {
			l.pos++
		}
		return token{tokIdent, strings.ToLower(s[start:l.pos])}
	default:
		l.pos++
		return token{tokPunct, s[l.pos-1 : l.pos]}
	}
}

// quoted reads a quoted string or identifier starting at pos (on the quote),
// where a doubled quote stands for one; with escapes, backslash escapes the
// next character (E'...' strings).
func (l *lexer) quoted(q byte, escapes bool) string {
	s := l.src
	l.pos++
	var b strings.Builder
	for l.pos < len(s) {
		c := s[l.pos]
		switch {
		case escapes && c == '\\' && l.pos+1 < len(s):
			b.WriteByte(unescape(s[l.pos+1]))
			l.pos += 2
		case c == q && l.pos+1 < len(s) && s[l.pos+1] == q:
			b.WriteByte(q)
			l.pos += 2
		case c == q:
			l.pos++
			return b.String()
		default:
			b.WriteByte(c)
			l.pos++
		}
	}
	return b.String()
}

// unescape maps the character after a backslash in an E” string.
func unescape(c byte) byte {
	switch c {
	case 'n':
		return '\n'
	case 't':
		return '\t'
	case 'r':
		return '\r'
	case 'b':
		return '\b'
	case 'f':
		return '\f'
	}
	return c
}

// dollarTag returns the $tag$ that s starts with, if any.
func dollarTag(s string) (string, bool) {
	for i := 1; i < len(s); i++ {
		c := s[i]
		if c == '$' {
			return s[:i+1], true
		}
		if !(isLetter(c) || c >= 0x80 || (i > 1 && isDigit(c))) {
			return "", false
		}
	}
	return "", false
}

func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' }

// maxStatements bounds how many statements of one message are read.
const maxStatements = 1000

// split tokenizes sql into its top-level statements (split on semicolons;
// empty ones dropped) and returns its comments.
func split(sql string) ([][]token, []string) {
	l := lexer{src: sql}
	var stmts [][]token
	var cur []token
	depth := 0
	for {
		t, ok := l.next()
		if !ok {
			break
		}
		if t.kind == tokPunct {
			switch t.text {
			case "(":
				depth++
			case ")":
				if depth > 0 {
					depth--
				}
			case ";":
				if depth == 0 {
					if len(cur) > 0 && len(stmts) < maxStatements {
						stmts = append(stmts, cur)
					}
					cur = nil
					continue
				}
			}
		}
		// BEGIN ... END bodies of CREATE FUNCTION ... BEGIN ATOMIC hold
		// semicolons; they never write the setting, so a split inside
		// them only makes harmless extra statements.
		cur = append(cur, t)
	}
	if len(cur) > 0 && len(stmts) < maxStatements {
		stmts = append(stmts, cur)
	}
	return stmts, l.comments
}

// effectKind says what a statement does to the setting.
type effectKind uint8

const (
	effSet     effectKind = iota + 1 // sets Value
	effReset                         // back to the default (RESET, DISCARD ALL, SET ... TO DEFAULT)
	effUnknown                       // writes it to a value the text does not tell
)

// effect is a write of the tenant setting, or of the role, by a statement.
type effect struct {
	kind  effectKind
	value string
	local bool // SET LOCAL or set_config(..., true)
	role  bool // it writes the role (SET ROLE), not the tenant setting
}

// roleSetting is the name of the setting SET ROLE writes.
const roleSetting = "role"

// txKind says what a statement does to the transaction.
type txKind uint8

const (
	txNone  txKind = iota
	txBegin        // BEGIN, START TRANSACTION
	txEnd          // COMMIT, END, ROLLBACK, ABORT (not ROLLBACK TO)
)

// stmtInfo is what one top-level statement does, as far as the proxy cares.
type stmtEffect struct {
	effects []effect
	tx      txKind
}

// analyze returns, for each top-level statement of sql in order, what it
// does to the tenant setting named setting and to the transaction; params
// are the Bind parameters ($1 is params[0]) where known.
func analyze(sql, setting string, params []*string) []stmtEffect {
	if !mayAffect(sql) {
		return nil
	}
	stmts, _ := split(sql)
	out := make([]stmtEffect, len(stmts))
	for i, toks := range stmts {
		out[i] = analyzeOne(toks, setting, params)
	}
	return out
}

// keywords are the words without which a statement can neither write a
// setting nor open or end a transaction ("set" also finds reset and
// set_config).
var keywords = [...]string{"set", "discard", "begin", "start", "commit", "end", "rollback", "abort"}

// mayAffect says whether sql contains one of keywords in any case: most
// statements do not, and skip the tokenizer.
func mayAffect(sql string) bool {
	for i := 0; i < len(sql); i++ {
		c := sql[i] | 0x20
		switch c {
		case 's', 'd', 'b', 'c', 'e', 'r', 'a':
			for _, k := range keywords {
				if k[0] == c && len(sql)-i >= len(k) && strings.EqualFold(sql[i:i+len(k)], k) {
					return true
				}
			}
		}
	}
	return false
}

// analyzeOne reads one statement's tokens.
func analyzeOne(toks []token, setting string, params []*string) stmtEffect {
	var e stmtEffect
	if len(toks) == 0 {
		return e
	}
	first := toks[0]
	if first.kind == tokIdent {
		switch first.text {
		case "begin", "start":
			e.tx = txBegin
			return e
		case "commit", "end", "abort":
			if len(toks) > 1 && toks[1].kind == tokIdent && toks[1].text == "prepared" {
				return e
			}
			e.tx = txEnd
			return e
		case "rollback":
			for _, t := range toks[1:] {
				if t.kind == tokIdent && (t.text == "to" || t.text == "prepared") {
					// A rollback to a savepoint may undo writes the
					// proxy cannot place: the value becomes unknown.
					e.effects = append(e.effects, effect{kind: effUnknown})
					return e
				}
			}
			e.tx = txEnd
			return e
		case "set":
			if ef, ok := parseSetRole(toks[1:]); ok {
				e.effects = append(e.effects, ef)
			} else if ef, ok := parseSet(toks[1:], setting); ok {
				e.effects = append(e.effects, ef)
			}
			return e
		case "reset":
			if len(toks) >= 2 {
				if toks[1].kind == tokIdent && toks[1].text == "all" && len(toks) == 2 {
					e.effects = append(e.effects, effect{kind: effReset}, effect{kind: effReset, role: true})
				} else if name, n := dottedName(toks[1:]); n > 0 && name == setting {
					e.effects = append(e.effects, effect{kind: effReset})
				} else if n > 0 && n == len(toks)-1 && name == roleSetting {
					e.effects = append(e.effects, effect{kind: effReset, role: true})
				}
			}
			return e
		case "discard":
			if len(toks) == 2 && toks[1].kind == tokIdent && toks[1].text == "all" {
				e.effects = append(e.effects, effect{kind: effReset}, effect{kind: effReset, role: true})
			}
			return e
		}
	}
	e.effects = append(e.effects, setConfigCalls(toks, setting, params)...)
	return e
}

// parseSet reads what follows SET.
func parseSet(toks []token, setting string) (effect, bool) {
	local := false
	if len(toks) > 0 && toks[0].kind == tokIdent && (toks[0].text == "local" || toks[0].text == "session") {
		local = toks[0].text == "local"
		toks = toks[1:]
	}
	name, n := dottedName(toks)
	if n == 0 || name != setting {
		return effect{}, false
	}
	toks = toks[n:]
	if len(toks) == 0 || !(toks[0].kind == tokPunct && toks[0].text == "=" || toks[0].kind == tokIdent && toks[0].text == "to") {
		return effect{}, false
	}
	toks = toks[1:]
	if len(toks) == 1 && toks[0].kind == tokIdent && toks[0].text == "default" {
		return effect{kind: effReset, local: local}, true
	}
	// A list of values is stored joined with ", ".
	var vals []string
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t.kind == tokPunct && t.text == ",":
			continue
		case t.kind == tokPunct && (t.text == "-" || t.text == "+") && i+1 < len(toks) && toks[i+1].kind == tokNumber:
			if t.text == "-" {
				vals = append(vals, "-"+toks[i+1].text)
			} else {
				vals = append(vals, toks[i+1].text)
			}
			i++
		case t.kind == tokString || t.kind == tokNumber || t.kind == tokQIdent:
			vals = append(vals, t.text)
		case t.kind == tokIdent:
			vals = append(vals, t.text)
		default:
			return effect{kind: effUnknown, local: local}, true
		}
	}
	if len(vals) == 0 {
		return effect{kind: effUnknown, local: local}, true
	}
	return effect{kind: effSet, value: strings.Join(vals, ", "), local: local}, true
}

// parseSetRole reads what follows SET when it sets the role: SET [SESSION |
// LOCAL] ROLE name | NONE, or the generic SET role = / TO value | DEFAULT.
// NONE and DEFAULT go back to the role the session logged in as; a name is
// kept as PostgreSQL folds it (unquoted lower-cased, quoted as written).
func parseSetRole(toks []token) (effect, bool) {
	local := false
	if len(toks) > 0 && toks[0].kind == tokIdent && (toks[0].text == "local" || toks[0].text == "session") {
		local = toks[0].text == "local"
		toks = toks[1:]
	}
	if len(toks) < 2 || toks[0].kind != tokIdent || toks[0].text != roleSetting || toks[1].kind == tokPunct && toks[1].text == "." {
		return effect{}, false
	}
	toks = toks[1:]
	generic := toks[0].kind == tokPunct && toks[0].text == "=" || toks[0].kind == tokIdent && toks[0].text == "to"
	if generic {
		toks = toks[1:]
	}
	if len(toks) != 1 {
		return effect{kind: effUnknown, local: local, role: true}, true
	}
	t := toks[0]
	switch {
	case t.kind == tokIdent && (t.text == "none" || generic && t.text == "default"):
		return effect{kind: effReset, local: local, role: true}, true
	case t.kind == tokString && t.text == "none":
		return effect{kind: effReset, local: local, role: true}, true
	case t.kind == tokIdent || t.kind == tokQIdent || t.kind == tokString:
		return effect{kind: effSet, value: t.text, local: local, role: true}, true
	}
	return effect{kind: effUnknown, local: local, role: true}, true
}

// dottedName reads a possibly qualified name (app.current_tenant) and
// returns it lower-cased (quoted parts kept as written) with the number of
// tokens it took.
func dottedName(toks []token) (string, int) {
	var parts []string
	i := 0
	for i < len(toks) {
		t := toks[i]
		if t.kind != tokIdent && t.kind != tokQIdent {
			break
		}
		parts = append(parts, t.text)
		i++
		if i+1 < len(toks) && toks[i].kind == tokPunct && toks[i].text == "." {
			i++
			continue
		}
		break
	}
	return strings.Join(parts, "."), i
}

// setConfigCalls finds set_config(name, value, is_local) calls that write
// the setting.
func setConfigCalls(toks []token, setting string, params []*string) []effect {
	var out []effect
	for i := 0; i+1 < len(toks); i++ {
		if toks[i].kind != tokIdent || toks[i].text != "set_config" || toks[i+1].kind != tokPunct || toks[i+1].text != "(" {
			continue
		}
		args, next := callArgs(toks, i+2)
		i = next - 1
		if len(args) != 3 {
			continue
		}
		name, ok := constArg(args[0], params)
		if !ok {
			out = append(out, effect{kind: effUnknown})
			continue
		}
		if name == nil {
			continue
		}
		role := strings.ToLower(*name) == roleSetting
		if !role && strings.ToLower(*name) != setting {
			continue
		}
		ef := effect{kind: effUnknown, role: role}
		if v, ok := constArg(args[1], params); ok {
			ef.kind = effSet
			if v != nil {
				ef.value = *v
			}
			if role && (v == nil || ef.value == "none" || ef.value == "") {
				ef.kind, ef.value = effReset, ""
			}
		}
		if l, ok := constArg(args[2], params); ok && l != nil {
			ef.local = parseBool(*l)
		} else if !ok {
			ef.kind = effUnknown
		}
		out = append(out, ef)
	}
	return out
}

// callArgs splits the arguments of a call whose "(" precedes toks[start],
// returning them and the index after the closing parenthesis.
func callArgs(toks []token, start int) ([][]token, int) {
	var args [][]token
	var cur []token
	depth := 0
	for i := start; i < len(toks); i++ {
		t := toks[i]
		if t.kind == tokPunct {
			switch t.text {
			case "(", "[":
				depth++
			case ")", "]":
				if depth == 0 {
					if len(cur) > 0 || len(args) > 0 {
						args = append(args, cur)
					}
					return args, i + 1
				}
				depth--
			case ",":
				if depth == 0 {
					args = append(args, cur)
					cur = nil
					continue
				}
			}
		}
		cur = append(cur, t)
	}
	return nil, len(toks)
}

// constArg returns the value of an argument that is a constant: a string,
// a number, true/false, NULL (nil), or a parameter whose text value is known;
// a trailing ::text cast is allowed.
func constArg(arg []token, params []*string) (*string, bool) {
	if n := len(arg); n >= 3 && arg[n-3].kind == tokPunct && arg[n-3].text == ":" && arg[n-2].kind == tokPunct && arg[n-2].text == ":" {
		arg = arg[:n-3]
	}
	if len(arg) != 1 {
		return nil, false
	}
	t := arg[0]
	switch t.kind {
	case tokString, tokNumber:
		v := t.text
		return &v, true
	case tokIdent:
		switch t.text {
		case "null":
			return nil, true
		case "true", "false":
			v := t.text
			return &v, true
		}
	case tokParam:
		n, err := strconv.Atoi(t.text)
		if err != nil || n < 1 || n > len(params) || params == nil {
			return nil, false
		}
		p := params[n-1]
		if p == nil {
			return nil, false
		}
		return p, true
	}
	return nil, false
}

// parseBool reads a boolean the way PostgreSQL accepts it.
func parseBool(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "t", "tr", "tru", "true", "y", "ye", "yes", "on", "1":
		return true
	}
	return false
}

// declaredTenant returns the value of the key "tenant" in the first
// sqlcommenter comment of sql that has one (/* tenant='2',route='x' */),
// url-decoded; "" when none.
func declaredTenant(sql string) string {
	if !strings.Contains(sql, "/*") {
		return ""
	}
	_, comments := split(sql)
	for _, c := range comments {
		if v, ok := commentValue(c, "tenant"); ok {
			return v
		}
	}
	return ""
}

// commentValue reads key='value' pairs separated by commas.
func commentValue(c, key string) (string, bool) {
	s := strings.TrimSpace(c)
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return "", false
		}
		k := strings.TrimSpace(s[:eq])
		if dk, err := url.PathUnescape(k); err == nil {
			k = dk
		}
		s = strings.TrimLeft(s[eq+1:], " ")
		if !strings.HasPrefix(s, "'") {
			return "", false
		}
		var v strings.Builder
		i := 1
		closed := false
		for i < len(s) {
			if s[i] == '\\' && i+1 < len(s) {
				v.WriteByte(s[i+1])
				i += 2
				continue
			}
			if s[i] == '\'' {
				closed = true
				i++
				break
			}
			v.WriteByte(s[i])
			i++
		}
		if !closed {
			return "", false
		}
		if k == key {
			val := v.String()
			if dv, err := url.PathUnescape(val); err == nil {
				val = dv
			}
			return val, true
		}
		s = strings.TrimSpace(s[i:])
		if !strings.HasPrefix(s, ",") {
			return "", false
		}
		s = strings.TrimSpace(s[1:])
	}
	return "", false
}
