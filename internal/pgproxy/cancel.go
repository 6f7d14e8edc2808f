package pgproxy

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"net"
	"time"
)

// cancelKey is the (process ID, secret key) pair a client is given in
// BackendKeyData. The proxy hands out the real backend PID, so what the app
// reads from pg_backend_pid() matches, with a secret of its own: the real
// secret never leaves the proxy.
type cancelKey struct {
	pid    uint32
	secret uint32
}

// cancelWaitProbe bounds how long a cancel request waits for a probe in
// flight to end, so that it cancels the client's statement and not the probe.
const cancelWaitProbe = time.Second

// register gives c a cancel key unique within s and records it.
func (s *Server) register(c *conn) cancelKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		var b [4]byte
		_, _ = rand.Read(b[:])
		k := cancelKey{pid: c.realPID, secret: binary.BigEndian.Uint32(b[:])}
		if _, taken := s.conns[k]; !taken && k.secret != 0 {
			s.conns[k] = c
			return k
		}
	}
}

// unregister forgets c's key.
func (s *Server) unregister(k cancelKey) {
	s.mu.Lock()
	delete(s.conns, k)
	s.mu.Unlock()
}

// cancel forwards a client's CancelRequest to the backend its key names,
// with the backend's real key. A key the proxy did not hand out does nothing.
func (s *Server) cancel(ctx context.Context, k cancelKey) {
	s.mu.Lock()
	c := s.conns[k]
	s.mu.Unlock()
	if c == nil {
		if s.cancelForwarded(ctx, k) {
			return
		}
		s.logger.Debug("pgproxy: cancel request with an unknown key", "pid", k.pid)
		return
	}
	if done := c.probeInFlight(); done != nil {
		t := time.NewTimer(cancelWaitProbe)
		select {
		case <-done:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	if err := sendCancel(ctx, c.upAddr, c.realPID, c.realSecret); err != nil {
		s.logger.Warn("pgproxy: forwarding a cancel request", "pid", c.realPID, "err", err)
	}
}

// sendCancel opens a connection to the backend's server and sends a
// CancelRequest with the real key, as libpq does (no TLS: PostgreSQL accepts
// cancel requests in the clear).
func sendCancel(ctx context.Context, addr net.Addr, pid uint32, secret []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, addr.Network(), addr.String())
	if err != nil {
		return err
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	buf := make([]byte, 12, 12+len(secret))
	binary.BigEndian.PutUint32(buf[0:], uint32(12+len(secret)))
	binary.BigEndian.PutUint32(buf[4:], codeCancel)
	binary.BigEndian.PutUint32(buf[8:], pid)
	buf = append(buf, secret...)
	if _, err := nc.Write(buf); err != nil {
		return err
	}
	// The server closes the connection once it has read the request;
	// waiting for that keeps the cancel ordered before what follows.
	var one [1]byte
	_, _ = nc.Read(one[:])
	return nil
}

// Cancel asks the server to cancel the statement running on the backend of
// the client connection id (ConnInfo.ID), as the client's own cancel
// request would: the connection and its session state stay. It reports
// whether such a connection is open.
func (s *Server) Cancel(ctx context.Context, id uint64) bool {
	s.mu.Lock()
	var c *conn
	for _, cc := range s.conns {
		if cc.info.ID == id {
			c = cc
			break
		}
	}
	s.mu.Unlock()
	if c == nil {
		return false
	}
	s.cancel(ctx, c.key)
	return true
}
