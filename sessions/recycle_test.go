package sessions_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// TestOneAddressCannotTakeEveryLab: a script at one address makes labs
// without a cookie (a new owner each time). It never holds more than
// LabsPerAddress of them: each one more recycles its own least recently
// active idle lab, never a lab with a run going, and a visitor from
// another address still gets a lab.
func TestOneAddressCannotTakeEveryLab(t *testing.T) {
	t.Parallel()
	const perAddr = 2
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 3, LabsPerAddress: perAddr})
	ctx := context.Background()
	var made []*sessions.Lab
	for i := range 5 {
		l, err := m.CreateFor(ctx, fmt.Sprintf("script-%d", i), "192.0.2.7")
		if err != nil {
			t.Fatalf("creation %d from one address: %v", i, err)
		}
		made = append(made, l)
		if i == 0 {
			// The first lab has a run going: it is never recycled.
			if err := l.Start(sessions.RunRequest{Scenario: "set-leak", Variant: "session-set", Speed: engine.Speed{Single: true}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := len(m.Labs()); n != perAddr {
		t.Errorf("one address holds %d labs, want %d", n, perAddr)
	}
	if _, err := m.Get(made[0].ID); err != nil {
		t.Errorf("the lab with a run going was recycled: %v", err)
	}
	for _, l := range made[1:4] {
		select {
		case <-l.Done():
		case <-time.After(30 * time.Second):
			t.Fatalf("lab %s was not recycled", l.ID)
		}
	}
	visitor, err := m.CreateFor(ctx, "visitor", "198.51.100.1")
	if err != nil {
		t.Fatalf("the next visitor got no lab: %v", err)
	}
	if visitor == nil {
		t.Fatal("no lab")
	}
	// With every lab of the address running, a new one is refused.
	if err := made[4].Start(sessions.RunRequest{Scenario: "set-leak", Variant: "session-set", Speed: engine.Speed{Single: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CreateFor(ctx, "script-x", "192.0.2.7"); rlslab.ErrorCode(err) != rlslab.ETOOMANY {
		t.Errorf("a third lab for an address whose two labs run: %v, want ETOOMANY", err)
	}
}
