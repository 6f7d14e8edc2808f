package web

import (
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"github.com/rlslab/rlslab"
)

// Websocket limits of the dashboard's websocket (workshops.go), until it
// streams from a live hub like the lab views do.
const (
	wsWriteWait  = 10 * time.Second    // time allowed to write one frame
	wsPongWait   = 60 * time.Second    // time allowed between pongs
	wsPingPeriod = wsPongWait * 9 / 10 // how often we ping
	wsReadLimit  = 4096                // largest message a browser may send
)

// Websocket limits of the lab, presenter and watch views. A browser
// answers pings by itself (even in a tab in the background), so a socket
// whose pong is late does not read: it is dropped watchPongWait after its
// last pong, and a frame it does not take within watchWriteWait drops it
// too. Before, with a minute between pongs, 300 sockets that never read
// were all still open after 53 s.
const (
	watchWriteWait  = 5 * time.Second // time allowed to write one frame
	watchPongWait   = 7 * time.Second // time allowed between pongs
	watchPingPeriod = 2 * time.Second // how often we ping
)

// wsMessage is the only kind of message a browser may send: htmx's
// websocket extension sends a JSON object with its HEADERS; we accept any
// JSON object and ignore it.
type wsMessage map[string]any

// handleWS streams a lab's frames to one browser. The first frame is the
// full current state. One goroutine reads (and only checks what the browser
// sends), one writes; a slow browser skips frames through its mailbox.
func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) { s.serveWS(w, r, false) }

// serveWS streams the frames of the lab in the path: its live view, and
// with head the presenter's pinned head as well.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request, head bool) {
	lab, err := s.labs.Get(r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// nil CheckOrigin: same origin only. Frames are HTML: compression
	// (permessage-deflate, when the browser offers it) shrinks them a lot.
	// The write buffer is lent from the server's pool only while a message
	// is written, so that an idle watcher holds none.
	up := websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 16 << 10, WriteBufferPool: s.wsBuffers, EnableCompression: true}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader already answered (403 for a foreign origin)
	}
	owner := lab.IsOwner(cookieToken(r))
	if owner {
		lab.Touch()
	}
	watcher := s.hubs.Watch(lab)
	defer watcher.Close()
	conn.SetReadLimit(wsReadLimit)

	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		_ = conn.SetReadDeadline(time.Now().Add(watchPongWait))
		conn.SetPongHandler(func(string) error { return conn.SetReadDeadline(time.Now().Add(watchPongWait)) })
		for {
			kind, data, err := conn.ReadMessage()
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					s.log.Info("websocket dropped: its browser does not read", "lab", lab.ID, "after", watchPongWait)
				}
				return
			}
			if err := checkWSMessage(kind, data); err != nil {
				msg := websocket.FormatCloseMessage(websocket.CloseUnsupportedData, rlslab.ErrorMessage(err))
				_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(watchWriteWait))
				return
			}
			if owner {
				lab.Touch()
			}
		}
	}()

	ping := time.NewTicker(watchPingPeriod)
	defer ping.Stop()
	defer func() {
		conn.Close()
		<-readDone
	}()
	diff := &frameDiff{}
	for {
		select {
		case f := <-watcher.Frames():
			parts := f.parts
			if head {
				parts = f.withHead
			}
			frame := diff.next(parts)
			if frame == nil {
				continue // nothing this browser shows has changed
			}
			_ = conn.SetWriteDeadline(time.Now().Add(watchWriteWait))
			if err := conn.WriteMessage(websocket.TextMessage, frame); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					s.log.Info("websocket dropped: its browser does not read", "lab", lab.ID, "after", watchWriteWait)
				}
				return
			}
		case <-ping.C:
			if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(watchWriteWait)); err != nil {
				return
			}
		case <-watcher.Done():
			msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "lab closed")
			_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(watchWriteWait))
			return
		case <-readDone:
			return
		case <-r.Context().Done():
			return
		}
	}
}
