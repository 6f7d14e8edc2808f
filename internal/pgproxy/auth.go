package pgproxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rlslab/rlslab"
)

// startup is what the client asked for in its StartupMessage.
type startup struct {
	params   map[string]string
	database string
	user     string
}

// handle runs one client connection from its first byte to its end.
func (s *Server) handle(ctx context.Context, nc net.Conn) {
	defer nc.Close()
	deadline := time.Now().Add(s.cfg.HandshakeTimeout)
	_ = nc.SetDeadline(deadline)
	hctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	// A connection stuck in its handshake ends with ctx too.
	stop := context.AfterFunc(hctx, func() { _ = nc.SetDeadline(time.Now()) })
	defer stop()

	client, st, ok := s.negotiate(hctx, nc)
	if !ok {
		return
	}
	id := s.nextID.Add(1)
	log := s.logger.With("conn", id, "database", st.database, "user", st.user)
	target, err := s.cfg.Lookup(hctx, st.database, st.user)
	if err != nil && !refused(err) {
		log.Info("pgproxy: refused", "err", err)
		sendFatal(client, lookupError(err, st))
		return
	}
	if target.Release != nil {
		defer target.Release()
	}
	if err == nil && target.Forward != "" {
		s.forward(ctx, hctx, client, st, target.Forward, log, func() {
			_ = nc.SetDeadline(time.Time{})
			stop()
		})
		return
	}
	br := bufio.NewReader(client)
	password := target.ClientPassword
	if err != nil || password == "" {
		// A refused user goes through the same exchange as a wrong
		// password, against a password nobody knows.
		password = rand.Text()
	}
	if err := s.authenticate(br, client, password); err != nil {
		log.Info("pgproxy: authentication failed", "err", err)
		sendFatal(client, &pgconn.PgError{Code: "28P01", Message: fmt.Sprintf("password authentication failed for user %q", st.user)})
		return
	}
	if err := ensureNothingBuffered(br); err != nil {
		sendFatal(client, &pgconn.PgError{Code: "08P01", Message: err.Error()})
		return
	}
	up, err := connectUpstream(hctx, target, st)
	if err != nil {
		log.Warn("pgproxy: upstream login failed", "err", err)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) {
			pe = &pgconn.PgError{Code: "08006", Message: "the proxy could not connect to the database server"}
		}
		sendFatal(client, pe)
		return
	}
	events := s.cfg.Events
	if target.Events != nil {
		events = target.Events
	}
	c := newConn(s, id, client, br, up, st, events, log)
	c.key = s.register(c)
	defer s.unregister(c.key)
	if err := c.greet(); err != nil {
		log.Debug("pgproxy: greeting the client", "err", err)
		_ = up.Conn.Close()
		return
	}
	_ = nc.SetDeadline(time.Time{})
	stop()
	c.run(ctx)
}

