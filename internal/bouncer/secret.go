package bouncer

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// The auth_file of a PgBouncer this package starts holds no password: each
// line holds a secret PgBouncer checks a client's password against and uses
// to log into PostgreSQL on the client's behalf.
//
// For a role whose password PostgreSQL keeps as a SCRAM-SHA-256 secret, the
// line holds that very secret: same salt, same iteration count. PgBouncer
// then verifies the client's SCRAM proof and reuses the client key it
// yields to log into PostgreSQL (PgBouncer requires the secrets to be
// identical for that). The secret is derived from the password and the salt
// and iteration count PostgreSQL announces in the first message of a SCRAM
// exchange, which is abandoned there: no superuser access and no login is
// needed. When PostgreSQL asks for MD5 the line holds the MD5 hash; when it
// trusts the connection (a local socket), a SCRAM secret with a salt of our
// own. Only a server that asks for the cleartext password gets it written.

// scramIterations is the iteration count of secrets salted here (the
// admin console user's and those of trusted roles); PostgreSQL's default.
const scramIterations = 4096

// probeTimeout bounds the look at how PostgreSQL authenticates a role.
const probeTimeout = 5 * time.Second

// scramSecret returns the SCRAM-SHA-256 secret of password with salt and
// iter, in the form PostgreSQL stores in pg_authid and PgBouncer reads from
// an auth_file. (PostgreSQL prepares passwords with SASLprep first, which
// leaves ASCII unchanged; rlslab's lab passwords are hex.)
func scramSecret(password string, salt []byte, iter int) (string, error) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, sha256.Size)
	if err != nil {
		return "", err
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac(salted, "Client Key"))
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iter, b64(salt), b64(stored[:]), b64(mac(salted, "Server Key"))), nil
}

// localSecret returns a SCRAM-SHA-256 secret of password with a fresh
// random salt.
func localSecret(password string) (string, error) {
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	return scramSecret(password, salt, scramIterations)
}

// errCleartext says PostgreSQL asks for the password itself, so only the
// password lets PgBouncer log in.
var errCleartext = errors.New("PostgreSQL asks for the cleartext password")

// upstreamSecret returns the auth_file entry for user: what PostgreSQL at
// up asks of that user's logins to database decides its form (see the top
// of this file). It fails with errCleartext when only the password will do.
func upstreamSecret(ctx context.Context, up Upstream, database, user, password string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	network, addr := "tcp", net.JoinHostPort(up.Host, strconv.Itoa(up.Port))
	if strings.HasPrefix(up.Host, "/") {
		network, addr = "unix", up.Host+"/.s.PGSQL."+strconv.Itoa(up.Port)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": user, "database": database}})
	if err := fe.Flush(); err != nil {
		return "", err
	}
	msg, err := fe.Receive()
	if err != nil {
		return "", err
	}
	switch m := msg.(type) {
	case *pgproto3.AuthenticationOk:
		return localSecret(password)
	case *pgproto3.AuthenticationMD5Password:
		sum := md5.Sum([]byte(password + user))
		return "md5" + hex.EncodeToString(sum[:]), nil
	case *pgproto3.AuthenticationCleartextPassword:
		return "", errCleartext
	case *pgproto3.ErrorResponse:
		return "", fmt.Errorf("PostgreSQL refused %s: %s", user, m.Message)
	case *pgproto3.AuthenticationSASL:
		return scramFromServer(fe, m.AuthMechanisms, password)
	default:
		return "", fmt.Errorf("PostgreSQL answered a login of %s with %T", user, msg)
	}
}

// scramFromServer starts a SCRAM-SHA-256 exchange, reads the salt and
// iteration count of the server's first message and derives the secret.
func scramFromServer(fe *pgproto3.Frontend, mechanisms []string, password string) (string, error) {
	found := false
	for _, m := range mechanisms {
		found = found || m == "SCRAM-SHA-256"
	}
	if !found {
		return "", fmt.Errorf("PostgreSQL offers %v, not SCRAM-SHA-256", mechanisms)
	}
	nonce := make([]byte, 18)
	_, _ = rand.Read(nonce)
	fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=" + base64.StdEncoding.EncodeToString(nonce))})
	if err := fe.Flush(); err != nil {
		return "", err
	}
	msg, err := fe.Receive()
	if err != nil {
		return "", err
	}
	cont, ok := msg.(*pgproto3.AuthenticationSASLContinue)
	if !ok {
		return "", fmt.Errorf("SCRAM: PostgreSQL answered with %T", msg)
	}
	salt, iter, err := parseServerFirst(string(cont.Data))
	if err != nil {
		return "", err
	}
	return scramSecret(password, salt, iter)
}

// parseServerFirst reads the salt (s=) and iteration count (i=) of a SCRAM
// server-first message.
func parseServerFirst(msg string) ([]byte, int, error) {
	var salt []byte
	iter := 0
	for _, attr := range strings.Split(msg, ",") {
		k, v, _ := strings.Cut(attr, "=")
		switch k {
		case "s":
			b, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				return nil, 0, fmt.Errorf("SCRAM: bad salt: %w", err)
			}
			salt = b
		case "i":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return nil, 0, fmt.Errorf("SCRAM: bad iteration count %q", v)
			}
			iter = n
		}
	}
	if len(salt) == 0 || iter == 0 {
		return nil, 0, fmt.Errorf("SCRAM: no salt or iteration count in %q", msg)
	}
	return salt, iter, nil
}

// authSecrets returns the auth_file entries of opts.Users and of the admin
// console user: secrets, never passwords, unless PostgreSQL asks for a
// cleartext password. A PostgreSQL that cannot be reached gets secrets
// salted here, which lets clients in but may not log PgBouncer into it.
func authSecrets(ctx context.Context, opts Options, adminPassword string, log *slog.Logger) (map[string]string, string, error) {
	db := "postgres"
	if len(opts.Databases) > 0 {
		db = opts.Databases[0]
	}
	out := make(map[string]string, len(opts.Users))
	for user, password := range opts.Users {
		s, err := upstreamSecret(ctx, opts.Upstream, db, user, password)
		switch {
		case errors.Is(err, errCleartext):
			log.Warn("PostgreSQL asks for cleartext passwords; the PgBouncer auth_file holds the password", "user", user)
			s = password
		case err != nil:
			log.Warn("could not read how PostgreSQL authenticates; PgBouncer may fail to log in", "user", user, "err", err)
			if s, err = localSecret(password); err != nil {
				return nil, "", err
			}
		}
		out[user] = s
	}
	admin, err := localSecret(adminPassword)
	if err != nil {
		return nil, "", err
	}
	return out, admin, nil
}
