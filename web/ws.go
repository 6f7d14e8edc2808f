package web

import (
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/web/live"
)

// wsReadLimit is the largest message a browser may send on a websocket.
const wsReadLimit = 4096

// Websocket limits of the lab, presenter, watch and dashboard views. A
// browser answers pings by itself (even in a tab in the background), so a
// socket whose pong is late does not read: it is dropped watchPongWait
// after its last pong, and a frame it does not take within watchWriteWait
// drops it too. Before, with a minute between pongs, 300 sockets that never
// read were all still open after 53 s.
const (
	watchWriteWait  = 5 * time.Second // time allowed to write one frame
	watchPongWait   = 7 * time.Second // time allowed between pongs
	watchPingPeriod = 2 * time.Second // how often we ping
)

// wsMessage is the only kind of message a browser may send: htmx's
// websocket extension sends a JSON object with its HEADERS; we accept any
// JSON object and ignore it.
type wsMessage map[string]any

// upgradeWS turns the request into a websocket. nil CheckOrigin: same
// origin only. Frames are HTML: compression (permessage-deflate, when the
// browser offers it) shrinks them a lot. The write buffer is lent from the
// server's pool only while a message is written, so that an idle watcher
// holds none. It returns nil when the upgrader already answered (403 for a
// foreign origin).
func (s *Server) upgradeWS(w http.ResponseWriter, r *http.Request) *websocket.Conn {
	up := websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 16 << 10, WriteBufferPool: s.wsBuffers, EnableCompression: true}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return nil
	}
	conn.SetReadLimit(wsReadLimit)
	return conn
}

// stream says how streamWS sends one kind of frame.
type stream[F any] struct {
	// what names the watched thing in the log ("lab", its id).
	what []any
	// message turns a frame into the message for this browser, nil when
	// there is nothing to send.
	message func(F) []byte
	// shared, when not nil, returns the frame's sharedMessages, through
	// which the websockets that send it the same message share its
	// encoding.
	shared func(F) *sharedMessages
	// read, when not nil, is called for each message the browser sends.
	read func()
	// bye is the close reason sent when the watcher is done.
	bye string
}

// streamWS sends the watcher's frames on conn until the browser leaves,
// stops reading, or the watched thing ends; it closes conn. One goroutine
// reads (and only checks what the browser sends), this one writes; a slow
// browser skips frames through the watcher's mailbox.
func streamWS[F any](s *Server, r *http.Request, conn *websocket.Conn, watcher *live.Watcher[F], st stream[F]) {
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		_ = conn.SetReadDeadline(time.Now().Add(watchPongWait))
		conn.SetPongHandler(func(string) error { return conn.SetReadDeadline(time.Now().Add(watchPongWait)) })
		for {
			kind, data, err := conn.ReadMessage()
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					s.log.Info("websocket dropped: its browser does not read", append(st.what, "after", watchPongWait)...)
				}
				return
			}
			if err := checkWSMessage(kind, data); err != nil {
				msg := websocket.FormatCloseMessage(websocket.CloseUnsupportedData, rlslab.ErrorMessage(err))
				_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(watchWriteWait))
				return
			}
			if st.read != nil {
				st.read()
			}
		}
	}()

	ping := time.NewTicker(watchPingPeriod)
	defer ping.Stop()
	defer func() {
		conn.Close()
		<-readDone
	}()
	for {
		select {
		case f := <-watcher.Frames():
			frame := st.message(f)
			if frame == nil {
				continue // nothing this browser shows has changed
			}
			_ = conn.SetWriteDeadline(time.Now().Add(watchWriteWait))
			var shared *sharedMessages
			if st.shared != nil {
				shared = st.shared(f)
			}
			if err := shared.write(conn, frame); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					s.log.Info("websocket dropped: its browser does not read", append(st.what, "after", watchWriteWait)...)
				}
				return
			}
		case <-ping.C:
			if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(watchWriteWait)); err != nil {
				return
			}
		case <-watcher.Done():
			msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, st.bye)
			_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(watchWriteWait))
			return
		case <-readDone:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// handleWS streams a lab's frames to one browser. The first frame is the
// full current state. With ?scenario=ID (a lesson page) it sends only the
// frames of that scenario's runs, and of a lab with no run.
func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) { s.serveWS(w, r, false) }

// serveWS streams the frames of the lab in the path: its live view, and
// with head the presenter's pinned head as well.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request, head bool) {
	lab, err := s.labs.Get(r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	conn := s.upgradeWS(w, r)
	if conn == nil {
		return
	}
	owner := lab.IsOwner(cookieToken(r))
	if owner {
		lab.Touch()
	}
	watcher := s.hubs.Watch(lab)
	defer watcher.Close()
	diff := &frameDiff{}
	only := r.URL.Query().Get("scenario") // a lesson page: its own scenario's runs only
	st := stream[labFrame]{what: []any{"lab", lab.ID}, bye: "lab closed", shared: labFrame.sharedMessages, message: func(f labFrame) []byte {
		if only != "" && f.scenario != "" && f.scenario != only {
			return nil // another lesson's run: this page shows none of it
		}
		if head {
			return diff.next(f.withHead)
		}
		return diff.next(f.parts)
	}}
	if owner {
		st.read = lab.Touch
	}
	streamWS(s, r, conn, watcher, st)
}
