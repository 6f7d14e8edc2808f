package web

import (
	"net"
	"net/http"
	"net/url"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/web/views"
)

// Proxy is what the pages tell a learner about rlslab's PostgreSQL proxy,
// through which their own app connects to a lab (see sessions'
// ProxyLookup).
type Proxy struct {
	// Addr is the proxy's listening address (host:port); "" means the
	// proxy is off.
	Addr string
	// CertPEM is the certificate the proxy offers to TLS clients.
	CertPEM []byte
}

// WithProxy tells the pages where rlslab's PostgreSQL proxy listens, and
// returns s.
func (s *Server) WithProxy(p Proxy) *Server {
	s.proxy = p
	return s
}

// appRoutes registers the endpoints of the "Connect your app" panel.
func (s *Server) appRoutes() {
	s.mux.HandleFunc("GET /labs/{id}/connect.json", s.handleConnectJSON)
	s.mux.HandleFunc("GET /proxy.crt", s.handleProxyCert)
}

// proxyHost returns the host and port an app connects to, as the browser
// that asks reaches rlslab: the proxy's own host, unless it listens on
// every address (then the host the browser used).
func (s *Server) proxyHost(r *http.Request) (string, bool) {
	if s.proxy.Addr == "" {
		return "", false
	}
	host, port, err := net.SplitHostPort(s.proxy.Addr)
	if err != nil {
		return "", false
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = r.Host
		if h, _, err := net.SplitHostPort(r.Host); err == nil {
			host = h
		}
	}
	return net.JoinHostPort(host, port), true
}

// connectURL is the URL an app connects to lab with through the proxy.
func connectURL(hostport string, lab *sessions.Lab, sslmode string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(sessions.AppUser, lab.ProxyPassword()), Host: hostport,
		Path: "/" + lab.ProxyDatabase(), RawQuery: "sslmode=" + sslmode}
	return u.String()
}

// connectPanel returns the "Connect your app" panel of lab for its owner.
func (s *Server) connectPanel(r *http.Request, lab *sessions.Lab) views.ConnectPanel {
	hp, ok := s.proxyHost(r)
	if !ok {
		return views.ConnectPanel{Lab: lab.ID}
	}
	host, port, _ := net.SplitHostPort(hp)
	return views.ConnectPanel{Lab: lab.ID, On: true, URL: connectURL(hp, lab, "require"), NodeURL: connectURL(hp, lab, "no-verify"),
		Host: host, Port: port, Database: lab.ProxyDatabase(), User: sessions.AppUser, Password: lab.ProxyPassword()}
}

// handleConnectJSON serves {"url": …}, the lab's connection URL through the
// proxy, to the lab's owner only (403 for anyone else).
func (s *Server) handleConnectJSON(w http.ResponseWriter, r *http.Request) {
	lab, err := s.labs.Get(r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !lab.IsOwner(cookieToken(r)) {
		s.fail(w, r, rlslab.Errorf(rlslab.EFORBIDDEN, "only the browser that created lab %s may connect an app to it", lab.ID))
		return
	}
	hp, ok := s.proxyHost(r)
	if !ok {
		s.fail(w, r, rlslab.Errorf(rlslab.EUNAVAILABLE, "rlslab's PostgreSQL proxy is off (serve -proxy-addr)"))
		return
	}
	lab.Touch()
	writeJSON(w, http.StatusOK, map[string]string{"url": connectURL(hp, lab, "require")})
}

// handleProxyCert serves the proxy's certificate, which a client needs as
// its root certificate for sslmode=verify-full.
func (s *Server) handleProxyCert(w http.ResponseWriter, r *http.Request) {
	if len(s.proxy.CertPEM) == 0 {
		s.fail(w, r, rlslab.Errorf(rlslab.ENOTFOUND, "rlslab's PostgreSQL proxy is off"))
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("Content-Disposition", `attachment; filename="rlslab-proxy.crt"`)
	_, _ = w.Write(s.proxy.CertPEM)
}
