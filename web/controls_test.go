package web

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
)

// These tests drive state.json and the control endpoints (run, reset,
// speed, step) through Server.ServeHTTP against fakeLab, in memory: how a
// request is parsed, who may control a lab, and how each error becomes a
// status and a body. The end-to-end tests of server_test.go run the same
// endpoints against real labs.

// fakeOwner is the learner token of the browser that owns the fake lab.
const fakeOwner = "owner-token-0123456789abcdef"

// fakeErrs are the errors a fakeLab answers with (nil: success).
type fakeErrs struct{ start, reset, speed, step error }

// fakeLab is a controlLab that records what the handlers asked of it and
// answers with the errors a test gives it.
type fakeLab struct {
	errs  fakeErrs
	state engine.State

	mu        sync.Mutex
	starts    []sessions.RunRequest
	speeds    []engine.Speed
	touches   int
	resets    int
	steps     int
	resetCtxs []error // ctx.Err() of each Reset, right after the request ended
}

func (f *fakeLab) State(context.Context) engine.State { return f.state }

func (f *fakeLab) IsOwner(token string) bool { return token == fakeOwner }

func (f *fakeLab) Touch() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.touches++
}

func (f *fakeLab) Start(r sessions.RunRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.starts = append(f.starts, r)
	return f.errs.start
}

func (f *fakeLab) Reset(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resets++
	f.resetCtxs = append(f.resetCtxs, ctx.Err())
	return f.errs.reset
}

func (f *fakeLab) SetSpeed(s engine.Speed) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.speeds = append(f.speeds, s)
	return f.errs.speed
}

func (f *fakeLab) Step() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.steps++
	return f.errs.step
}

// calls counts every call that changes the lab (Touch aside).
func (f *fakeLab) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.starts) + len(f.speeds) + f.resets + f.steps
}

// newFakeServer returns a server without a lab manager whose only lab is
// lab, under the id "lab1".
func newFakeServer(t *testing.T, lab *fakeLab) *Server {
	t.Helper()
	s := newBareServer(t, nil)
	s.controls = func(id string) (controlLab, error) {
		if id == "lab1" {
			return lab, nil
		}
		return nil, rlslab.Errorf(rlslab.ENOTFOUND, "no lab %q: it expired or rlslab restarted", id)
	}
	return s
}

// headers returns the header pairs of the named kinds of request: owner
// (the owner's cookie, from the page's own origin), json and form (the
// body's type), htmx, and accept-json.
func headers(kinds ...string) []string {
	var out []string
	for _, k := range kinds {
		switch k {
		case "owner":
			out = append(out, "Cookie", OwnerCookie+"="+fakeOwner, "Origin", "http://lab.example")
		case "json":
			out = append(out, "Content-Type", "application/json")
		case "form":
			out = append(out, "Content-Type", "application/x-www-form-urlencoded")
		case "htmx":
			out = append(out, "HX-Request", "true")
		case "accept-json":
			out = append(out, "Accept", "application/json")
		default:
			panic("headers: unknown kind " + k)
		}
	}
	return out
}

