package web

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite the golden files of state.json in web/testdata")

// TestStateJSONFieldsArePinned pins the field names of state.json's own
// type (statejson.go): a change to them changes the public JSON, and this
// test says so. Run with -update-golden after a change that is meant.
func TestStateJSONFieldsArePinned(t *testing.T) {
	var st stateJSON
	fill(reflect.ValueOf(&st).Elem(), 0)
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	var paths []string
	walk(v, "", &paths)
	sort.Strings(paths)
	paths = slices.Compact(paths)
	got := strings.Join(paths, "\n") + "\n"
	const golden = "testdata/state-json-fields.golden"
	if *updateGolden {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("state.json's fields changed; if that is meant, run go test ./web -run StateJSON -args -update-golden\n got:\n%s\nwant:\n%s", got, want)
	}
}

// fill gives every field a non-zero value (one element in each slice and
// map), so that omitempty hides nothing.
func fill(v reflect.Value, depth int) {
	if depth > 8 {
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), depth+1)
			}
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), depth+1)
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes([]byte(`1`))
			return
		}
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0), depth+1)
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, depth+1)
		fill(e, depth+1)
		v.SetMapIndex(k, e)
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1)
	}
}

// walk lists the key paths of a decoded JSON value (maps keyed by data,
// such as timings, show as "*").
func walk(v any, prefix string, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if k == "x" {
				k = "*"
			}
			p := prefix + "." + k
			*out = append(*out, p)
			walk(e, p, out)
		}
	case []any:
		for _, e := range v {
			walk(e, prefix+"[]", out)
		}
	}
}

// TestStateJSONCarriesEveryField fills every field of an engine.State with
// a value of its own and checks that state.json's type holds each of them
// under the same field name: a field the conversion forgets, or swaps with
// another, fails here. It compares Go field names, not tags, so it holds
// whatever the engine's tags say.
func TestStateJSONCarriesEveryField(t *testing.T) {
	var st engine.State
	n := 0
	fillDistinct(reflect.ValueOf(&st).Elem(), &n, 0)
	want, got := map[string]string{}, map[string]string{}
	leaves(reflect.ValueOf(st), "", want)
	leaves(reflect.ValueOf(stateJSONOf(st)), "", got)
	if len(want) < 100 {
		t.Fatalf("only %d leaves in a filled state: fillDistinct misses fields", len(want))
	}
	for path, v := range want {
		if g, ok := got[path]; !ok {
			t.Errorf("state.json has no %s (engine.State has %s)", path, v)
		} else if g != v {
			t.Errorf("state.json %s = %s, engine.State has %s", path, g, v)
		}
	}
	for path := range got {
		if strings.HasPrefix(path, ".Outcome") {
			continue // derived from the rest (engine.State.Outcome)
		}
		if _, ok := want[path]; !ok {
			t.Errorf("state.json has %s, which engine.State has not", path)
		}
	}
}

