package measure

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func ms(ns ...int) []time.Duration {
	out := make([]time.Duration, len(ns))
	for i, n := range ns {
		out[i] = time.Duration(n) * time.Millisecond
	}
	return out
}

func TestPercentileIsNearestRank(t *testing.T) {
	oneTo := func(n int) []time.Duration {
		var s []int
		for i := n; i >= 1; i-- { // reversed: Percentile must sort
			s = append(s, i)
		}
		return ms(s...)
	}
	cases := []struct {
		name string
		ds   []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample is every percentile", ms(7), 99, 7 * time.Millisecond},
		{"one sample, p0", ms(7), 0, 7 * time.Millisecond},
		{"median of 1..10 is the 5th, not 5.5", oneTo(10), 50, 5 * time.Millisecond},
		{"median of 1..9 is the 5th", oneTo(9), 50, 5 * time.Millisecond},
		{"median of two is the lower", ms(10, 20), 50, 10 * time.Millisecond},
		{"p99 of 1..10 is the max", oneTo(10), 99, 10 * time.Millisecond},
		{"p99 of 1..100 is the 99th", oneTo(100), 99, 99 * time.Millisecond},
		{"p99 of 1..200 is the 198th", oneTo(200), 99, 198 * time.Millisecond},
		{"p95 of 1..20 is the 19th", oneTo(20), 95, 19 * time.Millisecond},
		{"p100 is the max", oneTo(10), 100, 10 * time.Millisecond},
		{"p0 is the min", oneTo(10), 0, 1 * time.Millisecond},
	}
	for _, c := range cases {
		if got := Percentile(c.ds, c.p); got != c.want {
			t.Errorf("%s: Percentile(p%v) = %v, want %v", c.name, c.p, got, c.want)
		}
	}
}

func TestPercentileLeavesItsInputAlone(t *testing.T) {
	ds := ms(3, 1, 2)
	Percentile(ds, 50)
	Summarize(ds)
	if !slices.Equal(ds, ms(3, 1, 2)) {
		t.Errorf("input reordered: %v", ds)
	}
}

func TestSummarize(t *testing.T) {
	s := Summarize(ms(5, 1, 4, 2, 3, 100))
	if s.N != 6 || s.Median != 3*time.Millisecond || s.P99 != 100*time.Millisecond {
		t.Errorf("summary %+v", s)
	}
	tm := Summarize([]time.Duration{1234567 * time.Nanosecond, 1234567 * time.Nanosecond}).Timing()
	if tm.MedianUS != 1234.6 || tm.P99US != 1234.6 || tm.N != 2 {
		t.Errorf("timing %+v, want 1234.6 µs to a tenth", tm)
	}
	if (Summarize(nil) != Summary{}) {
		t.Errorf("empty summary %+v", Summarize(nil))
	}
}

func TestInterleaveRotatesTurnsAndWarmsUp(t *testing.T) {
	var order []string
	target := func(name string) Target {
		return Target{Name: name, Run: func(ctx context.Context, i int) error {
			order = append(order, name+string(rune('0'+i)))
			return nil
		}}
	}
	var progress []int
	s, err := Interleave(context.Background(), []Target{target("a"), target("b")}, Plan{
		Iterations: 4, Warmup: 1, Turn: 2, Every: 2,
		Progress: func(done int, s Samples) error {
			progress = append(progress, done)
			if len(s["a"]) != done || len(s["b"]) != done {
				t.Errorf("progress %d: %d and %d samples", done, len(s["a"]), len(s["b"]))
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Warm-up round 0 (a, b), then timed rounds 1 (b first) and 2 (a first),
	// two iterations a turn.
	want := "a0 b0 b1 b2 a1 a2 a3 a4 b3 b4"
	if got := strings.Join(order, " "); got != want {
		t.Errorf("order %q, want %q", got, want)
	}
	if len(s["a"]) != 4 || len(s["b"]) != 4 {
		t.Errorf("samples %v", s)
	}
	if !slices.Equal(progress, []int{2, 4}) {
		t.Errorf("progress at %v, want [2 4]", progress)
	}
}

func TestInterleaveStopsAtTheFirstError(t *testing.T) {
	boom := errors.New("boom")
	calls := 0
	_, err := Interleave(context.Background(), []Target{{Name: "x", Run: func(ctx context.Context, i int) error {
		calls++
		if i == 2 {
			return boom
		}
		return nil
	}}}, Plan{Iterations: 10})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "x, iteration 3") || calls != 3 {
		t.Errorf("err %v after %d calls", err, calls)
	}
}