// negotiate reads startup packets until a StartupMessage, answering
// SSLRequest (TLS with the proxy's certificate) and GSSENCRequest (no), and
// serving a CancelRequest. It returns the connection to use from then on.
func (s *Server) negotiate(ctx context.Context, nc net.Conn) (net.Conn, startup, bool) {
	conn := nc
	tlsDone, gssDone := false, false
	// A client may start TLS at once, without an SSLRequest
	// (sslnegotiation=direct, PostgreSQL 17's libpq): a TLS record begins
	// with 0x16, which no startup packet length does at its first byte.
	var first [1]byte
	if _, err := io.ReadFull(nc, first[:]); err != nil {
		return nil, startup{}, false
	}
	if first[0] == 0x16 {
		cfg := s.tls.Clone()
		cfg.NextProtos = []string{"postgresql"}
		tc := tls.Server(&prefixConn{Conn: nc, prefix: first[:]}, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			s.logger.Debug("pgproxy: direct TLS handshake", "err", err)
			return nil, startup{}, false
		}
		conn, tlsDone = tc, true
	} else {
		conn = &prefixConn{Conn: nc, prefix: first[:]}
	}
	for {
		body, err := readStartup(conn)
		if err != nil {
			return nil, startup{}, false
		}
		code := binary.BigEndian.Uint32(body)
		switch {
		case code == codeSSL && !tlsDone && len(body) == 4:
			tlsDone = true
			if _, err := conn.Write([]byte{'S'}); err != nil {
				return nil, startup{}, false
			}
			tc := tls.Server(conn, s.tls)
			if err := tc.HandshakeContext(ctx); err != nil {
				s.logger.Debug("pgproxy: TLS handshake", "err", err)
				return nil, startup{}, false
			}
			conn = tc
		case code == codeGSSENC && !gssDone && !tlsDone && len(body) == 4:
			gssDone = true
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return nil, startup{}, false
			}
		case code == codeCancel && len(body) >= 12:
			s.cancel(ctx, cancelKey{pid: binary.BigEndian.Uint32(body[4:]), secret: binary.BigEndian.Uint32(body[8:])})
			return nil, startup{}, false
		case code>>16 == 3:
			st, unsupported, err := parseStartup(body)
			if err != nil {
				sendFatal(conn, &pgconn.PgError{Code: "08P01", Message: err.Error()})
				return nil, startup{}, false
			}
			if code != protocol30 || len(unsupported) > 0 {
				if err := writeMsgs(conn, &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unsupported}); err != nil {
					return nil, startup{}, false
				}
			}
			if _, ok := st.params["replication"]; ok {
				sendFatal(conn, &pgconn.PgError{Code: "0A000", Message: "the proxy does not relay replication connections"})
				return nil, startup{}, false
			}
			return conn, st, true
		default:
			sendFatal(conn, &pgconn.PgError{Code: "0A000", Message: fmt.Sprintf("unsupported frontend protocol %d.%d", code>>16, code&0xffff)})
			return nil, startup{}, false
		}
	}
}

// prefixConn is a connection whose first bytes were already read.
type prefixConn struct {
	net.Conn
	prefix []byte
}

// Read returns the prefix first.
func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// parseStartup reads a StartupMessage body (after its length): version,
// then name/value pairs. Protocol options (_pq_.*) are returned as
// unsupported.
func parseStartup(body []byte) (startup, []string, error) {
	st := startup{params: make(map[string]string)}
	var unsupported []string
	b := body[4:]
	for len(b) > 0 && b[0] != 0 {
		k, rest, ok := cstring(b)
		if !ok {
			return st, nil, errors.New("invalid startup packet layout")
		}
		v, rest, ok := cstring(rest)
		if !ok {
			return st, nil, errors.New("invalid startup packet layout")
		}
		b = rest
		if strings.HasPrefix(k, "_pq_.") {
			unsupported = append(unsupported, k)
			continue
		}
		st.params[k] = v
	}
	st.user = st.params["user"]
	if st.user == "" {
		return st, nil, errors.New("no PostgreSQL user name specified in startup packet")
	}
	st.database = st.params["database"]
	if st.database == "" {
		st.database = st.user
	}
	return st, unsupported, nil
}

// authenticate runs the SCRAM-SHA-256 exchange with the client.
func (s *Server) authenticate(br *bufio.Reader, w net.Conn, password string) error {
	if err := writeMsgs(w, &pgproto3.AuthenticationSASL{AuthMechanisms: []string{scramMechanism}}); err != nil {
		return err
	}
	m, err := readMessage(br, nil)
	if err != nil {
		return err
	}
	if m.typ != 'p' {
		return fmt.Errorf("expected a password message, got %q", m.typ)
	}
	var init pgproto3.SASLInitialResponse
	if err := init.Decode(m.body()); err != nil {
		return err
	}
	if init.AuthMechanism != scramMechanism {
		return fmt.Errorf("unsupported SASL mechanism %q", init.AuthMechanism)
	}
	sc := scramServer{password: password}
	first, err := sc.first(init.Data)
	if err != nil {
		return err
	}
	if err := writeMsgs(w, &pgproto3.AuthenticationSASLContinue{Data: []byte(first)}); err != nil {
		return err
	}
	if m, err = readMessage(br, nil); err != nil {
		return err
	}
	if m.typ != 'p' {
		return fmt.Errorf("expected a SASL response, got %q", m.typ)
	}
	var resp pgproto3.SASLResponse
	if err := resp.Decode(m.body()); err != nil {
		return err
	}
	final, err := sc.final(resp.Data)
	if err != nil {
		return err
	}
	return writeMsgs(w, &pgproto3.AuthenticationSASLFinal{Data: []byte(final)})
}

