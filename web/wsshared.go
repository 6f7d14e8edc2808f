package web

import (
	"sync"

	"github.com/gorilla/websocket"
)

// sharedMessagesMax bounds how many different messages of one frame are
// kept for sharing: browsers that skipped different frames get different
// messages, and beyond this many each is written on its own.
const sharedMessagesMax = 8

// sharedMessages lets the websockets that send the same message of one
// frame share its encoding: the first writes it as usual, and from the
// second on it is prepared once (websocket.PreparedMessage: framed and, for
// browsers that take compression, deflated once) and written as is. A lab
// that a room watches (a presenter's) then compresses each message once, not
// once per browser, while a lab with one watcher works as before. It
// belongs to one frame and lives as long as the frame; the zero value is
// not usable, a nil one writes every message on its own.
type sharedMessages struct {
	mu   sync.Mutex
	seen map[string]*sharedMessage // by the message's bytes
}

// sharedMessage is one message of a frame: how many websockets wrote it,
// and its prepared encoding from the second on.
type sharedMessage struct {
	writes   int
	prepared *websocket.PreparedMessage
}

func newSharedMessages() *sharedMessages {
	return &sharedMessages{seen: map[string]*sharedMessage{}}
}

// write sends msg as a text message on conn, sharing its encoding with the
// other websockets that send the same bytes for this frame.
func (s *sharedMessages) write(conn *websocket.Conn, msg []byte) error {
	if s == nil {
		return conn.WriteMessage(websocket.TextMessage, msg)
	}
	s.mu.Lock()
	m := s.seen[string(msg)]
	if m == nil {
		if len(s.seen) < sharedMessagesMax {
			s.seen[string(msg)] = &sharedMessage{writes: 1}
		}
		s.mu.Unlock()
		return conn.WriteMessage(websocket.TextMessage, msg)
	}
	m.writes++
	if m.prepared == nil {
		// Preparing copies msg; the encoding is made by the first write
		// of each kind (compressed or not) and reused by the others.
		pm, err := websocket.NewPreparedMessage(websocket.TextMessage, msg)
		if err != nil {
			s.mu.Unlock()
			return conn.WriteMessage(websocket.TextMessage, msg)
		}
		m.prepared = pm
	}
	pm := m.prepared
	s.mu.Unlock()
	return conn.WritePreparedMessage(pm)
}

// prepared reports whether msg was written by more than one websocket and
// so shares one encoding (for tests).
func (s *sharedMessages) prepared(msg []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.seen[string(msg)]
	return m != nil && m.prepared != nil
}
