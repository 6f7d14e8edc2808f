package web

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"

	"github.com/rlslab/rlslab"
)

// ForwardedHeader marks a request one rlslab instance forwarded to
// another; the receiver serves it itself, so a request never goes round.
const ForwardedHeader = "X-Rlslab-Forwarded"

// TagHeader is on every response: the tag of the instance that answered,
// which begins the ids of the labs it runs. A balancer in front learns from
// it where to send each lab's requests (see deploy/haproxy.cfg).
const TagHeader = "X-Rlslab-Tag"

// Locator says which other instance runs lab id: its name and HTTP
// address, or "" when this instance answers for it.
type Locator func(ctx context.Context, id string) (name, address string, err error)

// Forwarder sends each request for a lab that another rlslab instance runs
// (pages, JSON, websockets: every path under /labs/{id}) to that instance,
// with the browser's Host and cookies, so that any instance behind a
// round-robin balancer answers for every lab. Everything else, and a lab
// whose instance cannot be reached, is served by the next handler.
type Forwarder struct {
	next    http.Handler
	locate  Locator
	self    string
	tag     string
	log     *slog.Logger
	mu      sync.Mutex
	proxies map[string]*httputil.ReverseProxy // by address
}

// NewForwarder returns next behind a forwarder; self is this instance's
// name, sent along in ForwardedHeader, and tag its tag (TagHeader).
func NewForwarder(next http.Handler, locate Locator, self, tag string, log *slog.Logger) *Forwarder {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Forwarder{next: next, locate: locate, self: self, tag: tag, log: log, proxies: map[string]*httputil.ReverseProxy{}}
}

// labOfPath returns the lab id of a path under /labs/{id}, or "".
func labOfPath(p string) string {
	rest, ok := strings.CutPrefix(p, "/labs/")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, "/")
	return id
}

// browsersLab returns the lab a request outside /labs/{id} is about: the
// browser's own lab, the newest in its lab cookie, or "" when the request
// is one every instance answers alike (its health, static files) or the
// browser has no lab.
func browsersLab(r *http.Request) string {
	if r.URL.Path == "/healthz" || strings.HasPrefix(r.URL.Path, "/static/") {
		return ""
	}
	if ids := labsOf(r); len(ids) > 0 {
		return ids[0]
	}
	return ""
}

// ServeHTTP forwards a request for another instance's lab, or serves it.
// A browser's other requests (its lesson pages, POST /labs, a join) go to
// the instance that runs the browser's lab, which knows it, as HAProxy's
// owner table does: behind a plain round-robin balancer the browser then
// keeps its lab too.
func (f *Forwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.tag != "" {
		w.Header().Set(TagHeader, f.tag)
	}
	if r.Header.Get(ForwardedHeader) != "" {
		f.next.ServeHTTP(w, r)
		return
	}
	id := labOfPath(r.URL.Path)
	if id == "" {
		id = browsersLab(r)
	}
	if id == "" {
		f.next.ServeHTTP(w, r)
		return
	}
	name, addr, err := f.locate(r.Context(), id)
	if err != nil && rlslab.ErrorCode(err) == rlslab.EUNAVAILABLE && f.tag != "" && !strings.HasPrefix(id, f.tag) {
		// Another instance's lab, and rlslab's tables do not say where
		// it is: not "no such lab" (the learner would be given a new
		// one), but try again.
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": rlslab.ErrorMessage(err), "code": rlslab.ErrorCode(err)})
		return
	}
	if err != nil || addr == "" {
		// Not another instance's: this instance answers (404 for a lab
		// it does not have).
		f.next.ServeHTTP(w, r)
		return
	}
	f.proxy(addr).ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), forwardTo{}, name)))
}

// forwardTo is the context key of the instance a request is forwarded to.
type forwardTo struct{}

// proxy returns the reverse proxy to the instance at addr.
func (f *Forwarder) proxy(addr string) *httputil.ReverseProxy {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.proxies[addr]; p != nil {
		return p
	}
	target := &url.URL{Scheme: "http", Host: addr}
	p := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			// The browser's Host, so that the other instance's same-origin
			// checks see what the browser sent.
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
			pr.Out.Header.Set(ForwardedHeader, f.self)
		},
		FlushInterval: -1, // pass frames on as they come
		ModifyResponse: func(resp *http.Response) error {
			// The balancer learns the tag of the instance it talked to.
			resp.Header.Del(TagHeader)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			// The instance died a moment ago: answer here, as for a lab
			// that is gone, so the learner's next action makes a new one.
			f.log.Warn("forward to another instance failed; answering here", "instance", r.Context().Value(forwardTo{}), "address", addr, "path", r.URL.Path, "err", err)
			f.next.ServeHTTP(w, r)
		},
	}
	f.proxies[addr] = p
	return p
}