// ensureNothingBuffered refuses a client that sent messages before it was
// told it is logged in.
func ensureNothingBuffered(br *bufio.Reader) error {
	if br.Buffered() > 0 {
		return errors.New("unexpected messages before the login completed")
	}
	return nil
}

// skipParams are startup parameters not passed to the server: the proxy
// sets user and database itself.
var skipParams = map[string]bool{"user": true, "database": true, "replication": true}

// connectUpstream logs into the target's server and takes over the
// connection.
func connectUpstream(ctx context.Context, t Target, st startup) (*pgconn.HijackedConn, error) {
	cfg, err := pgconn.ParseConfig(t.URL)
	if err != nil {
		return nil, fmt.Errorf("pgproxy: target URL: %w", err)
	}
	if t.User != "" {
		cfg.User = t.User
	}
	if t.Password != "" {
		cfg.Password = t.Password
	}
	for k, v := range st.params {
		if !skipParams[k] {
			cfg.RuntimeParams[k] = v
		}
	}
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pc.SyncConn(ctx); err != nil {
		_ = pc.Close(ctx)
		return nil, err
	}
	hc, err := pc.Hijack()
	if err != nil {
		_ = pc.Close(ctx)
		return nil, err
	}
	return hc, nil
}

// greet finishes the client's login: AuthenticationOk, the server's
// parameters, the proxy's cancel key and ReadyForQuery.
func (c *conn) greet() error {
	msgs := []encoder{&pgproto3.AuthenticationOk{}}
	names := make([]string, 0, len(c.hc.ParameterStatuses))
	for k := range c.hc.ParameterStatuses {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		msgs = append(msgs, &pgproto3.ParameterStatus{Name: k, Value: c.hc.ParameterStatuses[k]})
	}
	var secret [4]byte
	binary.BigEndian.PutUint32(secret[:], c.key.secret)
	status := c.hc.TxStatus
	if status == 0 {
		status = 'I'
	}
	msgs = append(msgs, &pgproto3.BackendKeyData{ProcessID: c.key.pid, SecretKey: secret[:]}, &pgproto3.ReadyForQuery{TxStatus: status})
	// Messages the server sent after its own ReadyForQuery (rare: a
	// notice) follow.
	for c.hc.Frontend.ReadBufferLen() > 0 {
		m, err := c.hc.Frontend.Receive()
		if err != nil {
			return err
		}
		if e, ok := m.(encoder); ok {
			msgs = append(msgs, e)
		}
	}
	b, err := appendMsgs(nil, msgs...)
	if err != nil {
		return err
	}
	if _, err := c.client.Write(b); err != nil {
		return err
	}
	c.opened()
	return nil
}

// refused says whether a Lookup error refuses the user, which the client
// learns only as a failed password exchange.
func refused(err error) bool {
	return errors.Is(err, ErrRefused) || rlslab.ErrorCode(err) == rlslab.EFORBIDDEN
}

// lookupError maps a Lookup error to what the client is told.
func lookupError(err error, st startup) *pgconn.PgError {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe
	}
	switch {
	case errors.Is(err, ErrUnknownDatabase):
		return &pgconn.PgError{Code: "3D000", Message: fmt.Sprintf("database %q does not exist", st.database)}
	case errors.Is(err, ErrTooManyConnections):
		return &pgconn.PgError{Code: "53300", Message: "too many connections for this database"}
	case errors.Is(err, ErrUnavailable):
		return &pgconn.PgError{Code: "57P03", Message: "the database is not accepting connections now"}
	}
	var re *rlslab.Error
	if errors.As(err, &re) {
		switch re.Code {
		case rlslab.ENOTFOUND:
			return &pgconn.PgError{Code: "3D000", Message: fmt.Sprintf("database %q does not exist", st.database)}
		case rlslab.EUNAVAILABLE, rlslab.ETOOMANY:
			return &pgconn.PgError{Code: "53300", Message: re.Message}
		case rlslab.EINVALID:
			return &pgconn.PgError{Code: "08004", Message: re.Message}
		}
	}
	return &pgconn.PgError{Code: "XX000", Message: "internal error in the proxy"}
}

// sendFatal tells the client why its connection ends.
func sendFatal(w net.Conn, pe *pgconn.PgError) {
	_ = writeMsgs(w, &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: pe.Code, Message: pe.Message, Detail: pe.Detail, Hint: pe.Hint})
}
