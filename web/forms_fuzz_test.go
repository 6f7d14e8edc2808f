package web

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// The fuzz targets of this file cover every parser of user input on the
// run and speed endpoints and the websocket. Their seed corpora are in
// testdata/fuzz/<FuzzName>; run one with, for example,
//
//	go test ./web -run '^$' -fuzz '^FuzzReadRunForm$' -fuzztime 30s
//
// Each asserts that a parser never panics, that whatever it refuses is an
// EINVALID error (a 400, never a 500), and what it accepts is well formed.

// postRequest returns a POST with the given content type and body, as the
// server would hand it to a handler.
func postRequest(contentType string, body []byte) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/labs/0123abcd/runs", bytes.NewReader(body))
	r.Header.Del("Content-Type")
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	return r
}

// mustBeInvalid fails unless err is an EINVALID error that maps to 400.
func mustBeInvalid(t *testing.T, what string, err error) {
	t.Helper()
	if rlslab.ErrorCode(err) != rlslab.EINVALID || ErrorStatus(err) != http.StatusBadRequest {
		t.Fatalf("%s: error %v has code %q (status %d), want %q (400)", what, err, rlslab.ErrorCode(err), ErrorStatus(err), rlslab.EINVALID)
	}
	if rlslab.ErrorMessage(err) == "" || rlslab.ErrorMessage(err) == "internal error" {
		t.Fatalf("%s: error %v says nothing to the user", what, err)
	}
}

// checkSpeed fails unless s is one of the speeds ParseSpeed may accept:
// max, step, or a finite factor within bounds, and reads back the same.
func checkSpeed(t *testing.T, in string, s engine.Speed) {
	t.Helper()
	switch {
	case s.Max && s.Single:
		t.Fatalf("speed %q: both max and step", in)
	case s.Max || s.Single:
		if s.Factor != 0 {
			t.Fatalf("speed %q: max or step with factor %v", in, s.Factor)
		}
	default:
		if math.IsNaN(s.Factor) || math.IsInf(s.Factor, 0) || s.Factor < engine.MinSpeed || s.Factor > engine.MaxSpeed {
			t.Fatalf("speed %q accepted as factor %v", in, s.Factor)
		}
	}
	back, err := engine.ParseSpeed(s.String())
	if err != nil || back != s {
		t.Fatalf("speed %q reads as %+v, whose String %q reads back as %+v, %v", in, s, s.String(), back, err)
	}
}

// validateRun does what handleRun and Lab.Start do with a form before any
// database work, and returns the first error.
func validateRun(cat *engine.Catalog, f runForm) error {
	if f.Scenario == "" || f.Variant == "" {
		return rlslab.Errorf(rlslab.EINVALID, "scenario and variant are required")
	}
	if _, err := parseSpeed(f.Speed); err != nil {
		return err
	}
	if _, err := livePacing(f.Pacing); err != nil {
		return err
	}
	sc, err := cat.Lookup(f.Scenario)
	if err != nil {
		return err
	}
	if err := sc.CheckVariant(f.Variant); err != nil {
		return err
	}
	_, err = sc.ParseParams(f.Params)
	return err
}

func allValidUTF8(f runForm) bool {
	ok := utf8.ValidString(f.Scenario) && utf8.ValidString(f.Variant) && utf8.ValidString(f.Speed) && utf8.ValidString(f.Pacing)
	for k, v := range f.Params {
		ok = ok && utf8.ValidString(k) && utf8.ValidString(v)
	}
	return ok
}

