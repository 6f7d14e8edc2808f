package sessions

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
// spares; n ≤ 0 drops the reservation. Reservations together never go
// beyond the labs that may still open, nor MaxSpares; the result is in
// Readiness.
func (m *Manager) Prepare(key string, n int) {
	m.mu.Lock()
	room := m.cfg.MaxLabs - len(m.labs) - len(m.creating)
	m.mu.Unlock()
	m.spare.reserve(key, min(n, max(room, 0)))
}

// Arrived lowers key's reservation by one: one of those it was made for
// has come (a participant joined), and takes a lab of their own.
func (m *Manager) Arrived(key string) { m.spare.shrink(key) }

// Readiness returns how many sandboxes are ready and wanted.
func (m *Manager) Readiness() Readiness {
	ready, target, waiting := m.spare.status()
	return Readiness{Ready: ready, Target: target, Waiting: waiting, DiskMB: target * sandboxMB}
}
