package web

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/gorilla/websocket"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// This file holds the parsers of what a browser or an API client sends:
// the run form (JSON or urlencoded), the speed form, websocket messages and
// the query of the recent-runs and compare links.
// They are pure functions of the request, so they can be fuzzed; every
// error they return is EINVALID (400).

// runForm is the body of POST /labs/{id}/runs.
type runForm struct {
	Scenario string            `json:"scenario"`
	Variant  string            `json:"variant"`
	Speed    string            `json:"speed"`
	Params   map[string]string `json:"params"`
	// Pacing is "live" to play a run live at its pace even when it could
	// run at full speed and be shown at that pace; "" or "auto" otherwise.
	Pacing string `json:"pacing"`
}

// paramValue lets JSON params be numbers or strings.
type paramValue string

func (p *paramValue) UnmarshalJSON(b []byte) error {
	var n json.Number
	if err := json.Unmarshal(b, &n); err == nil {
		*p = paramValue(n.String())
		return nil
	}
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return rlslab.Errorf(rlslab.EINVALID, "parameter values must be numbers")
	}
	*p = paramValue(str)
	return nil
}

// readRunForm reads a run request from JSON or a form.
func readRunForm(w http.ResponseWriter, r *http.Request) (runForm, error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	var f runForm
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var raw struct {
			Scenario string                `json:"scenario"`
			Variant  string                `json:"variant"`
			Speed    string                `json:"speed"`
			Params   map[string]paramValue `json:"params"`
			Pacing   string                `json:"pacing"`
		}
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&raw); err != nil {
			return f, rlslab.Errorf(rlslab.EINVALID, "malformed JSON body: %v", err)
		}
		if dec.Decode(&struct{}{}) != io.EOF {
			return f, rlslab.Errorf(rlslab.EINVALID, "malformed JSON body: more than one value")
		}
		f = runForm{Scenario: raw.Scenario, Variant: raw.Variant, Speed: raw.Speed, Params: map[string]string{}, Pacing: raw.Pacing}
		for k, v := range raw.Params {
			f.Params[k] = string(v)
		}
		return f, nil
	}
	if err := r.ParseForm(); err != nil {
		return f, rlslab.Errorf(rlslab.EINVALID, "malformed form: %v", err)
	}
	f = runForm{Scenario: r.PostForm.Get("scenario"), Variant: r.PostForm.Get("variant"), Speed: r.PostForm.Get("speed"), Params: map[string]string{}, Pacing: r.PostForm.Get("pacing")}
	for k, vs := range r.PostForm {
		if name, ok := strings.CutPrefix(k, "param."); ok && len(vs) > 0 {
			f.Params[name] = vs[0]
		}
	}
	return f, nil
}

// livePacing reads a run's pacing: true for "live", false for "" or
// "auto"; anything else is EINVALID.
func livePacing(v string) (bool, error) {
	switch v {
	case "", "auto":
		return false, nil
	case "live":
		return true, nil
	}
	return false, rlslab.Errorf(rlslab.EINVALID, "pacing %q: want auto or live", v)
}

// parseSpeed reads a speed as engine.ParseSpeed does; its error is EINVALID.
func parseSpeed(v string) (engine.Speed, error) {
	speed, err := engine.ParseSpeed(v)
	if err != nil {
		return engine.Speed{}, rlslab.Errorf(rlslab.EINVALID, "%v", err)
	}
	return speed, nil
}

// readSpeedForm reads the body of POST /labs/{id}/speed, JSON or a form:
// a speed is required.
func readSpeedForm(w http.ResponseWriter, r *http.Request) (engine.Speed, error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	v := ""
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var body struct {
			Speed string `json:"speed"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			return engine.Speed{}, rlslab.Errorf(rlslab.EINVALID, "malformed JSON body: %v", err)
		}
		v = body.Speed
	} else {
		if err := r.ParseForm(); err != nil {
			return engine.Speed{}, rlslab.Errorf(rlslab.EINVALID, "malformed form: %v", err)
		}
		v = r.PostForm.Get("speed")
	}
	if v == "" {
		return engine.Speed{}, rlslab.Errorf(rlslab.EINVALID, "speed is required")
	}
	return parseSpeed(v)
}

// checkWSMessage accepts the only kind of message a browser may send on a
// lab's websocket: a text message holding a JSON object (htmx's websocket
// extension sends its HEADERS that way; the content is ignored).
func checkWSMessage(kind int, data []byte) error {
	var m wsMessage
	// JSON null unmarshals into a map without error, and leaves it nil.
	if kind != websocket.TextMessage || json.Unmarshal(data, &m) != nil || m == nil {
		return rlslab.Errorf(rlslab.EINVALID, "malformed message: want a JSON object")
	}
	return nil
}

// parseRunsLimit reads the limit= of a lab's recent runs: empty is def,
// otherwise a number from 1 to 20.
func parseRunsLimit(v string, def int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 20 {
		return 0, rlslab.Errorf(rlslab.EINVALID, "limit must be a number from 1 to 20")
	}
	return n, nil
}

// parseCompareVariants reads a= and b= of a compare link: two different
// variants of the scenario, whose variant names are names.
func parseCompareVariants(q url.Values, scenario string, names []string) (a, b string, err error) {
	a, b = q.Get("a"), q.Get("b")
	for _, v := range []string{a, b} {
		if !slices.Contains(names, v) {
			return "", "", rlslab.Errorf(rlslab.EINVALID, "scenario %s has no variant %q: compare two of %s", scenario, truncateText(v, 64), strings.Join(names, ", "))
		}
	}
	if a == b {
		return "", "", rlslab.Errorf(rlslab.EINVALID, "compare two different variants (a and b are both %s)", a)
	}
	return a, b, nil
}
