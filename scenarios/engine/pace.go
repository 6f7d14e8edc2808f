package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"
)

// BaseStep is how long one frame of a scenario stays on screen at speed 1×.
const BaseStep = 900 * time.Millisecond

// Speed bounds accepted by ParseSpeed.
const (
	MinSpeed = 0.25
	MaxSpeed = 4
)

// Speed is a scenario's pace: a factor between MinSpeed and MaxSpeed, full
// speed (no pauses at all), or single-step (each frame waits for Step).
type Speed struct {
	Factor float64
	Max    bool
	Single bool
}

// String returns the speed as ParseSpeed reads it.
func (s Speed) String() string {
	switch {
	case s.Max:
		return "max"
	case s.Single:
		return "step"
	default:
		return strconv.FormatFloat(s.Factor, 'f', -1, 64)
	}
}

// ParseSpeed reads "max", "step" or a factor from 0.25 to 4 (an optional
// trailing "x" is allowed). An empty string means 1.
func ParseSpeed(v string) (Speed, error) {
	switch v {
	case "":
		return Speed{Factor: 1}, nil
	case "max":
		return Speed{Max: true}, nil
	case "step":
		return Speed{Single: true}, nil
	}
	num := v
	if n := len(num); n > 0 && (num[n-1] == 'x' || num[n-1] == 'X') {
		num = num[:n-1]
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < MinSpeed || f > MaxSpeed {
		return Speed{}, fmt.Errorf("speed %q: want max, step, or a number from %v to %v", v, MinSpeed, MaxSpeed)
	}
	return Speed{Factor: f}, nil
}

// Pace holds the speed of a running scenario; it can be changed while the
// scenario runs, and in single-step mode each frame waits for Step.
type Pace struct {
	mu      sync.Mutex
	speed   Speed
	step    chan struct{}
	changed chan struct{}
	stopped chan struct{}
	once    sync.Once

	// paused counts the frames held right now in single-step mode;
	// looking counts the looks (Hold) in progress, and lookDone is closed
	// when the last one ends. A held frame does not go on while a look is
	// in progress.
	paused   int
	looking  int
	lookDone chan struct{}
	// pausing is closed and replaced whenever a frame starts being held,
	// for a Hold that comes just as the frame is shown.
	pausing chan struct{}
}

// NewPace returns a pace at the given speed.
func NewPace(s Speed) *Pace {
	return &Pace{speed: s, step: make(chan struct{}, 1), changed: make(chan struct{}), stopped: make(chan struct{}), pausing: make(chan struct{})}
}

// ErrStopped is what Wait returns once the pace is stopped: the run it
// paced is over or being cancelled, and no frame waits any more.
var ErrStopped = errors.New("run stopped")

// Stop ends pacing for good: a frame waiting now returns ErrStopped at
// once, and so does every later one. It is safe to call more than once.
func (p *Pace) Stop() { p.once.Do(func() { close(p.stopped) }) }

// Speed returns the current speed.
func (p *Pace) Speed() Speed {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.speed
}

// Set changes the speed; a frame that is waiting picks the new speed up.
func (p *Pace) Set(s Speed) {
	p.mu.Lock()
	p.speed = s
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// Step lets one frame through in single-step mode.
func (p *Pace) Step() {
	select {
	case p.step <- struct{}{}:
	default:
	}
}

// Wait holds the scenario on the current frame for as long as the pace
// says, or until ctx ends or the pace is stopped.
func (p *Pace) Wait(ctx context.Context) error {
	start := time.Now()
	for {
		p.mu.Lock()
		s, changed := p.speed, p.changed
		p.mu.Unlock()
		select {
		case <-p.stopped:
			return ErrStopped
		default:
		}
		if s.Max {
			return ctx.Err()
		}
		if s.Single {
			if done, err := p.waitStep(ctx, changed); done {
				return err
			}
			continue
		}
		left := time.Duration(float64(BaseStep)/s.Factor) - time.Since(start)
		if left <= 0 {
			return nil
		}
		t := time.NewTimer(left)
		defer t.Stop()
		timer := t.C
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.stopped:
			return ErrStopped
		case <-timer:
			return nil
		case <-p.step:
			return nil
		case <-changed:
		}
	}
}

// waitStep holds a frame in single-step mode until Step, a change of
// speed, ctx's end or Stop; done is false after a change of speed. Looks in
// progress (Hold) finish before the frame goes on.
func (p *Pace) waitStep(ctx context.Context, changed chan struct{}) (done bool, err error) {
	p.mu.Lock()
	p.paused++
	close(p.pausing)
	p.pausing = make(chan struct{})
	p.mu.Unlock()
	select {
	case <-ctx.Done():
		err, done = ctx.Err(), true
	case <-p.stopped:
		err, done = ErrStopped, true
	case <-p.step:
		done = true
	case <-changed:
	}
	p.mu.Lock()
	p.paused--
	var looks chan struct{}
	if p.looking > 0 {
		looks = p.lookDone
	}
	p.mu.Unlock()
	if looks != nil {
		<-looks
	}
	return done, err
}

// holdWait is how long Hold waits for a single-step run that has shown
// its frame to be held on it (the frame is published just before the run
// waits on it).
const holdWait = 2 * time.Second

// Hold keeps the run on the frame it is held on in single-step mode until
// release is called, so that a look at one of its connections cannot cross
// the run's own use of it. ok is false (and release nil) unless the run is
// in single-step mode and held on a frame now, or within holdWait, or ctx
// ends first.
func (p *Pace) Hold(ctx context.Context) (release func(), ok bool) {
	deadline := time.NewTimer(holdWait)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		if !p.speed.Single {
			p.mu.Unlock()
			return nil, false
		}
		select {
		case <-p.stopped:
			p.mu.Unlock()
			return nil, false
		default:
		}
		if p.paused > 0 {
			break
		}
		pausing := p.pausing
		p.mu.Unlock()
		select {
		case <-pausing:
		case <-p.stopped:
			return nil, false
		case <-ctx.Done():
			return nil, false
		case <-deadline.C:
			return nil, false
		}
	}
	defer p.mu.Unlock()
	p.looking++
	if p.looking == 1 {
		p.lookDone = make(chan struct{})
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			p.looking--
			if p.looking == 0 {
				close(p.lookDone)
			}
			p.mu.Unlock()
		})
	}, true
}
