package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/static"
)

// These tests run the handlers in memory, without PostgreSQL: the parsers,
// the origin check, the routes that need no lab, and how errors become
// statuses and bodies. The end-to-end tests of server_test.go cover the
// handlers that work on labs.

// newBareServer returns a Server with the real lessons and static files and
// no lab manager: any handler that reaches for a lab would panic, so a test
// that passes shows the request was answered before that.
func newBareServer(t *testing.T, log *slog.Logger) *Server {
	t.Helper()
	ls, err := lessons.Load(lessons.Content(), scenarios.DefaultCatalog())
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(nil, ls, static.FS(), log)
	t.Cleanup(s.Close)
	return s
}

// serve runs one request through s and returns the recorded response.
func serve(s http.Handler, method, target, body string, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

// jsonError decodes an error body.
func jsonError(t *testing.T, w *httptest.ResponseRecorder) (code, msg string) {
	t.Helper()
	var e struct{ Error, Code string }
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error answered as %q: %s", ct, w.Body)
	}
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body %q: %v", w.Body, err)
	}
	return e.Code, e.Error
}

func TestErrorStatus(t *testing.T) {
	for code, want := range map[string]int{
		rlslab.EINVALID:     http.StatusBadRequest,
		rlslab.ENOTFOUND:    http.StatusNotFound,
		rlslab.ECONFLICT:    http.StatusConflict,
		rlslab.EFORBIDDEN:   http.StatusForbidden,
		rlslab.EUNAVAILABLE: http.StatusServiceUnavailable,
		rlslab.ETOOMANY:     http.StatusTooManyRequests,
		rlslab.EPREPARING:   http.StatusAccepted,
		rlslab.EINTERNAL:    http.StatusInternalServerError,
		"no-such-code":      http.StatusInternalServerError,
	} {
		err := rlslab.Errorf(code, "m")
		if got := ErrorStatus(err); got != want {
			t.Errorf("ErrorStatus(%s) = %d, want %d", code, got, want)
		}
		if got := ErrorStatus(fmt.Errorf("wrapped: %w", err)); got != want {
			t.Errorf("ErrorStatus(wrapped %s) = %d, want %d", code, got, want)
		}
	}
	if got := ErrorStatus(errors.New("dial tcp: refused")); got != http.StatusInternalServerError {
		t.Errorf("a plain error maps to %d, want 500", got)
	}
}

func TestSameOrigin(t *testing.T) {
	for _, tc := range []struct {
		host, origin string
		want         bool
	}{
		{"lab.example:8080", "", true},
		{"lab.example:8080", "http://lab.example:8080", true},
		{"lab.example:8080", "https://LAB.example:8080", true},
		{"lab.example:8080", "http://lab.example", false},
		{"lab.example:8080", "http://lab.example:9090", false},
		{"lab.example:8080", "http://evil.example", false},
		{"lab.example:8080", "null", false},
		{"lab.example:8080", "http://lab.example:8080.evil.example", false},
		{"lab.example:8080", "http://user@lab.example:8080", true},
		{"lab.example:8080", "%zz", false},
	} {
		r := httptest.NewRequest(http.MethodPost, "http://"+tc.host+"/labs", nil)
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		if got := sameOrigin(r); got != tc.want {
			t.Errorf("Host %s, Origin %q: same origin %v, want %v", tc.host, tc.origin, got, tc.want)
		}
	}
}

// TestForeignOriginsAreRefusedBeforeAnyHandler posts to every control
// endpoint from a foreign origin: 403 in JSON, and no handler runs (with no
// lab manager, one would panic).
func TestForeignOriginsAreRefusedBeforeAnyHandler(t *testing.T) {
	s := newBareServer(t, nil)
	for _, path := range []string{"/labs", "/labs/0123abcd/runs", "/labs/0123abcd/reset", "/labs/0123abcd/speed", "/labs/0123abcd/step", "/nowhere"} {
		w := serve(s, http.MethodPost, "http://lab.example"+path, `{"scenario":"set-leak","variant":"tx-local"}`,
			"Origin", "http://evil.example", "Content-Type", "application/json")
		if w.Code != http.StatusForbidden {
			t.Errorf("POST %s from a foreign origin: %d %s", path, w.Code, w.Body)
			continue
		}
		if code, msg := jsonError(t, w); code != rlslab.EFORBIDDEN || !strings.Contains(msg, "evil.example") {
			t.Errorf("POST %s from a foreign origin: %s %q", path, code, msg)
		}
	}
	// Reads are not state changes: a GET with a foreign Origin is served.
	if w := serve(s, http.MethodGet, "http://lab.example/", "", "Origin", "http://evil.example"); w.Code != http.StatusOK {
		t.Errorf("GET / with a foreign Origin: %d", w.Code)
	}
}

