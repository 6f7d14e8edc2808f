package pgproxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// maxMessageLen is the largest message body the proxy relays, the limit
// PostgreSQL itself applies to most messages (1 GB).
const maxMessageLen = 1 << 30

// maxStartupLen bounds a startup packet, as PostgreSQL does (10000 bytes).
const maxStartupLen = 10000

// message is one protocol message as it travels: its type byte and the
// whole encoding (type, length and body), so the relay forwards the bytes it
// read, unchanged.
type message struct {
	typ byte
	raw []byte // type byte, 4-byte length, body
}

// body returns the message without its type and length.
func (m message) body() []byte { return m.raw[5:] }

// readMessage reads one typed message from r into buf (reused when large
// enough). The length is checked and the body is read as it arrives, so a
// peer that announces a huge length and sends little costs little memory.
func readMessage(r *bufio.Reader, buf []byte) (message, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return message{}, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:]))
	if n < 4 || n-4 > maxMessageLen {
		return message{}, fmt.Errorf("pgproxy: invalid message length %d for type %q", n, hdr[0])
	}
	total := 1 + n
	if cap(buf) >= total {
		buf = buf[:total]
		copy(buf, hdr[:])
		if _, err := io.ReadFull(r, buf[5:]); err != nil {
			return message{}, err
		}
		return message{typ: hdr[0], raw: buf}, nil
	}
	var b bytes.Buffer
	b.Grow(min(total, 64<<10))
	b.Write(hdr[:])
	if _, err := io.CopyN(&b, r, int64(n-4)); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return message{}, err
	}
	return message{typ: hdr[0], raw: b.Bytes()}, nil
}

// readStartup reads one untyped startup packet (StartupMessage, SSLRequest,
// GSSENCRequest or CancelRequest) from r, byte for byte, never past its end:
// what follows an SSLRequest must come through TLS.
func readStartup(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	if n < 8 || n > maxStartupLen {
		return nil, fmt.Errorf("pgproxy: invalid startup packet length %d", n)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return body, nil
}

// Startup packet codes, in the place of a protocol version.
const (
	codeCancel  = 80877102
	codeSSL     = 80877103
	codeGSSENC  = 80877104
	protocol30  = 196608
	protocol3_x = 3 << 16
)

// encoder is what every pgproto3 message can do.
type encoder interface {
	Encode(dst []byte) ([]byte, error)
}

// appendMsgs encodes msgs after dst.
func appendMsgs(dst []byte, msgs ...encoder) ([]byte, error) {
	var err error
	for _, m := range msgs {
		if dst, err = m.Encode(dst); err != nil {
			return dst, err
		}
	}
	return dst, nil
}

// writeMsgs encodes msgs and writes them to w in one write.
func writeMsgs(w io.Writer, msgs ...encoder) error {
	b, err := appendMsgs(nil, msgs...)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// cstring splits a NUL-terminated string off the front of b.
func cstring(b []byte) (string, []byte, bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", nil, false
	}
	return string(b[:i]), b[i+1:], true
}
