package pgproxy

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// scramMechanism is the one SASL mechanism the proxy offers. It offers no
// channel binding (SCRAM-SHA-256-PLUS), as PgBouncer does not either.
const scramMechanism = "SCRAM-SHA-256"

// scramIterations is PostgreSQL's default iteration count.
const scramIterations = 4096

// errSCRAM is the error of a failed exchange, whatever failed: the client
// learns only that authentication failed.
var errSCRAM = errors.New("pgproxy: SCRAM authentication failed")

// scramServer is the server side of one SCRAM-SHA-256 exchange (RFC 5802,
// RFC 7677) against a password the proxy knows in clear.
type scramServer struct {
	password string

	clientFirstBare string
	serverFirst     string
	gs2Header       string
	nonce           string
	salt            []byte
}

// first reads the client-first-message and returns the server-first-message.
func (s *scramServer) first(msg []byte) (string, error) {
	m := string(msg)
	// gs2-header: "n,," or "y,," (the client could bind but we offered no
	// -PLUS), optionally with an authzid we do not support.
	parts := strings.SplitN(m, ",", 3)
	if len(parts) != 3 {
		return "", errSCRAM
	}
	switch parts[0] {
	case "n", "y":
	default:
		return "", errSCRAM // "p=...": channel binding we did not offer
	}
	if parts[1] != "" {
		return "", errSCRAM
	}
	s.gs2Header = parts[0] + "," + parts[1] + ","
	s.clientFirstBare = parts[2]
	var clientNonce string
	for _, attr := range strings.Split(s.clientFirstBare, ",") {
		if strings.HasPrefix(attr, "r=") {
			clientNonce = attr[2:]
		}
	}
	if clientNonce == "" || strings.ContainsAny(clientNonce, ",") {
		return "", errSCRAM
	}
	var buf [18]byte
	if _, err := rand.Read(buf[:]); err != nil {
		return "", err
	}
	s.nonce = clientNonce + base64.RawStdEncoding.EncodeToString(buf[:])
	s.salt = make([]byte, 16)
	if _, err := rand.Read(s.salt); err != nil {
		return "", err
	}
	s.serverFirst = fmt.Sprintf("r=%s,s=%s,i=%d", s.nonce, base64.StdEncoding.EncodeToString(s.salt), scramIterations)
	return s.serverFirst, nil
}

// final checks the client-final-message's proof and returns the
// server-final-message.
func (s *scramServer) final(msg []byte) (string, error) {
	m := string(msg)
	i := strings.LastIndex(m, ",p=")
	if i < 0 {
		return "", errSCRAM
	}
	withoutProof := m[:i]
	proof, err := base64.StdEncoding.DecodeString(m[i+3:])
	if err != nil || len(proof) != sha256.Size {
		return "", errSCRAM
	}
	var cb, nonce string
	for _, attr := range strings.Split(withoutProof, ",") {
		switch {
		case strings.HasPrefix(attr, "c="):
			cb = attr[2:]
		case strings.HasPrefix(attr, "r="):
			nonce = attr[2:]
		}
	}
	if cb != base64.StdEncoding.EncodeToString([]byte(s.gs2Header)) || nonce != s.nonce {
		return "", errSCRAM
	}
	salted, err := pbkdf2.Key(sha256.New, s.password, s.salt, scramIterations, sha256.Size)
	if err != nil {
		return "", err
	}
	clientKey := hmacSHA256(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	authMessage := s.clientFirstBare + "," + s.serverFirst + "," + withoutProof
	clientSig := hmacSHA256(storedKey[:], authMessage)
	recovered := make([]byte, len(proof))
	for j := range proof {
		recovered[j] = proof[j] ^ clientSig[j]
	}
	got := sha256.Sum256(recovered)
	if subtle.ConstantTimeCompare(got[:], storedKey[:]) != 1 {
		return "", errSCRAM
	}
	serverKey := hmacSHA256(salted, "Server Key")
	return "v=" + base64.StdEncoding.EncodeToString(hmacSHA256(serverKey, authMessage)), nil
}

func hmacSHA256(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}
