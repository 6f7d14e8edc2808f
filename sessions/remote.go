package sessions

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// remoteTimeout bounds asking another instance for a lab's state.
const remoteTimeout = time.Second

// RemoteLab is what another instance says of a lab it runs.
type RemoteLab struct {
	Instance          string
	Status            string
	Scenario, Variant string
	Ahead             int // runs ahead in the admission queue; -1 when not waiting
}

// Running reports whether the lab has a run going or waiting.
func (r RemoteLab) Running() bool {
	return r.Status == engine.StatusRunning || r.Status == engine.StatusQueued
}

// Remote asks the instance that runs lab id (when that is another live
// instance) for the lab's state, through its state.json; ok is false when
// no other instance runs it or it does not answer within a second.
func (m *Manager) Remote(ctx context.Context, id string) (r RemoteLab, ok bool) {
	name, addr, err := m.Locate(ctx, id)
	if err != nil || addr == "" {
		return r, false
	}
	ctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/labs/%s/state.json", addr, id), nil)
	if err != nil {
		return r, false
	}
	// Answered by that instance itself, never forwarded again.
	req.Header.Set("X-Rlslab-Forwarded", m.Name())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		m.fails.Warn("ask another instance for a lab", "instance", name, "lab", id, "err", err)
		return r, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r, false
	}
	var doc struct {
		Status, Scenario, Variant string
		Queue                     *QueueDoc
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return r, false
	}
	r = RemoteLab{Instance: name, Status: doc.Status, Scenario: doc.Scenario, Variant: doc.Variant, Ahead: -1}
	if doc.Queue != nil {
		r.Ahead = doc.Queue.Ahead
	}
	return r, true
}

// InstanceGone reports whether lab id was run by another instance that is
// no longer running (its learner gets a new lab on their next action).
func (m *Manager) InstanceGone(ctx context.Context, id string) bool {
	if m.shared == nil || len(id) != labIDLen || id[:2] == m.shared.tag {
		return false
	}
	_, addr, err := m.Locate(ctx, id)
	return err == nil && addr == ""
}
