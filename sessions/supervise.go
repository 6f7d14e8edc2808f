package sessions

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
)

// Free-play limits: rlslab enforces them on every statement, whatever the
// session's own settings say.
const (
	// DefaultSQLTimeout is how long one free-play call may run before
	// rlslab cancels it.
	DefaultSQLTimeout = 5 * time.Second
	// MaxResultRows is the most rows a free-play result returns.
	MaxResultRows = 100
	// maxReadRows and maxReadBytes bound what rlslab reads of one call's
	// results: past them it stops reading and cancels the statement.
	maxReadRows  = 10_000
	maxReadBytes = 1 << 20
	// maxMessage bounds one protocol message (one row): a bigger one ends
	// the connection rather than rlslab's memory.
	maxMessage = 8 << 20
	// maxValue bounds each value shown in a result.
	maxValue = 500
	// backstop is how long after its time limit a call may still take
	// (the cancel request not answered) before the driver gives up on the
	// connection.
	backstop = 5 * time.Second
	// cancelTimeout bounds sending one cancel request.
	cancelTimeout = 2 * time.Second
)

// SQLResult is what one free-play call did, as the database said.
type SQLResult struct {
	Connection   int         `json:"connection,omitempty"` // the free-play pool's slot (0 for a look)
	Request      int         `json:"request,omitempty"`    // the request's number in the lab's request log
	PID          uint32      `json:"pid"`
	TenantBefore *string     `json:"tenant_before"`
	TenantAfter  *string     `json:"tenant_after"`
	Role         string      `json:"role"`
	Columns      []string    `json:"columns"`
	Rows         [][]*string `json:"rows"`
	RowCount     int         `json:"row_count"`
	Truncated    bool        `json:"truncated"`
	Tag          string      `json:"tag,omitempty"` // the last command tag
	ForeignRows  int         `json:"foreign_rows,omitempty"`
	Leak         bool        `json:"leak,omitempty"`
	Refused      bool        `json:"refused,omitempty"`
	Error        string      `json:"error"`
	SQLState     string      `json:"sqlstate"`
	Notice       string      `json:"notice,omitempty"` // what rlslab did around the statement
	MS           float64     `json:"ms"`
}

// limits are the limits of one supervised call.
type limits struct {
	timeout time.Duration
	// owner is the tenant setting the rows are checked against ("" for
	// none): a row whose tenant_id column differs is another tenant's.
	owner string
}

// execResult is what a supervised call read.
type execResult struct {
	columns  []string
	rows     [][]*string
	count    int
	foreign  int
	tag      string
	stopped  bool // the row or size limit stopped reading
	timedOut bool // the time limit cancelled the call
	err      error
	took     time.Duration
}

// superviseExec runs sql on conn under lim: with the simple protocol
// (several statements allowed) or, single, with the extended protocol (the
// server then refuses more than one statement). The time limit is a timer
// that sends a cancel request, never a context cancellation (which would
// close the connection and lose its session state); the row and size
// limits stop reading and cancel too. The call's context only backs the
// limit up: if the server does not answer the cancel within backstop, the
// driver gives up on the connection.
func superviseExec(conn *pgconn.PgConn, sql string, lim limits, single bool) execResult {
	ctx, cancel := context.WithTimeout(context.Background(), lim.timeout+backstop)
	defer cancel()
	var (
		mu       sync.Mutex // one cancel request at a time
		sent     bool
		timedOut atomic.Bool
	)
	sendCancel := func() {
		mu.Lock()
		defer mu.Unlock()
		if sent {
			return
		}
		sent = true
		cctx, ccancel := context.WithTimeout(context.Background(), cancelTimeout)
		defer ccancel()
		_ = conn.CancelRequest(cctx)
	}
	fired := make(chan struct{})
	timer := time.AfterFunc(lim.timeout, func() {
		defer close(fired)
		timedOut.Store(true)
		sendCancel()
	})
	var out execResult
	start := time.Now()
	readBytes := 0
	consume := func(rr *pgconn.ResultReader) {
		fields := rr.FieldDescriptions()
		if len(fields) > 0 {
			// The last result with columns is the one shown.
			out.columns = make([]string, len(fields))
			tenantCol := -1
			for i, f := range fields {
				out.columns[i] = f.Name
				if f.Name == "tenant_id" {
					tenantCol = i
				}
			}
			out.rows, out.count, out.foreign = [][]*string{}, 0, 0
			for rr.NextRow() {
				if out.stopped {
					continue // draining what was in flight before the cancel
				}
				vals := rr.Values()
				out.count++
				for _, v := range vals {
					readBytes += len(v)
				}
				if tenantCol >= 0 && lim.owner != "" {
					if v := vals[tenantCol]; v == nil || string(v) != lim.owner {
						out.foreign++
					}
				}
				if len(out.rows) < MaxResultRows {
					out.rows = append(out.rows, copyRow(vals))
				}
				if out.count >= maxReadRows || readBytes >= maxReadBytes {
					out.stopped = true
					sendCancel()
				}
			}
		}
		tag, err := rr.Close()
		if err == nil {
			out.tag = tag.String()
		}
	}
	if single {
		rr := conn.ExecParams(ctx, sql, nil, nil, nil, nil)
		consume(rr)
		_, out.err = rr.Close()
	} else {
		mrr := conn.Exec(ctx, sql)
		for mrr.NextResult() {
			consume(mrr.ResultReader())
		}
		out.err = mrr.Close()
	}
	out.took = time.Since(start)
	if !timer.Stop() {
		// The cancel went out: wait until the server has it, so that it
		// cannot hit the next statement.
		<-fired
	}
	out.timedOut = timedOut.Load()
	return out
}

// copyRow copies a row's text values, each cut to maxValue bytes.
func copyRow(vals [][]byte) []*string {
	row := make([]*string, len(vals))
	for i, v := range vals {
		if v == nil {
			continue
		}
		s := string(v)
		if len(s) > maxValue {
			cut := maxValue
			for cut > 0 && !utf8.RuneStart(s[cut]) {
				cut--
			}
			s = s[:cut] + "…"
		}
		row[i] = &s
	}
	return row
}

// describe fills the error fields of res from a supervised call.
func (out execResult) describe(res *SQLResult, timeout time.Duration) {
	res.Columns, res.Rows, res.RowCount, res.Tag = out.columns, out.rows, out.count, out.tag
	if res.Rows == nil {
		res.Rows = [][]*string{}
	}
	if res.Columns == nil {
		res.Columns = []string{}
	}
	res.Truncated = out.count > len(out.rows) || out.stopped
	res.MS = float64(out.took.Microseconds()) / 1000
	if out.err == nil {
		return
	}
	var pe *pgconn.PgError
	if errors.As(out.err, &pe) {
		res.SQLState = pe.Code
	}
	switch {
	case out.stopped && res.SQLState == "57014":
		res.Error = fmt.Sprintf("rlslab stopped reading after %d rows and cancelled the statement: free play reads at most %d rows or %d KB of one call", out.count, maxReadRows, maxReadBytes>>10)
	case out.timedOut && res.SQLState == "57014":
		res.Error = fmt.Sprintf("rlslab cancelled the statement after %s, free play's time limit (statement_timeout does not change it); the connection and its settings stay", timeout)
	case pe != nil:
		res.Error = pe.Message
		if pe.Detail != "" {
			res.Error += " (" + pe.Detail + ")"
		}
	default:
		res.Error = out.err.Error()
	}
}
