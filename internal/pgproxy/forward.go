package pgproxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// A database that another proxy serves (Target.Forward) is reached through
// this one: the client's startup message goes there, the password exchange
// and everything after it pass through unchanged, and the other proxy
// checks the password, logs into the server and observes the connection.
// This proxy only remembers the cancel key the other one hands out, so
// that a cancel request sent here (where the client connected) reaches it.
// The hop between the two proxies is in the clear, as the instances'
// other traffic to each other is: the client's TLS ends here.

// forwards maps the cancel keys of forwarded connections to the address of
// the proxy that handed them out.
type forwards struct {
	mu   sync.Mutex
	keys map[cancelKey]string
}

// add records that key belongs to a connection forwarded to addr.
func (f *forwards) add(key cancelKey, addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.keys == nil {
		f.keys = make(map[cancelKey]string)
	}
	f.keys[key] = addr
}

// remove forgets key.
func (f *forwards) remove(key cancelKey) {
	f.mu.Lock()
	delete(f.keys, key)
	f.mu.Unlock()
}

// lookup returns the address of the proxy that handed out key.
func (f *forwards) lookup(key cancelKey) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	addr, ok := f.keys[key]
	return addr, ok
}

// tcpAddr is a host:port to dial over TCP, as a net.Addr.
type tcpAddr string

// Network returns "tcp".
func (tcpAddr) Network() string { return "tcp" }

// String returns the host:port.
func (a tcpAddr) String() string { return string(a) }

// cancelForwarded passes a cancel request with a key this proxy did not
// hand out to the proxy of the forwarded connection that got it, if any;
// it reports whether there was one.
func (s *Server) cancelForwarded(ctx context.Context, k cancelKey) bool {
	addr, ok := s.fwd.lookup(k)
	if !ok {
		return false
	}
	var secret [4]byte
	binary.BigEndian.PutUint32(secret[:], k.secret)
	if err := sendCancel(ctx, tcpAddr(addr), k.pid, secret[:]); err != nil {
		s.logger.Warn("pgproxy: passing a cancel request on to the proxy that serves the connection", "to", addr, "err", err)
	}
	return true
}

// encodeStartup returns a protocol 3.0 StartupMessage with st's
// parameters (in a fixed order).
func encodeStartup(st startup) []byte {
	keys := make([]string, 0, len(st.params))
	for k := range st.params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b := make([]byte, 8, 64)
	binary.BigEndian.PutUint32(b[4:], protocol30)
	for _, k := range keys {
		b = append(b, k...)
		b = append(b, 0)
		b = append(b, st.params[k]...)
		b = append(b, 0)
	}
	b = append(b, 0)
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

// forward relays client, which asked for st, to the proxy at addr until
// either side ends or ctx does. The login goes through within hctx's
// deadline; established is called once it has (the client then has no
// deadline). A proxy that does not answer, or ends the connection before
// the login is done without saying why, is reported to the client.
func (s *Server) forward(ctx, hctx context.Context, client net.Conn, st startup, addr string, log *slog.Logger, established func()) {
	log = log.With("forward_to", addr)
	var d net.Dialer
	up, err := d.DialContext(hctx, "tcp", addr)
	if err != nil {
		log.Warn("pgproxy: the proxy that serves the database does not answer", "err", err)
		sendFatal(client, &pgconn.PgError{Code: "08001", Message: fmt.Sprintf("the rlslab proxy that serves database %q, at %s, does not answer; try again in a moment", st.database, addr)})
		return
	}
	defer up.Close()
	if dl, ok := hctx.Deadline(); ok {
		_ = up.SetDeadline(dl)
	}
	lost := func(err error) {
		log.Warn("pgproxy: the proxy that serves the database ended the login", "err", err)
		sendFatal(client, &pgconn.PgError{Code: "08006", Message: fmt.Sprintf("the rlslab proxy that serves database %q, at %s, closed the connection during the login", st.database, addr)})
	}
	if _, err := up.Write(encodeStartup(st)); err != nil {
		lost(err)
		return
	}
	cr, ur := bufio.NewReader(client), bufio.NewReader(up)
	var key *cancelKey
	defer func() {
		if key != nil {
			s.fwd.remove(*key)
		}
	}()
	for done := false; !done; {
		m, err := readMessage(ur, nil)
		if err != nil {
			lost(err)
			return
		}
		if _, err := client.Write(m.raw); err != nil {
			return
		}
		switch m.typ {
		case 'R': // an authentication request: some want the client's answer
			body := m.body()
			if len(body) < 4 {
				lost(fmt.Errorf("short authentication message"))
				return
			}
			switch binary.BigEndian.Uint32(body) {
			case 3, 5, 10, 11: // cleartext or MD5 password, SASL start, SASL continue
				cm, err := readMessage(cr, nil)
				if err != nil {
					return
				}
				if _, err := up.Write(cm.raw); err != nil {
					lost(err)
					return
				}
			}
		case 'K':
			if body := m.body(); len(body) == 8 && key == nil {
				key = &cancelKey{pid: binary.BigEndian.Uint32(body), secret: binary.BigEndian.Uint32(body[4:])}
				s.fwd.add(*key, addr)
			}
		case 'E': // refused (a wrong password, an unknown lab): said already
			return
		case 'Z':
			done = true
		}
	}
	established()
	_ = up.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() {
		_ = client.Close()
		_ = up.Close()
	})
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() {
		_, _ = io.Copy(client, ur)
		_ = client.Close()
	})
	_, _ = io.Copy(up, cr)
	_ = up.Close()
	wg.Wait()
	log.Debug("pgproxy: forwarded connection closed")
}
