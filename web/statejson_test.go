package web_test

import (
	"encoding/json"
	"flag"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite web/testdata/state-json-fields.golden")

// TestStateJSONFieldsArePinned pins the field names of state.json (and of
// every frame a recording keeps): an engine refactor that renames, drops or
// adds a field changes the public JSON, and this test says so. Run with
// -update-golden after a change that is meant.
func TestStateJSONFieldsArePinned(t *testing.T) {
	var st engine.State
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