func sameForm(a, b runForm) bool {
	if a.Scenario != b.Scenario || a.Variant != b.Variant || a.Speed != b.Speed || a.Pacing != b.Pacing || len(a.Params) != len(b.Params) {
		return false
	}
	for k, v := range a.Params {
		if w, ok := b.Params[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func FuzzReadRunForm(f *testing.F) {
	const js, form = "application/json", "application/x-www-form-urlencoded"
	for _, seed := range []struct{ ct, body string }{
		{js, `{"scenario":"set-leak","variant":"tx-local","speed":"2","params":{"pool":2}}`},
		{js, `{"scenario":"shared-pool","variant":"conn-per-user","params":{"users":"30"}}`},
		{js, `{"scenario":"set-leak","variant":"tx-local","speed":"NaN"}`},
		{js, `{"scenario":"set-leak","variant":"tx-local","params":{"pool":1e400}}`},
		{js, `{"scenario":"set-leak","variant":"tx-local","params":{"pool":[1]}}`},
		{js, `{"scenario":"set-leak"} {"variant":"x"}`},
		{js, `{"scenario":"set-leak","drop":"table"}`},
		{js, `null`},
		{js + "; charset=utf-8", `{"scenario":"set-leak","variant":"session-set","speed":"step"}`},
		{js, `{"scenario":"set-leak","variant":"session-set","speed":"1","pacing":"live"}`},
		{js, `{"scenario":"set-leak","variant":"session-set","pacing":"LIVE"}`},
		{form, "scenario=set-leak&variant=tx-local&speed=4&pacing=auto"},
		{form, "scenario=set-leak&variant=tx-local&speed=0.25x&param.pool=3"},
		{form, "scenario=set-leak&variant=tx-local&speed=Infx"},
		{form, "scenario=%zz"},
		{form, "param.=1&param.pool=2&param.pool=3"},
		{"", "scenario=set-leak&variant=session-set"},
		{"text/plain", "\x00\xff"},
	} {
		f.Add(seed.ct, []byte(seed.body))
	}
	cat := scenarios.DefaultCatalog()
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		r := postRequest(ct, body)
		got, err := readRunForm(httptest.NewRecorder(), r)
		if err != nil {
			mustBeInvalid(t, "readRunForm", err)
			return
		}
		if got.Params == nil {
			t.Fatal("accepted form with nil Params")
		}
		if err := validateRun(cat, got); err != nil {
			mustBeInvalid(t, "validating the run", err)
		}
		if !allValidUTF8(got) {
			return
		}
		// What was read, sent again as JSON and as a form, reads the same.
		params := map[string]string{}
		vals := url.Values{"scenario": {got.Scenario}, "variant": {got.Variant}, "speed": {got.Speed}, "pacing": {got.Pacing}}
		for k, v := range got.Params {
			params[k] = v
			vals.Set("param."+k, v)
		}
		b, _ := json.Marshal(map[string]any{"scenario": got.Scenario, "variant": got.Variant, "speed": got.Speed, "params": params, "pacing": got.Pacing})
		again, err := readRunForm(httptest.NewRecorder(), postRequest(js, b))
		if err != nil || !sameForm(got, again) {
			t.Fatalf("read %+v; as JSON %s it reads %+v, %v", got, b, again, err)
		}
		if !strings.ContainsRune(strings.Join(append([]string{got.Scenario, got.Variant, got.Speed, got.Pacing}, keys(got.Params)...), ""), 0) {
			again, err = readRunForm(httptest.NewRecorder(), postRequest(form, []byte(vals.Encode())))
			if err != nil || !sameForm(got, again) {
				t.Fatalf("read %+v; as a form %q it reads %+v, %v", got, vals.Encode(), again, err)
			}
		}
	})
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func FuzzReadSpeedForm(f *testing.F) {
	for _, seed := range []struct{ ct, body string }{
		{"application/json", `{"speed":"max"}`},
		{"application/json", `{"speed":"nan"}`},
		{"application/json", `{"speed":4}`},
		{"application/json", `{"speed":"4"}{"speed":"x"}`},
		{"application/x-www-form-urlencoded", "speed=0.5"},
		{"application/x-www-form-urlencoded", "speed=NaNx"},
		{"application/x-www-form-urlencoded", "speed=%2BInf"},
		{"application/x-www-form-urlencoded", "speed="},
		{"", "speed=step"},
	} {
		f.Add(seed.ct, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		s, err := readSpeedForm(httptest.NewRecorder(), postRequest(ct, body))
		if err != nil {
			mustBeInvalid(t, "readSpeedForm", err)
			return
		}
		checkSpeed(t, string(body), s)
	})
}

func FuzzParseSpeed(f *testing.F) {
	for _, s := range []string{"", "max", "step", "1", "0.25", "4x", "4X", "0.249", "4.0000001", "NaN", "nanx", "Inf", "-Inf", "+Infx",
		"1e0", "0x1p-2", "0x1p2x", "1_0", " 1", "1 ", "x", "xx", "MAX", "2.5e-1", "400e-2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := engine.ParseSpeed(in)
		if err != nil {
			if _, werr := parseSpeed(in); rlslab.ErrorCode(werr) != rlslab.EINVALID {
				t.Fatalf("parseSpeed(%q) = %v, not EINVALID", in, werr)
			}
			if !strings.Contains(err.Error(), strconv.Quote(in)) {
				t.Fatalf("error %q does not quote the input %q", err, in)
			}
			return
		}
		checkSpeed(t, in, s)
	})
}

func FuzzParseParams(f *testing.F) {
	f.Add(uint8(0), "pool", "2", "", "")
	f.Add(uint8(0), "pool", " 3 ", "pool", "9")
	f.Add(uint8(1), "users", "-0", "pool", "+4")
	f.Add(uint8(2), "size", "1", "", "")
	f.Add(uint8(3), "delay_ms", "99999999999999999999", "", "")
	f.Add(uint8(4), "pool", "0x10", "users", "1e3")
	f.Add(uint8(5), "", "", "pool", "٣")
	cat := scenarios.DefaultCatalog()
	all := cat.All()
	f.Fuzz(func(t *testing.T, which uint8, k1, v1, k2, v2 string) {
		sc := all[int(which)%len(all)]
		raw := map[string]string{}
		if k1 != "" || v1 != "" {
			raw[k1] = v1
		}
		if k2 != "" || v2 != "" {
			raw[k2] = v2
		}
		p, err := sc.ParseParams(raw)
		if err != nil {
			mustBeInvalid(t, "ParseParams", err)
			return
		}
		if len(p) != len(sc.Params) {
			t.Fatalf("%s: %d values for %d parameters: %v", sc.ID, len(p), len(sc.Params), p)
		}
		for _, d := range sc.Params {
			v, ok := p[d.Name]
			if !ok || v < d.Min || v > d.Max {
				t.Fatalf("%s: accepted %v from %q: %s=%d outside %d..%d", sc.ID, p, raw, d.Name, v, d.Min, d.Max)
			}
			if s, given := raw[d.Name]; given {
				if n, err := strconv.Atoi(strings.TrimSpace(s)); err != nil || n != v {
					t.Fatalf("%s: %s=%q read as %d", sc.ID, d.Name, s, v)
				}
			} else if v != d.Default {
				t.Fatalf("%s: %s not given but %d, default %d", sc.ID, d.Name, v, d.Default)
			}
		}
		for k := range raw {
			if _, ok := p[k]; !ok {
				t.Fatalf("%s: unknown parameter %q accepted", sc.ID, k)
			}
		}
	})
}

// isJSONObject reports whether data is exactly one JSON object.
func isJSONObject(data []byte) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(data, &m) == nil && m != nil
}