func TestControlEndpoints(t *testing.T) {
	const run = `{"scenario":"set-leak","variant":"tx-local","speed":"2","params":{"pool":3}}`
	for _, tc := range []struct {
		name         string
		path, body   string
		header       []string
		errs         fakeErrs // the fake's answers
		want         int
		code         string // a JSON error with this code; "" for success or HTML
		html         string // an HTML fragment containing this
		calls        int    // calls that change the lab
		touched      bool   // the owner's activity was recorded
		jsonContains string // in a JSON success body
	}{
		// Which lab, and whose.
		{name: "unknown lab", path: "/labs/nope/runs", body: run, header: headers("owner", "json"), want: 404, code: rlslab.ENOTFOUND},
		{name: "unknown lab htmx", path: "/labs/nope/step", header: headers("owner", "htmx"), want: 404, html: "nope"},
		{name: "unknown lab htmx asking json", path: "/labs/nope/reset", header: headers("owner", "htmx", "accept-json"), want: 404, code: rlslab.ENOTFOUND},
		{name: "no cookie", path: "/labs/lab1/runs", body: run, header: headers("json"), want: 403, code: rlslab.EFORBIDDEN},
		{name: "another browser", path: "/labs/lab1/reset", header: []string{"Cookie", OwnerCookie + "=someone-else-0123456789abcdef"}, want: 403, code: rlslab.EFORBIDDEN},
		{name: "malformed cookie", path: "/labs/lab1/step", header: []string{"Cookie", OwnerCookie + "=" + fakeOwner + "!"}, want: 403, code: rlslab.EFORBIDDEN},
		{name: "foreign origin", path: "/labs/lab1/runs", body: run, header: append(headers("json"), "Cookie", OwnerCookie+"="+fakeOwner, "Origin", "http://evil.example"), want: 403, code: rlslab.EFORBIDDEN},
		{name: "foreign origin htmx", path: "/labs/lab1/step", header: append(headers("htmx"), "Cookie", OwnerCookie+"="+fakeOwner, "Origin", "http://lab.example.evil.example"), want: 403, html: "evil.example"},

		// What a run request says.
		{name: "no scenario", path: "/labs/lab1/runs", body: `{"variant":"tx-local"}`, header: headers("owner", "json"), want: 400, code: rlslab.EINVALID, touched: true},
		{name: "no variant", path: "/labs/lab1/runs", body: "scenario=set-leak", header: headers("owner", "form"), want: 400, code: rlslab.EINVALID, touched: true},
		{name: "no body type", path: "/labs/lab1/runs", body: "scenario=set-leak&variant=tx-local", header: headers("owner"), want: 400, code: rlslab.EINVALID, touched: true},
		{name: "speed NaN", path: "/labs/lab1/runs", body: `{"scenario":"a","variant":"b","speed":"NaN"}`, header: headers("owner", "json"), want: 400, code: rlslab.EINVALID, touched: true},
		{name: "speed -1", path: "/labs/lab1/runs", body: "scenario=a&variant=b&speed=-1", header: headers("owner", "form"), want: 400, code: rlslab.EINVALID, touched: true},
		{name: "speed fast", path: "/labs/lab1/runs", body: "scenario=a&variant=b&speed=fast", header: headers("owner", "form", "htmx"), want: 400, html: "fast", touched: true},
		{name: "param a list", path: "/labs/lab1/runs", body: `{"scenario":"a","variant":"b","params":{"pool":[2]}}`, header: headers("owner", "json"), want: 400, code: rlslab.EINVALID, touched: true},
		{name: "unknown field", path: "/labs/lab1/runs", body: `{"scenario":"a","variant":"b","pool":2}`, header: headers("owner", "json"), want: 400, code: rlslab.EINVALID, touched: true},
		{name: "malformed json", path: "/labs/lab1/runs", body: `{"scenario":`, header: headers("owner", "json"), want: 400, code: rlslab.EINVALID, touched: true},
		{name: "body too big", path: "/labs/lab1/runs", body: "scenario=" + strings.Repeat("a", maxBody), header: headers("owner", "form"), want: 400, code: rlslab.EINVALID, touched: true},

		// What Start answers, mapped to a status.
		{name: "start refuses a parameter", path: "/labs/lab1/runs", body: run, header: headers("owner", "json"), errs: fakeErrs{start: rlslab.Errorf(rlslab.EINVALID, "pool: want 1 to 8")}, want: 400, code: rlslab.EINVALID, calls: 1, touched: true},
		{name: "start unknown scenario", path: "/labs/lab1/runs", body: run, header: headers("owner", "json"), errs: fakeErrs{start: rlslab.Errorf(rlslab.ENOTFOUND, "no scenario")}, want: 404, code: rlslab.ENOTFOUND, calls: 1, touched: true},
		{name: "run going", path: "/labs/lab1/runs", body: run, header: headers("owner", "json"), errs: fakeErrs{start: rlslab.Errorf(rlslab.ECONFLICT, "a run is already going")}, want: 409, code: rlslab.ECONFLICT, calls: 1, touched: true},
		{name: "database away", path: "/labs/lab1/runs", body: run, header: headers("owner", "json"), errs: fakeErrs{start: rlslab.Errorf(rlslab.EUNAVAILABLE, "the database is not answering")}, want: 503, code: rlslab.EUNAVAILABLE, calls: 1, touched: true},
		{name: "too many", path: "/labs/lab1/runs", body: run, header: headers("owner", "json"), errs: fakeErrs{start: rlslab.Errorf(rlslab.ETOOMANY, "slow down")}, want: 429, code: rlslab.ETOOMANY, calls: 1, touched: true},
		{name: "wrapped conflict", path: "/labs/lab1/runs", body: run, header: headers("owner", "json"), errs: fakeErrs{start: errors.Join(errors.New("start"), rlslab.Errorf(rlslab.ECONFLICT, "busy"))}, want: 409, code: rlslab.ECONFLICT, calls: 1, touched: true},
		{name: "plain error", path: "/labs/lab1/runs", body: run, header: headers("owner", "json"), errs: fakeErrs{start: errors.New("dial tcp 10.0.0.1:5432: refused")}, want: 500, code: rlslab.EINTERNAL, calls: 1, touched: true},
		{name: "conflict htmx", path: "/labs/lab1/runs", body: "scenario=a&variant=b", header: headers("owner", "form", "htmx"), errs: fakeErrs{start: rlslab.Errorf(rlslab.ECONFLICT, "a run is already going")}, want: 409, html: "a run is already going", calls: 1, touched: true},

		// Runs that start, answered as the client asked.
		{name: "run json", path: "/labs/lab1/runs", body: run, header: headers("owner", "json"), want: 202, calls: 1, touched: true, jsonContains: `"speed": "2"`},
		{name: "run htmx", path: "/labs/lab1/runs", body: "scenario=set-leak&variant=tx-local&speed=step", header: headers("owner", "form", "htmx"), want: 202, html: "Started set-leak / tx-local at speed step.", calls: 1, touched: true},
		{name: "run htmx asking json", path: "/labs/lab1/runs", body: "scenario=set-leak&variant=tx-local", header: headers("owner", "form", "htmx", "accept-json"), want: 202, calls: 1, touched: true, jsonContains: `"status": "running"`},

		// Reset, speed and step.
		{name: "reset", path: "/labs/lab1/reset", header: headers("owner"), want: 200, calls: 1, touched: true, jsonContains: `"status": "idle"`},
		{name: "reset fails", path: "/labs/lab1/reset", header: headers("owner"), errs: fakeErrs{reset: rlslab.Errorf(rlslab.EUNAVAILABLE, "the database is not answering")}, want: 503, code: rlslab.EUNAVAILABLE, calls: 1, touched: true},
		{name: "speed", path: "/labs/lab1/speed", body: "speed=step", header: headers("owner", "form"), want: 200, calls: 1, touched: true, jsonContains: `"speed": "step"`},
		{name: "speed htmx sending json", path: "/labs/lab1/speed", body: `{"speed":"0.5x"}`, header: headers("owner", "json", "htmx"), want: 200, calls: 1, touched: true, jsonContains: `"speed": "0.5"`},
		{name: "speed missing", path: "/labs/lab1/speed", body: "", header: headers("owner", "form"), want: 400, code: rlslab.EINVALID, touched: true},
		{name: "speed NaN", path: "/labs/lab1/speed", body: "speed=NaN", header: headers("owner", "form"), want: 400, code: rlslab.EINVALID, touched: true},
		{name: "speed -1", path: "/labs/lab1/speed", body: `{"speed":"-1"}`, header: headers("owner", "json"), want: 400, code: rlslab.EINVALID, touched: true},
		{name: "speed fast", path: "/labs/lab1/speed", body: "speed=fast", header: headers("owner", "form", "htmx"), want: 400, html: "fast", touched: true},
		{name: "speed without a run", path: "/labs/lab1/speed", body: "speed=2", header: headers("owner", "form"), errs: fakeErrs{speed: rlslab.Errorf(rlslab.ECONFLICT, "no run is going")}, want: 409, code: rlslab.ECONFLICT, calls: 1, touched: true},
		{name: "step", path: "/labs/lab1/step", header: headers("owner", "htmx"), want: 200, html: "One step.", calls: 1, touched: true},
		{name: "step without a run", path: "/labs/lab1/step", header: headers("owner"), errs: fakeErrs{step: rlslab.Errorf(rlslab.ECONFLICT, "no run is going")}, want: 409, code: rlslab.ECONFLICT, calls: 1, touched: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lab := &fakeLab{errs: tc.errs}
			s := newFakeServer(t, lab)
			w := serve(s, http.MethodPost, "http://lab.example"+tc.path, tc.body, tc.header...)
			if got := lab.calls(); got != tc.calls {
				t.Errorf("%d calls changed the lab, want %d (starts %v)", got, tc.calls, lab.starts)
			}
			if lab.touches > 0 != tc.touched {
				t.Errorf("touched %d times, want touched %v", lab.touches, tc.touched)
			}
			if w.Code != tc.want {
				t.Fatalf("%d, want %d: %.300s", w.Code, tc.want, w.Body)
			}
			ct := w.Header().Get("Content-Type")
			switch {
			case tc.html != "":
				if !strings.HasPrefix(ct, "text/html") || !strings.Contains(w.Body.String(), tc.html) {
					t.Errorf("want an HTML fragment with %q, got %q: %.300s", tc.html, ct, w.Body)
				}
				if strings.Contains(w.Body.String(), "<html") {
					t.Errorf("htmx got a whole page: %.300s", w.Body)
				}
			case tc.code != "":
				if code, _ := jsonError(t, w); code != tc.code {
					t.Errorf("error code %q, want %q", code, tc.code)
				}
			default:
				var body map[string]string
				if ct != "application/json" || json.Unmarshal(w.Body.Bytes(), &body) != nil || body["lab"] != "lab1" {
					t.Errorf("want a JSON answer naming lab1, got %q: %.300s", ct, w.Body)
				}
				if !strings.Contains(w.Body.String(), tc.jsonContains) {
					t.Errorf("JSON answer without %s: %s", tc.jsonContains, w.Body)
				}
			}
		})
	}
}

