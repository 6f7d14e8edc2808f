package store

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"

	"github.com/rlslab/rlslab"
)

// Bounds of the texts people type.
const (
	MaxNameLen   = 40  // a participant's display name, in characters
	MaxTitleLen  = 100 // a workshop's title, in characters
	MaxChoiceLen = 200 // a prediction's choice, in characters
)

// MaxEvidenceLen bounds what a checked prediction keeps of its run's
// outcome, in characters.
const MaxEvidenceLen = 1000

// Bounds of the identifiers and texts rlslab itself gives the Store, in bytes.
const (
	maxSlugLen    = 64
	maxLabIDLen   = 64
	maxStatusLen  = 32
	maxVersionLen = 200
	maxErrorLen   = 4000
)

// CleanName returns a participant's display name trimmed of surrounding
// white space, or EINVALID when it is empty, longer than MaxNameLen
// characters, not valid UTF-8 or holds a control character, a
// bidirectional override or an invisible space (see isControl). Markup is
// allowed: it is stored as text and escaped by the views.
func CleanName(name string) (string, error) {
	return cleanText("name", name, MaxNameLen)
}

// cleanText trims s and checks that it is 1 to max characters of valid
// UTF-8 without control characters; field names s in the error.
func cleanText(field, s string, max int) (string, error) {
	if len(s) > textBound(max) {
		return "", rlslab.Errorf(rlslab.EINVALID, "the %s is too long (at most %d characters)", field, max)
	}
	if !utf8.ValidString(s) {
		return "", rlslab.Errorf(rlslab.EINVALID, "the %s is not valid UTF-8 text", field)
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return "", rlslab.Errorf(rlslab.EINVALID, "the %s is empty", field)
	}
	if n := utf8.RuneCountInString(s); n > max {
		return "", rlslab.Errorf(rlslab.EINVALID, "the %s is too long: %d characters, at most %d", field, n, max)
	}
	for _, r := range s {
		if isControl(r) {
			return "", rlslab.Errorf(rlslab.EINVALID, "the %s holds a control character (%U)", field, r)
		}
	}
	return s, nil
}

// textBound is the most bytes cleanText looks at for a text of at most max
// characters; a longer input is refused before its characters are read. A
// character is at most utf8.UTFMax bytes, and surrounding space beyond
// three times that is junk.
func textBound(max int) int { return 4 * max * utf8.UTFMax }

// isControl reports whether r is a control character (C0, DEL, C1), a
// line or paragraph separator, a bidirectional formatting character (which
// can make a name display as something else) or an invisible space. Zero-
// width joiners and non-joiners stay allowed: emoji sequences and some
// scripts use them.
func isControl(r rune) bool {
	switch {
	case unicode.IsControl(r):
		return true
	case r == '\u2028' || r == '\u2029': // line and paragraph separators
		return true
	case r == '\u061C' || r == '\u200E' || r == '\u200F': // ALM, LRM, RLM
		return true
	case '\u202A' <= r && r <= '\u202E': // LRE, RLE, PDF, LRO, RLO
		return true
	case '\u2066' <= r && r <= '\u2069': // LRI, RLI, FSI, PDI
		return true
	case r == '\u200B' || r == '\u2060' || r == '\uFEFF': // invisible: "Ada" and "Ada\u200B" would look alike
		return true
	}
	return false
}

// checkSlug checks a lesson, scenario or variant identifier: 1 to 64
// lower-case letters, digits and hyphens.
func checkSlug(field, s string) error {
	if s == "" {
		return rlslab.Errorf(rlslab.EINVALID, "no %s given", field)
	}
	if len(s) > maxSlugLen {
		return rlslab.Errorf(rlslab.EINVALID, "the %s is too long (at most %d characters)", field, maxSlugLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return rlslab.Errorf(rlslab.EINVALID, "the %s %q may hold only lower-case letters, digits and hyphens", field, s)
		}
	}
	return nil
}

// checkLabID checks a lab id given by the caller: 1 to 64 ASCII letters,
// digits, hyphens or underscores.
func checkLabID(id string) error {
	if id == "" || len(id) > maxLabIDLen || !plausibleID(id) {
		return rlslab.Errorf(rlslab.EINVALID, "bad lab id %q", truncate(id, 70))
	}
	return nil
}

// truncate shortens s to at most n bytes for an error message, on a
// character boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// lookAlike maps the Cyrillic and Greek letters that look like a Latin
// letter (in the usual fonts) to that letter, upper and lower case. It is
// the part of Unicode's confusable skeletons (UTS #39) that matters for
// names typed in a room: golang.org/x/text has no skeleton function, and
// the full confusables table (thousands of entries across every script)
// would be a large dependency for the look-alikes people actually type.
// A lower-case letter maps where its upper case does (η and Η to h), so
// that a name and the same name in capitals have the same key.
var lookAlike = map[rune]rune{
	// Cyrillic lower case.
	'а': 'a', 'в': 'b', 'е': 'e', 'ё': 'ë', 'һ': 'h', 'і': 'i', 'ї': 'ï', 'ј': 'j', 'к': 'k', 'ӏ': 'i',
	'м': 'm', 'н': 'h', 'о': 'o', 'р': 'p', 'ԛ': 'q', 'г': 'r', 'ѕ': 's', 'т': 't', 'у': 'y', 'ԝ': 'w',
	'х': 'x', 'с': 'c', 'ԁ': 'd', 'ɡ': 'g', 'ү': 'y', 'ь': 'b', 'ъ': 'b', 'п': 'n',
	// Cyrillic upper case.
	'А': 'A', 'В': 'B', 'Е': 'E', 'Ё': 'Ë', 'Һ': 'H', 'І': 'I', 'Ї': 'Ï', 'Ј': 'J', 'К': 'K', 'Ӏ': 'I',
	'М': 'M', 'Н': 'H', 'О': 'O', 'Р': 'P', 'Ԛ': 'Q', 'Ѕ': 'S', 'Т': 'T', 'У': 'Y', 'Ԝ': 'W', 'Х': 'X',
	'С': 'C', 'Ү': 'Y',
	// Greek lower case.
	'α': 'a', 'ο': 'o', 'ν': 'n', 'ι': 'i', 'κ': 'k', 'ρ': 'p', 'υ': 'y', 'χ': 'x', 'τ': 't', 'ε': 'e',
	'γ': 'y', 'η': 'h', 'ω': 'w',
	// Greek upper case.
	'Α': 'A', 'Β': 'B', 'Ε': 'E', 'Ζ': 'Z', 'Η': 'H', 'Ι': 'I', 'Κ': 'K', 'Μ': 'M', 'Ν': 'N', 'Ο': 'O',
	'Ρ': 'P', 'Τ': 'T', 'Υ': 'Y', 'Χ': 'X',
}

// NameKey is what two display names that look alike have in common: the
// name in NFKC (full-width and other compatibility forms become the plain
// letters), with Cyrillic and Greek look-alikes of Latin letters made Latin,
// then case-folded. "ann", "Ann", "ａｎｎ" and "аnn" (a Cyrillic а) have one
// key.
func NameKey(name string) string {
	latin := func(s string) string {
		return strings.Map(func(r rune) rune {
			if l, ok := lookAlike[r]; ok {
				return l
			}
			return r
		}, s)
	}
	// Folding can make a Greek letter of a mark (U+0345 folds to ι), so
	// look-alikes are made Latin again after it.
	return latin(norm.NFKC.String(cases.Fold().String(latin(norm.NFKC.String(name)))))
}
