package views

import (
	"bytes"
	"context"
	"sync"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// RowCache keeps the HTML of the finished request rows of one lab's frames.
// A finished row does not change, and a crowd's log holds hundreds of them:
// without the cache every frame rendered them all again. A hub keeps one
// per watched lab; rows that leave the log leave the cache with the next
// frame.
type RowCache struct {
	mu   sync.Mutex
	rows map[rowKey][]byte
}

// NewRowCache returns an empty cache.
func NewRowCache() *RowCache { return &RowCache{rows: map[rowKey][]byte{}} }

// rowKey is everything a finished row's HTML is made from: the row's
// fields (pointers read out) and what of the view it uses.
type rowKey struct {
	lab, appRole, tenant, seen  string
	tenantSet, seenSet, multi   bool
	frame, leak                 bool
	seq, rows, foreign          int
	pid                         uint32
	finishedAt                  int64
	pattern, pool, role, errMsg string
	sqlState, phase, why        string
}

func keyOf(v Live, r engine.RequestRow) rowKey {
	k := rowKey{lab: v.Lab, multi: len(v.Pools) > 1, frame: v.Frame, leak: r.Leak, seq: r.Seq, rows: r.Rows, foreign: r.ForeignRows,
		pid: r.PID, finishedAt: r.FinishedAt, pattern: r.Pattern, pool: r.Pool, role: r.Role, errMsg: r.Error,
		sqlState: r.SQLState, phase: r.Phase, why: r.Why}
	if tl := v.State.Timeline; tl != nil {
		k.appRole = tl.AppRole
	}
	if r.Tenant != nil {
		k.tenant, k.tenantSet = *r.Tenant, true
	}
	if r.SeenTenant != nil {
		k.seen, k.seenSet = *r.SeenTenant, true
	}
	return k
}

// render renders the rows of v's request log, each as a part, taking the
// finished ones from the cache; a nil cache renders every row.
func (c *RowCache) render(v Live, add func(id string, html []byte)) error {
	var kept map[rowKey][]byte
	if c != nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		kept = make(map[rowKey][]byte, len(c.rows))
	}
	for _, r := range v.RecentRequests() {
		finished := r.FinishedAt != 0 || r.Error != ""
		var k rowKey
		if c != nil && finished {
			k = keyOf(v, r)
			if html, ok := c.rows[k]; ok {
				kept[k] = html
				add(RowID(r), html)
				continue
			}
		}
		var buf bytes.Buffer
		if err := RequestRowView(v, r).Render(context.Background(), &buf); err != nil {
			return err
		}
		if c != nil && finished {
			kept[k] = buf.Bytes()
		}
		add(RowID(r), buf.Bytes())
	}
	if c != nil {
		c.rows = kept
	}
	return nil
}
