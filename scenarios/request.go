package scenarios

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Patterns: how a request scopes its connection (see the glossary).
const (
	PatternSessionSet = "session-set" // set_config(..., false): lasts for the Postgres session
	PatternTxLocal    = "tx-local"    // set_config(..., true) inside BEGIN ... COMMIT
	PatternBatchLocal = "batch-local" // the same, queued with the query in one pgx.Batch
	PatternForgot     = "forgot"      // no scoping at all
)

// ObserveQuery is every request's query: the invoices RLS lets it see,
// together with the backend's PID, tenant setting and role at that moment.
const ObserveQuery = `SELECT pg_backend_pid(), current_setting('app.current_tenant', true), current_user::text,
       coalesce(array_agg(tenant_id ORDER BY id), '{}') FROM invoices`

// setSessionSQL and setLocalSQL scope a connection to a tenant.
const (
	setSessionSQL = `SELECT set_config('app.current_tenant', $1, false)`
	setLocalSQL   = `SELECT set_config('app.current_tenant', $1, true)`
)

// Querier is what ObserveQuery runs on: a connection, a transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Request is one simulated application request on an instrumented pool: a
// tenant and a pattern. Each phase (acquire, scope, query, release) is its
// own frame.
type Request struct {
	Seq     int
	Tenant  Tenant
	Pattern string

	pool *Pool
	env  *Env
	conn *pgxpool.Conn
	tx   pgx.Tx
}

// NewRequest adds a request for tenant t with the given pattern to the log.
func (p *Pool) NewRequest(t Tenant, pattern string) *Request {
	tenant := t.Setting()
	r := &Request{Tenant: t, Pattern: pattern, pool: p, env: p.env}
	r.Seq = p.env.tracker.addRequest(RequestRow{Tenant: &tenant, Pattern: pattern, Pool: p.name, Phase: "waiting"})
	return r
}

// label names the request in narration.
func (r *Request) label() string {
	return fmt.Sprintf("Request #%d (%s, %s)", r.Seq, r.Tenant.Name, r.Pattern)
}

// Conn returns the acquired connection, or nil.
func (r *Request) Conn() *pgxpool.Conn { return r.conn }

// phase records the request's phase.
func (r *Request) phase(p string) {
	r.env.tracker.updateRequest(r.Seq, func(row *RequestRow) { row.Phase = p })
}

// Acquire takes a connection from the pool.
func (r *Request) Acquire(ctx context.Context) error {
	r.phase("acquiring")
	c, err := r.pool.acquire(ctx, r.Seq)
	if err != nil {
		r.Fail(err)
		return err
	}
	r.conn = c
	r.env.hold(r)
	pid := r.shownPID()
	r.env.tracker.updateRequest(r.Seq, func(row *RequestRow) { row.Phase = "acquired"; row.PID = pid })
	return r.env.Step(ctx, fmt.Sprintf("%s acquires a connection: backend %d%s.", r.label(), pid, r.heldNote()))
}

// shownPID returns the PID last read on the acquired connection.
func (r *Request) shownPID() uint32 {
	slot := r.pool.slot(r.conn.Conn())
	st := r.env.tracker.Snapshot()
	if i := findConn(&st, r.pool.name, slot); i >= 0 {
		return st.Connections[i].PID
	}
	return 0
}

// heldNote says which tenant setting the acquired connection still holds,
// as last read from it.
func (r *Request) heldNote() string {
	slot := r.pool.slot(r.conn.Conn())
	st := r.env.tracker.Snapshot()
	i := findConn(&st, r.pool.name, slot)
	if i < 0 {
		return ""
	}
	return ", which " + describeSetting(r.env.Sandbox, st.Connections[i].Tenant, "holds")
}

// describeSetting puts a tenant setting value into words.
func describeSetting(sb Sandbox, v *string, verb string) string {
	switch {
	case v == nil:
		return verb + " no tenant setting at all (NULL: never set on this backend)"
	case *v == "":
		return verb + " the tenant setting '' (empty: set once, then reset or ended with its transaction)"
	default:
		return fmt.Sprintf("%s tenant %s (app.current_tenant = '%s')", verb, sb.TenantName(*v), *v)
	}
}

