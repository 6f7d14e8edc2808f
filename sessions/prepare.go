package sessions

import (
	"context"
	"time"
)

// sandboxMB is about what one lab's database takes on disk (a copy of
// template0 plus the seed: 7.5 MB on PostgreSQL 15).
const sandboxMB = 8

// Readiness says how far the spare sandboxes are from what is wanted.
type Readiness struct {
	Ready   int `json:"ready"`   // sandboxes built and waiting for a lab
	Target  int `json:"target"`  // how many are wanted ready
	Waiting int `json:"waiting"` // labs waiting in line for a sandbox
	// DiskMB is about what the target costs on disk.
	DiskMB int `json:"disk_mb"`
}

// Prepare keeps sandboxes ready for n more labs on behalf of key (a
// workshop: the participants it still expects), on top of the configured
// spares; n ≤ 0 drops the reservation. With instances sharing rlslab's
// tables, each keeps its share ready (n divided by the live instances,
// rounded up), since a balancer spreads the participants over them; the
// lab servers share this instance's part evenly. Reservations together
// never go beyond the labs that may still open, nor MaxSpares; the result
// is in Readiness.
func (m *Manager) Prepare(key string, n int) {
	if live := m.liveInstances(); live > 1 && n > 0 {
		n = (n + live - 1) / live
	}
	m.mu.Lock()
	room := m.cfg.MaxLabs - len(m.labs) - len(m.creating)
	m.mu.Unlock()
	n = min(n, max(room, 0))
	k := len(m.servers)
	for i, s := range m.servers {
		part := n / k
		if i < n%k {
			part++
		}
		s.spare.reserve(key, part)
	}
}

// PrepareOnly makes the reservations those of want (Prepare for each key),
// and drops every other.
func (m *Manager) PrepareOnly(want map[string]int) {
	for _, s := range m.servers {
		for _, key := range s.spare.keys() {
			if _, ok := want[key]; !ok {
				s.spare.reserve(key, 0)
			}
		}
	}
	for key, n := range want {
		m.Prepare(key, n)
	}
}

// Arrived lowers key's reservation by one: one of those it was made for
// has come (a participant joined), and takes a lab of their own. The
// server that has the most reserved for key gives it up.
func (m *Manager) Arrived(key string) {
	var most *labServer
	n := 0
	for _, s := range m.servers {
		if r := s.spare.reservedFor(key); r > n {
			most, n = s, r
		}
	}
	if most != nil {
		most.spare.shrink(key)
	}
}

// Readiness returns how many sandboxes are ready and wanted on this
// instance's lab servers.
func (m *Manager) Readiness() Readiness {
	var r Readiness
	for _, s := range m.servers {
		ready, target, waiting := s.spare.status()
		r.Ready += ready
		r.Target += target
		r.Waiting += waiting
	}
	r.DiskMB = r.Target * sandboxMB
	return r
}

// ReadyElsewhere returns how many spare sandboxes the other live instances
// keep ready, as they last wrote with their leases (a few seconds old at
// most); 0 when the budget is not shared or rlslab's tables do not answer.
func (m *Manager) ReadyElsewhere(ctx context.Context) int {
	if m.shared == nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var n int
	err := m.cfg.Shared.QueryRow(ctx, `SELECT coalesce(sum(l.ready), 0)::int FROM rlslab.leases l JOIN rlslab.instances i ON i.name = l.instance
		WHERE l.instance <> $1 AND i.expires_at > now()`, m.shared.name).Scan(&n)
	if err != nil {
		m.fails.Warn("read other instances' spares", "err", err)
		return 0
	}
	return n
}

// liveInstances returns how many instances share rlslab's tables, as last
// counted (every sweepEvery); 1 when the budget is not shared.
func (m *Manager) liveInstances() int {
	if m.shared == nil {
		return 1
	}
	return max(1, int(m.shared.live.Load()))
}

// countLive counts the live instances sharing rlslab's tables.
func (m *Manager) countLive(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var n int32
	if err := m.cfg.Shared.QueryRow(ctx, `SELECT count(*)::int FROM rlslab.instances WHERE expires_at > now()`).Scan(&n); err == nil {
		m.shared.live.Store(n)
	}
}