// TestRoutesWithoutALab checks the pages and errors that need no lab.
func TestRoutesWithoutALab(t *testing.T) {
	s := newBareServer(t, nil)
	for _, tc := range []struct {
		method, path string
		header       []string
		want         int
		json         bool   // the error must be JSON
		contains     string // in the body
	}{
		{"GET", "/", nil, 200, false, "/lessons/set-leak"},
		{"GET", "/static/vendor/htmx.min.js", nil, 200, false, ""},
		{"GET", "/lessons/no-such-lesson", nil, 404, false, `class="error-page"`},
		{"GET", "/lessons/no-such-lesson", []string{"Accept", "application/json"}, 404, true, "no-such-lesson"},
		{"GET", "/lessons/no-such-lesson", []string{"HX-Request", "true"}, 404, true, ""},
		{"GET", "/no/such/page", nil, 404, false, `class="error-page"`},
		{"GET", "/no/such/page.json", []string{"Accept", "text/html"}, 404, true, "/no/such/page.json"},
		{"POST", "/no/such/page", nil, 404, true, ""},
		{"GET", "/labs", nil, 405, false, ""},
		{"DELETE", "/labs/0123abcd", nil, 405, false, ""},
		{"POST", "/healthz", nil, 405, false, ""},
	} {
		w := serve(s, tc.method, "http://lab.example"+tc.path, "", tc.header...)
		if w.Code != tc.want {
			t.Errorf("%s %s %v: %d, want %d: %.200s", tc.method, tc.path, tc.header, w.Code, tc.want, w.Body)
			continue
		}
		if tc.json {
			if code, _ := jsonError(t, w); code != rlslab.ENOTFOUND {
				t.Errorf("%s %s: code %q", tc.method, tc.path, code)
			}
		}
		if !strings.Contains(w.Body.String(), tc.contains) {
			t.Errorf("%s %s: body does not contain %q: %.300s", tc.method, tc.path, tc.contains, w.Body)
		}
	}
}