// Scope scopes the connection to the request's tenant the way its pattern
// says. For tx-local it opens the transaction; for batch-local and forgot
// it sends nothing.
func (r *Request) Scope(ctx context.Context) error {
	if r.conn == nil {
		return errors.New(r.label() + ": scope without a connection")
	}
	var narration string
	switch r.Pattern {
	case PatternSessionSet:
		if _, err := r.conn.Exec(ctx, setSessionSQL, r.Tenant.Setting()); err != nil {
			r.Fail(err)
			return err
		}
		narration = fmt.Sprintf("%s runs set_config('app.current_tenant', '%s', false): a session-level SET that stays on backend %d after release.", r.label(), r.Tenant.Setting(), r.shownPID())
	case PatternTxLocal:
		tx, err := r.conn.Begin(ctx)
		if err != nil {
			r.Fail(err)
			return err
		}
		r.tx = tx
		if _, err := tx.Exec(ctx, setLocalSQL, r.Tenant.Setting()); err != nil {
			r.Fail(err)
			return err
		}
		narration = fmt.Sprintf("%s runs BEGIN; set_config('app.current_tenant', '%s', true): local to this transaction.", r.label(), r.Tenant.Setting())
	case PatternBatchLocal:
		narration = fmt.Sprintf("%s queues set_config('app.current_tenant', '%s', true) and its query in one pgx.Batch: one round trip, one implicit transaction.", r.label(), r.Tenant.Setting())
	case PatternForgot:
		narration = fmt.Sprintf("%s forgets to scope: it sets no tenant at all.", r.label())
	default:
		return fmt.Errorf("%s: pattern %q has no scope step", r.label(), r.Pattern)
	}
	r.phase("scoped")
	return r.env.Step(ctx, narration)
}

// Query runs ObserveQuery as the pattern says (in the transaction and then
// COMMIT for tx-local, as one batch for batch-local) and records what the
// database returned.
func (r *Request) Query(ctx context.Context) error {
	if r.conn == nil {
		return errors.New(r.label() + ": query without a connection")
	}
	var err error
	switch {
	case r.tx != nil:
		err = r.Observe(ctx, r.tx)
		if err == nil {
			err = r.tx.Commit(ctx)
		} else {
			// End the failed transaction so the connection can go back to
			// the pool instead of being destroyed at release.
			_ = r.tx.Rollback(context.WithoutCancel(ctx))
		}
		r.tx = nil
	case r.Pattern == PatternBatchLocal:
		b := &pgx.Batch{}
		b.Queue(setLocalSQL, r.Tenant.Setting())
		b.Queue(ObserveQuery)
		res := r.conn.SendBatch(ctx, b)
		if _, err = res.Exec(); err == nil {
			err = r.Observe(ctx, batchRow{res})
		}
		if cerr := res.Close(); err == nil {
			err = cerr
		}
	default:
		err = r.Observe(ctx, r.conn)
	}
	if err != nil {
		r.Fail(err)
		return err
	}
	r.phase("queried")
	return r.env.Step(ctx, r.verdict())
}

// batchRow makes the next result of a batch look like a Querier: the batch
// already holds ObserveQuery, so the SQL passed to QueryRow is not sent.
type batchRow struct{ res pgx.BatchResults }

// QueryRow reads the batch's next result; the SQL must be ObserveQuery.
func (b batchRow) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return b.res.QueryRow()
}

// Observe runs ObserveQuery on q and records the rows, the backend's
// identity and whether another tenant's rows came back.
func (r *Request) Observe(ctx context.Context, q Querier) error {
	var (
		pid     int32
		seen    *string
		role    string
		tenants []int32
	)
	if err := q.QueryRow(ctx, ObserveQuery).Scan(&pid, &seen, &role, &tenants); err != nil {
		return err
	}
	foreign := 0
	for _, t := range tenants {
		if int(t) != r.Tenant.ID {
			foreign++
		}
	}
	done := time.Now().UnixMilli()
	if r.conn != nil {
		r.pool.observe(r.conn.Conn(), Identity{PID: uint32(pid), Tenant: seen, Role: role}, r.Seq)
	}
	r.env.tracker.updateRequest(r.Seq, func(row *RequestRow) {
		row.PID, row.SeenTenant, row.Role = uint32(pid), seen, role
		row.Rows, row.ForeignRows, row.Leak = len(tenants), foreign, foreign > 0
		row.FinishedAt = done
		row.Why = explain(r.env.Sandbox, r.Tenant, seen, len(tenants), foreign)
	})
	return nil
}

