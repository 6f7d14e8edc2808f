package store

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"strings"
)

// Sizes of the random values the Store hands out, in random bytes.
const (
	tokenBytes     = 32 // learner tokens and facilitator secrets
	recordingBytes = 16 // recording ids: unguessable, they are shared as links
	idBytes        = 12 // learner and workshop ids
	maxTokenLen    = 128
	// minTokenLen is the shortest token EnsureLearner stores: about 128
	// random bits, as a browser's cookie holds them.
	minTokenLen = 22
)

// Join codes: codeLen characters from codeAlphabet, which leaves out the
// characters that are easy to confuse when read aloud or typed (0/O, 1/I/L).
const (
	codeAlphabet = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
	codeLen      = 6
)

// randomString returns n random bytes, base64url-encoded without padding
// (safe in URLs and cookies).
func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never returns an error (crypto/rand, Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// newToken returns a fresh secret for a learner or a facilitator.
func newToken() string { return randomString(tokenBytes) }

// hashSecret returns the SHA-256 of a secret. Secrets are random and long, so
// an unsalted hash is enough: only the hash is ever stored.
func hashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// sameHash compares a secret with a stored hash in constant time.
func sameHash(secret string, stored []byte) bool {
	return subtle.ConstantTimeCompare(hashSecret(secret), stored) == 1
}

// newCode returns a random join code.
func newCode() string {
	var b [codeLen]byte
	for i := range b {
		b[i] = codeAlphabet[randIndex(len(codeAlphabet))]
	}
	return string(b[:])
}

// randIndex returns a uniform random integer in [0, n), n <= 256, by
// rejection sampling.
func randIndex(n int) int {
	limit := 256 - 256%n
	var b [1]byte
	for {
		rand.Read(b[:])
		if int(b[0]) < limit {
			return int(b[0]) % n
		}
	}
}

// NormalizeCode returns a join code as typed by a person in its canonical
// form: upper case, without spaces or hyphens ("abc-d2f" → "ABCD2F"). It
// returns "" when the result cannot be a join code.
func NormalizeCode(code string) string {
	if len(code) > 4*codeLen {
		return ""
	}
	code = strings.Map(func(r rune) rune {
		switch r {
		case ' ', '-', '\t':
			return -1
		}
		return r
	}, strings.ToUpper(code))
	if len(code) != codeLen {
		return ""
	}
	for i := 0; i < len(code); i++ {
		if strings.IndexByte(codeAlphabet, code[i]) < 0 {
			return ""
		}
	}
	return code
}

// plausibleID reports whether s could be an id or token the Store made
// (base64url, bounded length), so that junk is rejected before a query.
func plausibleID(s string) bool {
	if s == "" || len(s) > maxTokenLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