// TestControlHandOver checks what the handlers hand the lab: the parsed
// run request, the speed, and a Reset that outlives the request.
func TestControlHandOver(t *testing.T) {
	lab := &fakeLab{}
	s := newFakeServer(t, lab)
	w := serve(s, http.MethodPost, "http://lab.example/labs/lab1/runs", "scenario=set-leak&variant=tx-local&speed=max&param.pool=3&param.users=40&pool=9",
		headers("owner", "form")...)
	if w.Code != 202 || len(lab.starts) != 1 {
		t.Fatalf("%d %s, starts %v", w.Code, w.Body, lab.starts)
	}
	got := lab.starts[0]
	if got.Scenario != "set-leak" || got.Variant != "tx-local" || got.Speed != (engine.Speed{Max: true}) ||
		len(got.Params) != 2 || got.Params["pool"] != "3" || got.Params["users"] != "40" {
		t.Errorf("Start got %+v", got)
	}

	serve(s, http.MethodPost, "http://lab.example/labs/lab1/speed", `{"speed":"2x"}`, headers("owner", "json")...)
	if len(lab.speeds) != 1 || lab.speeds[0] != (engine.Speed{Factor: 2}) {
		t.Errorf("SetSpeed got %v", lab.speeds)
	}

	// The browser may go away while a reset closes pools: the reset goes on.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := httptest.NewRequestWithContext(ctx, http.MethodPost, "http://lab.example/labs/lab1/reset", nil)
	for h := headers("owner"); len(h) > 1; h = h[2:] {
		r.Header.Set(h[0], h[1])
	}
	s.ServeHTTP(httptest.NewRecorder(), r)
	if len(lab.resetCtxs) != 1 || lab.resetCtxs[0] != nil {
		t.Errorf("Reset saw a cancelled context: %v", lab.resetCtxs)
	}
}