// explain says why a request saw what it saw.
func explain(sb Sandbox, t Tenant, seen *string, rows, foreign int) string {
	switch {
	case foreign > 0 && seen != nil && *seen != t.Setting():
		return fmt.Sprintf("LEAK: the backend still %s, so RLS returned %s's rows to %s.", describeSetting(sb, seen, "held"), sb.TenantName(*seen), t.Name)
	case foreign > 0:
		return "LEAK: rows of another tenant came back."
	case rows == 0 && seen == nil:
		return "0 rows: the setting is NULL on this backend (never set); the policy matches nothing, so it fails closed."
	case rows == 0 && *seen == "":
		return "0 rows: the setting is '' on this backend, not another tenant; NULLIF turns it into NULL and the policy matches nothing, so it fails closed."
	case rows == 0:
		return fmt.Sprintf("0 rows under tenant %s.", sb.TenantName(*seen))
	default:
		return fmt.Sprintf("%d rows, all %s's own.", rows, t.Name)
	}
}

// verdict narrates the outcome of the request's query.
func (r *Request) verdict() string {
	st := r.env.tracker.Snapshot()
	for _, row := range st.Requests {
		if row.Seq == r.Seq {
			return fmt.Sprintf("%s on backend %d: %s", r.label(), row.PID, row.Why)
		}
	}
	return r.label() + " queried."
}

// Release gives the connection back to the pool; the pool reads the
// connection's identity again as it comes back.
func (r *Request) Release(ctx context.Context) error {
	if r.conn == nil {
		return nil
	}
	if r.tx != nil {
		_ = r.tx.Rollback(context.WithoutCancel(ctx))
		r.tx = nil
	}
	c := r.conn
	pid := r.shownPID()
	slot := r.pool.slot(c.Conn())
	r.conn = nil
	r.env.unhold(r)
	c.Release()
	r.pool.waitReleased(ctx, slot)
	r.phase("released")
	st := r.env.tracker.Snapshot()
	held := ""
	for _, cn := range st.Connections {
		if cn.Pool == r.pool.name && cn.PID == pid {
			held = ": it now " + describeSetting(r.env.Sandbox, cn.Tenant, "holds")
		}
	}
	return r.env.Step(ctx, fmt.Sprintf("%s releases backend %d%s.", r.label(), pid, held))
}

// abandon gives back a connection the scenario still held when its
// environment closed (a run cancelled between phases): its transaction is
// rolled back and the connection released, so closing the pool cannot hang.
func (r *Request) abandon() {
	if r.tx != nil {
		ctx, cancel := context.WithTimeout(context.Background(), identifyTimeout)
		_ = r.tx.Rollback(ctx)
		cancel()
		r.tx = nil
	}
	if r.conn != nil {
		r.env.unhold(r)
		r.conn.Release()
		r.conn = nil
	}
}

// Do runs the request's four phases one after the other.
func (r *Request) Do(ctx context.Context) error {
	for _, step := range []func(context.Context) error{r.Acquire, r.Scope, r.Query, r.Release} {
		if err := step(ctx); err != nil {
			_ = r.Release(context.WithoutCancel(ctx))
			return err
		}
	}
	return nil
}

// Fail records err (and its SQLSTATE, when the server sent one) on the
// request.
func (r *Request) Fail(err error) {
	var pe *pgconn.PgError
	code := ""
	if errors.As(err, &pe) {
		code = pe.Code
	}
	r.env.tracker.updateRequest(r.Seq, func(row *RequestRow) {
		row.Error, row.SQLState, row.Phase = err.Error(), code, "failed"
	})
}