// TestFailShowsWordsNotInternals maps errors to responses: the user's
// message for coded errors, "internal error" (and a log line with the
// cause) for anything else, never the driver's text.
func TestFailShowsWordsNotInternals(t *testing.T) {
	var logged strings.Builder
	s := newBareServer(t, slog.New(slog.NewTextHandler(&logged, nil)))
	for _, tc := range []struct {
		err        error
		wantStatus int
		wantMsg    string
	}{
		{rlslab.Errorf(rlslab.EUNAVAILABLE, "the database is not answering; retrying"), 503, "the database is not answering; retrying"},
		{fmt.Errorf("create lab: %w", rlslab.Errorf(rlslab.EUNAVAILABLE, "all 3 labs are in use")), 503, "all 3 labs are in use"},
		{rlslab.Errorf(rlslab.ECONFLICT, "a run is already going"), 409, "a run is already going"},
		{errors.New("failed to connect to host=/tmp/rlslab-pg-1/.s.PGSQL.5432 user=postgres: server error"), 500, "internal error"},
	} {
		r := httptest.NewRequest(http.MethodGet, "/labs/0123abcd/state.json", nil)
		w := httptest.NewRecorder()
		s.fail(w, r, tc.err)
		code, msg := jsonError(t, w)
		if w.Code != tc.wantStatus || msg != tc.wantMsg || code != rlslab.ErrorCode(tc.err) {
			t.Errorf("fail(%v): %d %s %q, want %d %q", tc.err, w.Code, code, msg, tc.wantStatus, tc.wantMsg)
		}
		if strings.Contains(w.Body.String(), "rlslab-pg-") || strings.Contains(w.Body.String(), "5432") {
			t.Errorf("fail(%v) shows internals: %s", tc.err, w.Body)
		}
	}
	if !strings.Contains(logged.String(), ".s.PGSQL.5432") {
		t.Errorf("the internal error was not logged: %q", logged.String())
	}
	// A page request gets the error page, with the status.
	r := httptest.NewRequest(http.MethodGet, "/labs/0123abcd", nil)
	w := httptest.NewRecorder()
	s.fail(w, r, rlslab.Errorf(rlslab.EUNAVAILABLE, "the database is not answering; retrying"))
	if w.Code != 503 || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") || !strings.Contains(w.Body.String(), "the database is not answering") {
		t.Errorf("error page: %d %q %.300s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
}

func TestReadRunForm(t *testing.T) {
	const js, form = "application/json", "application/x-www-form-urlencoded"
	for _, tc := range []struct {
		name, ct, body string
		want           runForm // compared when ok
		ok             bool
	}{
		{"json", js, `{"scenario":"set-leak","variant":"tx-local","speed":"2","params":{"pool":3,"users":"40"}}`,
			runForm{Scenario: "set-leak", Variant: "tx-local", Speed: "2", Params: map[string]string{"pool": "3", "users": "40"}}, true},
		{"json with charset", js + "; charset=utf-8", `{"scenario":"a","variant":"b"}`, runForm{Scenario: "a", Variant: "b", Params: map[string]string{}}, true},
		{"form", form, "scenario=set-leak&variant=tx-local&speed=step&param.pool=2&other=1",
			runForm{Scenario: "set-leak", Variant: "tx-local", Speed: "step", Params: map[string]string{"pool": "2"}}, true},
		// Without a Content-Type the body is not read (handleRun then says
		// scenario and variant are required).
		{"no content type", "", "scenario=a&variant=b", runForm{Params: map[string]string{}}, true},
		{"malformed json", js, `{"scenario":`, runForm{}, false},
		{"unknown field", js, `{"scenario":"a","drop":"table"}`, runForm{}, false},
		{"two values", js, `{"scenario":"a"}{"scenario":"b"}`, runForm{}, false},
		{"param not a number or string", js, `{"params":{"pool":[2]}}`, runForm{}, false},
		{"param object", js, `{"params":{"pool":{"n":2}}}`, runForm{}, false},
		{"bad escape", form, "scenario=%zz", runForm{}, false},
		{"too big", form, "scenario=" + strings.Repeat("a", maxBody), runForm{}, false},
		{"too big json", js, `{"scenario":"` + strings.Repeat("a", maxBody) + `"}`, runForm{}, false},
	} {
		got, err := readRunForm(httptest.NewRecorder(), postRequest(tc.ct, []byte(tc.body)))
		if !tc.ok {
			if rlslab.ErrorCode(err) != rlslab.EINVALID {
				t.Errorf("%s: error %v, want EINVALID", tc.name, err)
			}
			continue
		}
		if err != nil || !sameForm(got, tc.want) {
			t.Errorf("%s: %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

func TestReadSpeedForm(t *testing.T) {
	for _, tc := range []struct {
		ct, body, want string // want "" means refused with EINVALID
	}{
		{"application/json", `{"speed":"max"}`, "max"},
		{"application/json", `{"speed":"0.5x"}`, "0.5"},
		{"application/x-www-form-urlencoded", "speed=step", "step"},
		{"application/x-www-form-urlencoded", "speed=4", "4"},
		{"application/x-www-form-urlencoded", "speed=", ""},
		{"application/x-www-form-urlencoded", "", ""},
		{"application/x-www-form-urlencoded", "speed=NaN", ""},
		{"application/x-www-form-urlencoded", "speed=nanx", ""},
		{"application/x-www-form-urlencoded", "speed=Inf", ""},
		{"application/x-www-form-urlencoded", "speed=100", ""},
		{"application/json", `{"speed":2}`, ""},
		{"application/json", `{`, ""},
	} {
		s, err := readSpeedForm(httptest.NewRecorder(), postRequest(tc.ct, []byte(tc.body)))
		if tc.want == "" {
			if rlslab.ErrorCode(err) != rlslab.EINVALID {
				t.Errorf("%s %q: %v, %v; want EINVALID", tc.ct, tc.body, s, err)
			}
			continue
		}
		if err != nil || s.String() != tc.want {
			t.Errorf("%s %q: %v, %v; want %s", tc.ct, tc.body, s, err, tc.want)
		}
	}
}

// TestWSMessageCheck pins what a browser may send on a lab's websocket.
func TestWSMessageCheck(t *testing.T) {
	for msg, ok := range map[string]bool{
		`{"HEADERS":{"HX-Request":"true"}}`: true,
		`{}`:                                true,
		` {} `:                              true,
		`null`:                              false,
		`[]`:                                false,
		`"x"`:                               false,
		`{} {}`:                             false,
		`not json`:                          false,
		``:                                  false,
	} {
		if err := checkWSMessage(1, []byte(msg)); (err == nil) != ok {
			t.Errorf("text message %q: %v, want accepted %v", msg, err, ok)
		}
	}
	if checkWSMessage(2, []byte(`{}`)) == nil {
		t.Error("a binary message was accepted")
	}
}