// TestStateJSONOfRichState pins the bytes of state.json for a state with
// something in every part (testdata/state-rich.json was written from the
// engine's own JSON when state.json got its own type). A change that is
// meant: -update-golden.
func TestStateJSONOfRichState(t *testing.T) {
	rec := httptest.NewRecorder()
	writeJSON(rec, 200, stateJSONOf(richState()))
	got := rec.Body
	const golden = "testdata/state-rich.json"
	if *updateGolden {
		if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != string(want) {
		t.Errorf("state.json changed; if that is meant, run go test ./web -run StateJSON -args -update-golden\n got:\n%s\nwant:\n%s", got.String(), want)
	}
}

// TestFormatOneFramesReadAsStateDocs: recordings of format 1 kept each
// frame as the engine's own JSON of a state. Such a frame reads as a
// sessions.StateDoc (sessions.DecodeFrame) and converts back to the very
// state it was made from; its bytes are the document's. If this fails
// after a change to the engine's types or tags, format 1 recordings need a
// reader of their own in sessions.
func TestFormatOneFramesReadAsStateDocs(t *testing.T) {
	st := richState()
	old, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := sessions.DecodeFrame(1, old)
	if err != nil {
		t.Fatal(err)
	}
	now, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(old, now) {
		t.Errorf("a format 1 frame and its document differ:\nengine:   %s\ndocument: %s", old, now)
	}
	if back := doc.Engine(); !reflect.DeepEqual(back, st) {
		t.Errorf("the document converts back to another state:\n got %+v\nwant %+v", back, st)
	}
}

// richState is a lab's state with every part filled, null tenants beside
// set ones, an empty list ([]) beside nil ones (null), and a PgBouncer
// pairing.
func richState() engine.State {
	a, b := "acme", "globex"
	return engine.State{
		Lab: "lab1", Scenario: "shared-pool", Variant: "fresh", Status: engine.StatusRunning, Speed: "2x",
		Narration: "Request 3 takes connection 1.", Error: "boom", Outage: "the database does not answer",
		Pool:   engine.PoolCounts{Name: "app", Max: 4, Total: 3, Idle: 1, Acquired: 2, Waiting: 1},
		Pools:  []engine.PoolCounts{{Name: "app", Max: 4, Total: 3, Idle: 1, Acquired: 2}, {Name: "admin", Max: 1}},
		Server: engine.ServerCounts{Backends: 7, RoleConnectionLimit: 10, MaxConnections: 100},
		Connections: []engine.Connection{
			{Pool: "app", Slot: 1, PID: 4242, State: engine.ConnAcquired, Tenant: &a, Role: "app_user", Request: 3},
			{Slot: 2, PID: 4243, State: engine.ConnIdle, Role: "app_user"},
		},
		Requests: []engine.RequestRow{
			{Seq: 3, Tenant: &b, Pattern: "fresh", Pool: "app", PID: 4242, SeenTenant: &a, Role: "app_user", Rows: 5, ForeignRows: 2,
				Leak: true, Phase: "done", Why: "the setting was left by request 2", FinishedAt: 1767261600123},
			{Seq: 4, Pattern: "fresh", Error: "permission denied", SQLState: "42501", Phase: "failed"},
		},
		DroppedRequests: 2,
		Series:          []engine.Sample{{Millis: 0, Total: 1, Idle: 1}, {Millis: 40, Total: 3, Idle: 1, Acquired: 2}},
		Notes:           []string{"Request 3 saw acme's rows."},
		Metrics:         []engine.Metric{{Name: "req/s", Value: "1.2k", Number: 1234.5}},
		Charts: []engine.Chart{{Title: "latency", XUnit: "s", YUnit: "ms", Lines: []engine.Line{
			{Name: "p50", Points: []engine.Point{{X: 0, Y: 1.25}, {X: 1, Y: 0.000125}}}, {Name: "p99", Points: []engine.Point{}}}}},
		Timings: map[string]engine.Timing{"bare": {MedianUS: 81.5, P99US: 300, N: 1000}, "scoped": {MedianUS: 95, P99US: 1e7, N: 1000}},
		Ratios:  map[string]float64{"scoped": 1.1656441717791412, "bare": 1},
		Pairing: &engine.Pairing{Version: "1.23.1", Mode: "transaction",
			Clients: []engine.PeerConn{{Ptr: "0x1", Link: "0x9", Label: "app 1", State: "active"}},
			Servers: []engine.PeerConn{{Ptr: "0x9", Link: "0x1", Label: "backend 4242", State: "active", PID: 4242, Tenant: &a}}},
		Queue:    &engine.Queue{Need: 4, Ahead: 1},
		QueuedMS: 1500,
		Timeline: &engine.Timeline{AppRole: "app_user", Dropped: 3, Events: []engine.TimelineEvent{
			{At: 1767261600000001, Kind: engine.TimelineConnect, Pool: "app", Slot: 1, PID: 4242, Read: true, Role: "app_user"},
			{At: 1767261600000002, Kind: engine.TimelineAcquire, Pool: "app", Slot: 1, PID: 4242, Tenant: &a, Seq: 3}}},
		Policy:      &engine.Policy{Table: "invoices", Name: "tenant_isolation", Using: "(tenant_id = current_setting('app.current_tenant'))", Enabled: true},
		SharedField: []engine.FieldReading{{At: 1767261600000003, Value: "acme", Seq: 3, Wrote: true}, {At: 1767261600000004, Value: "globex"}},
		Findings:    []engine.Finding{{Kind: engine.KindBreach, Text: "Acme's request deleted 4 of the other tenants' 4 contacts: breach."}},
		Version:     42,
	}
}

// fillDistinct gives every field a value no other field has (one element
// in each slice and map), counting with n.
func fillDistinct(v reflect.Value, n *int, depth int) {
	if depth > 8 {
		return
	}
	*n++
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fillDistinct(v.Field(i), n, depth+1)
			}
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fillDistinct(v.Elem(), n, depth+1)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fillDistinct(v.Index(0), n, depth+1)
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fillDistinct(k, n, depth+1)
		fillDistinct(e, n, depth+1)
		v.SetMapIndex(k, e)
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d", *n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*n))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(*n) + 0.5)
	}
}

// leaves records the value of every leaf of v under its path of Go field
// names, slice indexes and map keys.
func leaves(v reflect.Value, path string, out map[string]string) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				leaves(v.Field(i), path+"."+v.Type().Field(i).Name, out)
			}
		}
	case reflect.Pointer:
		if v.IsNil() {
			out[path] = "nil"
			return
		}
		leaves(v.Elem(), path, out)
	case reflect.Slice:
		if v.IsNil() {
			out[path] = "nil"
		}
		for i := range v.Len() {
			leaves(v.Index(i), fmt.Sprintf("%s[%d]", path, i), out)
		}
	case reflect.Map:
		if v.IsNil() {
			out[path] = "nil"
		}
		for _, k := range v.MapKeys() {
			leaves(v.MapIndex(k), fmt.Sprintf("%s[%v]", path, k), out)
		}
	default:
		out[path] = fmt.Sprintf("%v", v.Interface())
	}
}
