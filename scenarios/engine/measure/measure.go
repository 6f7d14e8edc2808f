// Package measure times several named targets interleaved, so that a
// change of the machine's speed weighs on all of them alike, and
// summarizes the samples with one percentile definition (nearest rank), so
// that the numbers the lessons compare are comparable.
package measure

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// Target is one named thing to time. Run does one iteration of it; i counts
// the target's iterations from 0, warm-up ones included.
type Target struct {
	Name string
	Run  func(ctx context.Context, i int) error
}

// Plan says how to interleave the targets.
type Plan struct {
	// Iterations is how many timed iterations each target gets.
	Iterations int
	// Warmup is how many untimed iterations each target gets first,
	// interleaved the same way (statement caches, first plans).
	Warmup int
	// Turn is how many iterations one target runs in a row before the
	// next target's turn (at least 1). The order of the targets rotates
	// with every round of turns.
	Turn int
	// Every and Progress: after every Every timed iterations of each target
	// (and after the last), Progress is called with the count done so far
	// and the samples; an error it returns ends the timing.
	Every    int
	Progress func(done int, s Samples) error
}

// Samples are the timed durations of each target, by name, in order.
type Samples map[string][]time.Duration

// Interleave times the targets as the plan says and returns their samples.
// An error of a target's Run ends the timing with that error, naming the
// target.
func Interleave(ctx context.Context, targets []Target, p Plan) (Samples, error) {
	turn := max(p.Turn, 1)
	samples := Samples{}
	runs := make([]int, len(targets))
	for _, t := range targets {
		samples[t.Name] = make([]time.Duration, 0, p.Iterations)
	}
	// round runs n iterations of every target, turn by turn, rotating the
	// order each round; timed ones are recorded.
	round := func(r, n int, timed bool) error {
		for k := range targets {
			j := (r + k) % len(targets)
			t := targets[j]
			for range n {
				if err := ctx.Err(); err != nil {
					return err
				}
				start := time.Now()
				err := t.Run(ctx, runs[j])
				d := time.Since(start)
				runs[j]++
				if err != nil {
					return fmt.Errorf("%s, iteration %d: %w", t.Name, runs[j], err)
				}
				if timed {
					samples[t.Name] = append(samples[t.Name], d)
				}
			}
		}
		return nil
	}
	r := 0
	for done := 0; done < p.Warmup; r++ {
		n := min(turn, p.Warmup-done)
		if err := round(r, n, false); err != nil {
			return samples, err
		}
		done += n
	}
	for done := 0; done < p.Iterations; r++ {
		n := min(turn, p.Iterations-done)
		before := done
		if err := round(r, n, true); err != nil {
			return samples, err
		}
		done += n
		if p.Progress != nil && p.Every > 0 && (done/p.Every > before/p.Every || done == p.Iterations) {
			if err := p.Progress(done, samples); err != nil {
				return samples, err
			}
		}
	}
	return samples, nil
}

// Percentile returns the p-th percentile of ds by nearest rank: the
// smallest sample that at least p percent of the samples are less than or
// equal to (the sample of rank ⌈p/100 · n⌉, counting from 1). ds is not
// changed; an empty ds gives 0.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return rank(s, p)
}

// rank returns the nearest-rank p-th percentile of the sorted s.
func rank(s []time.Duration, p float64) time.Duration {
	k := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(k, 1), len(s))-1]
}

// Summary is the median and 99th percentile (nearest rank) of n samples.
type Summary struct {
	N      int
	Median time.Duration
	P99    time.Duration
}

// Summarize returns the summary of ds.
func Summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return Summary{N: len(s), Median: rank(s, 50), P99: rank(s, 99)}
}

// Timing returns the summary in the state's units: microseconds, to a
// tenth.
func (s Summary) Timing() engine.Timing {
	return engine.Timing{MedianUS: US(s.Median), P99US: US(s.P99), N: s.N}
}

// US returns d in microseconds, rounded to a tenth.
func US(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Microsecond)*10) / 10 }

// MS returns d in milliseconds.
func MS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