func FuzzWSMessage(f *testing.F) {
	for _, seed := range []string{`{"HEADERS":{"HX-Request":"true","HX-Trigger":"run"}}`, `{}`, `[]`, `null`, `"x"`, `1`, `{"a":1}{}`,
		`{"a":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, "\xff", ""} {
		f.Add(true, []byte(seed))
	}
	f.Add(false, []byte(`{}`))
	f.Fuzz(func(t *testing.T, text bool, data []byte) {
		kind := websocket.BinaryMessage
		if text {
			kind = websocket.TextMessage
		}
		err := checkWSMessage(kind, data)
		if err != nil {
			mustBeInvalid(t, "checkWSMessage", err)
		}
		if want := text && isJSONObject(data); (err == nil) != want {
			t.Fatalf("text %v, message %q: accepted %v, want %v", text, data, err == nil, want)
		}
	})
}

// FuzzParseRunsLimit checks the recent-runs limit: empty takes the default,
// a number from 1 to 20 is itself, anything else is EINVALID.
func FuzzParseRunsLimit(f *testing.F) {
	for _, s := range []string{"", "1", "5", "20", "21", "0", "-1", "+5", "05", "5.0", "1e1", " 5", "x", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		n, err := parseRunsLimit(in, 5)
		if err != nil {
			if rlslab.ErrorCode(err) != rlslab.EINVALID {
				t.Fatalf("parseRunsLimit(%q): %v, not EINVALID", in, err)
			}
			return
		}
		if n < 1 || n > 20 {
			t.Fatalf("parseRunsLimit(%q) = %d, outside 1 to 20", in, n)
		}
		if in == "" && n != 5 {
			t.Fatalf("the empty limit gave %d, not the default", n)
		}
		if in != "" && strconv.Itoa(n) != strings.TrimLeft(strings.TrimPrefix(in, "+"), "0") {
			t.Fatalf("parseRunsLimit(%q) = %d", in, n)
		}
	})
}

// FuzzParseCompareVariants checks a compare link's query: two different
// variants of the scenario, or EINVALID with the input shown only in part.
func FuzzParseCompareVariants(f *testing.F) {
	sc, err := scenarios.DefaultCatalog().Lookup("set-leak")
	if err != nil {
		f.Fatal(err)
	}
	names := sc.VariantNames()
	for _, s := range []string{"a=session-set&b=tx-local", "a=tx-local&b=tx-local", "a=session-set", "b=tx-local", "", "a=nope&b=tx-local",
		"a=session-set&b=tx-local&a=batch-local", "a=%3Cscript%3E&b=tx-local", "a=session-set&b=" + strings.Repeat("x", 300), "a=%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return // the server's own query parser refuses it first
		}
		a, b, err := parseCompareVariants(q, sc.ID, names)
		if err != nil {
			if rlslab.ErrorCode(err) != rlslab.EINVALID {
				t.Fatalf("%q: %v, not EINVALID", raw, err)
			}
			if len(rlslab.ErrorMessage(err)) > 400 {
				t.Fatalf("%q: a message of %d bytes", raw, len(rlslab.ErrorMessage(err)))
			}
			return
		}
		if a == b || !slices.Contains(names, a) || !slices.Contains(names, b) || a != q.Get("a") || b != q.Get("b") {
			t.Fatalf("%q: accepted a=%q b=%q", raw, a, b)
		}
	})
}

func FuzzReadWorkshopForm(f *testing.F) {
	const js, form = "application/json", "application/x-www-form-urlencoded"
	for _, seed := range []struct{ ct, body string }{
		{js, `{"title":"Onboarding","lessons":["set-leak","split-calls"],"expected":30}`},
		{js, `{"title":"x","lessons":[],"expected":-1}`},
		{js, `{"title":"x","expected":1e400}`},
		{js, `{"title":"x","expected":"30"}`},
		{js, `null`},
		{form, "title=Onboarding&lessons=set-leak,split-calls&expected=200"},
		{form, "title=x&expected=%20%2012%20"},
		{form, "title=x&expected=twelve"},
		{form, "title=x&expected=99999999999999999999"},
		{form, "lessons=a+b%0Ac&lessons=d"},
		{"text/plain", "\x00\xff"},
	} {
		f.Add(seed.ct, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		got, err := readWorkshopForm(httptest.NewRecorder(), postRequest(ct, body))
		if err != nil {
			mustBeInvalid(t, "readWorkshopForm", err)
			return
		}
		if !strings.HasPrefix(ct, "application/json") {
			// A form's expected size, read back from its decimal form,
			// is the same number.
			vals := url.Values{"title": {got.Title}, "expected": {strconv.Itoa(got.Expected)}}
			again, err := readWorkshopForm(httptest.NewRecorder(), postRequest(form, []byte(vals.Encode())))
			if err != nil || again.Expected != got.Expected {
				t.Fatalf("expected %d; sent again as %q it reads %d, %v", got.Expected, vals.Encode(), again.Expected, err)
			}
		}
	})
}

// FuzzReadJoinForm feeds the join endpoint's reader any body: it refuses
// with EINVALID or reads a name, a code and a retry number in 0 to 99; a
// form read back from what it read reads the same.
func FuzzReadJoinForm(f *testing.F) {
	const js, form = "application/json", "application/x-www-form-urlencoded"
	for _, seed := range []struct{ ct, body string }{
		{js, `{"name":"ann","code":"ABC123"}`},
		{js, `{"name":1}`},
		{js, `null`},
		{form, "name=ann&code=ABC123"},
		{form, "name=ann&try=3"},
		{form, "name=ann&try=-1&try=2"},
		{form, "name=%00&try=99999999999999999999"},
		{form, "name=a%ZZ"},
		{"text/plain", "\x00\xff"},
	} {
		f.Add(seed.ct, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		name, code, try, err := readJoinForm(httptest.NewRecorder(), postRequest(ct, body))
		if err != nil {
			mustBeInvalid(t, "readJoinForm", err)
			return
		}
		if try < 0 || try > 99 {
			t.Fatalf("try %d read from %q", try, body)
		}
		if strings.HasPrefix(ct, "application/json") {
			return
		}
		vals := url.Values{"name": {name}, "code": {code}}
		if try > 0 {
			vals.Set("try", strconv.Itoa(try))
		}
		n2, c2, t2, err := readJoinForm(httptest.NewRecorder(), postRequest(form, []byte(vals.Encode())))
		if err != nil || n2 != name || c2 != code || t2 != try {
			t.Fatalf("read %q %q %d; sent again as %q it reads %q %q %d, %v", name, code, try, vals.Encode(), n2, c2, t2, err)
		}
	})
}