// TestStateJSONEndpoint serves state.json for the fake's state: the bytes
// of testdata/state-rich.json, to anyone (watchers too), and a JSON 404
// for an unknown lab whatever the browser accepts.
func TestStateJSONEndpoint(t *testing.T) {
	lab := &fakeLab{state: richState()}
	s := newFakeServer(t, lab)
	w := serve(s, http.MethodGet, "http://lab.example/labs/lab1/state.json", "")
	want, err := os.ReadFile("testdata/state-rich.json")
	if err != nil {
		t.Fatal(err)
	}
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" || w.Body.String() != string(want) {
		t.Errorf("state.json: %d %q\n%s\nwant:\n%s", w.Code, w.Header().Get("Content-Type"), w.Body, want)
	}
	for _, h := range [][]string{nil, {"Accept", "text/html"}, headers("accept-json")} {
		w := serve(s, http.MethodGet, "http://lab.example/labs/nope/state.json", "", h...)
		if w.Code != 404 {
			t.Errorf("unknown lab's state.json, %v: %d", h, w.Code)
			continue
		}
		if code, _ := jsonError(t, w); code != rlslab.ENOTFOUND {
			t.Errorf("unknown lab's state.json, %v: code %q", h, code)
		}
	}
	if lab.calls() != 0 || lab.touches != 0 {
		t.Errorf("reading state.json changed the lab (%d calls, %d touches)", lab.calls(), lab.touches)
	}
}

// TestUnknownLabPage: the lab page of an unknown lab is an HTML error page
// with 404 for a browser, and JSON for a client that asks for it. (The page
// handler uses the manager, so this goes through fail with the manager's
// error.)
func TestUnknownLabPage(t *testing.T) {
	s := newBareServer(t, nil)
	notFound := rlslab.Errorf(rlslab.ENOTFOUND, "no lab %q: it expired or rlslab restarted", "nope")
	w := serve(failing{s, notFound}, http.MethodGet, "http://lab.example/labs/nope", "")
	if w.Code != 404 || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") || !strings.Contains(w.Body.String(), "it expired or rlslab restarted") {
		t.Errorf("page: %d %q %.300s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
	w = serve(failing{s, notFound}, http.MethodGet, "http://lab.example/labs/nope", "", headers("accept-json")...)
	if code, _ := jsonError(t, w); w.Code != 404 || code != rlslab.ENOTFOUND {
		t.Errorf("JSON: %d %s", w.Code, code)
	}
}

// failing answers every request with s.fail(err).
type failing struct {
	s   *Server
	err error
}

func (f failing) ServeHTTP(w http.ResponseWriter, r *http.Request) { f.s.fail(w, r, f.err) }
