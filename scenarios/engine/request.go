package engine

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

// SetSessionSQL and SetLocalSQL scope a connection to a tenant.
const (
	SetSessionSQL = `SELECT set_config('app.current_tenant', $1, false)`
	SetLocalSQL   = `SELECT set_config('app.current_tenant', $1, true)`
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

// Label names the request in narration.
func (r *Request) Label() string {
	return fmt.Sprintf("Request #%d (%s, %s)", r.Seq, r.Tenant.Name, r.Pattern)
}

// Conn returns the acquired connection, or nil.
func (r *Request) Conn() *pgxpool.Conn { return r.conn }

// SetPhase records the request's phase.
func (r *Request) SetPhase(p string) {
	r.env.tracker.updateRequest(r.Seq, func(row *RequestRow) { row.Phase = p })
}

// Acquire takes a connection from the pool, in a frame of its own.
func (r *Request) Acquire(ctx context.Context) error {
	if err := r.AcquireQuiet(ctx); err != nil {
		return err
	}
	return r.env.Step(ctx, fmt.Sprintf("%s acquires a connection: backend %d%s.", r.Label(), r.PID(), r.heldNote()))
}

// PID returns the backend PID last read on the acquired connection (0
// without one).
func (r *Request) PID() uint32 {
	pid, _ := r.Held()
	return pid
}

// heldNote says which tenant setting the backend of the acquired
// connection holds, as last read from that backend.
func (r *Request) heldNote() string {
	pid, tenant := r.Held()
	if pid == 0 {
		return ""
	}
	return ", which " + DescribeSetting(r.env.Sandbox, tenant, "holds")
}

// DescribeSetting puts a tenant setting value into words.
func DescribeSetting(sb Sandbox, v *string, verb string) string {
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
		return errors.New(r.Label() + ": scope without a connection")
	}
	var narration string
	switch r.Pattern {
	case PatternSessionSet:
		if _, err := r.conn.Exec(ctx, SetSessionSQL, r.Tenant.Setting()); err != nil {
			r.Fail(err)
			return err
		}
		narration = fmt.Sprintf("%s runs set_config('app.current_tenant', '%s', false): a session-level SET that stays on backend %d after release.", r.Label(), r.Tenant.Setting(), r.PID())
	case PatternTxLocal:
		tx, err := r.conn.Begin(ctx)
		if err != nil {
			r.Fail(err)
			return err
		}
		r.tx = tx
		if _, err := tx.Exec(ctx, SetLocalSQL, r.Tenant.Setting()); err != nil {
			r.Fail(err)
			return err
		}
		narration = fmt.Sprintf("%s runs BEGIN; set_config('app.current_tenant', '%s', true): local to this transaction.", r.Label(), r.Tenant.Setting())
	case PatternBatchLocal:
		narration = fmt.Sprintf("%s queues set_config('app.current_tenant', '%s', true) and its query in one pgx.Batch: one round trip, one implicit transaction.", r.Label(), r.Tenant.Setting())
	case PatternForgot:
		narration = fmt.Sprintf("%s forgets to scope: it sets no tenant at all.", r.Label())
	default:
		return fmt.Errorf("%s: pattern %q has no scope step", r.Label(), r.Pattern)
	}
	r.SetPhase("scoped")
	return r.env.Step(ctx, narration)
}

// Query runs ObserveQuery as the pattern says (in the transaction and then
// COMMIT for tx-local, as one batch for batch-local) and records what the
// database returned.
func (r *Request) Query(ctx context.Context) error {
	if r.conn == nil {
		return errors.New(r.Label() + ": query without a connection")
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
		b.Queue(SetLocalSQL, r.Tenant.Setting())
		b.Queue(ObserveQuery)
		res := r.conn.SendBatch(ctx, b)
		if _, err = res.Exec(); err == nil {
			err = r.Observe(ctx, BatchRow{Results: res})
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
	r.SetPhase("queried")
	return r.env.Step(ctx, r.Verdict())
}

// BatchRow makes the next result of a batch look like a Querier: the batch
// already holds ObserveQuery, so the SQL passed to QueryRow is not sent.
type BatchRow struct{ Results pgx.BatchResults }

// QueryRow reads the batch's next result; the SQL must be ObserveQuery.
func (b BatchRow) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return b.Results.QueryRow()
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
	r.env.tracker.Update(func(s *State) { s.timelineObserve(r, uint32(pid), seen, role) })
	return nil
}

// explain says why a request saw what it saw.
func explain(sb Sandbox, t Tenant, seen *string, rows, foreign int) string {
	switch {
	case foreign > 0 && seen != nil && *seen != t.Setting():
		return fmt.Sprintf("LEAK: the backend still %s, so RLS returned %s's rows to %s.", DescribeSetting(sb, seen, "held"), sb.TenantName(*seen), t.Name)
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

// Verdict narrates the outcome of the request's query.
func (r *Request) Verdict() string {
	row := r.Row()
	if row.Why == "" {
		return r.Label() + " queried."
	}
	return fmt.Sprintf("%s on backend %d: %s", r.Label(), row.PID, row.Why)
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
	pid := r.PID()
	slot := r.pool.Slot(c.Conn())
	r.conn = nil
	r.env.unhold(r)
	c.Release()
	r.pool.WaitReleased(ctx, slot)
	r.SetPhase("released")
	held := ""
	if tenant, ok := r.env.tracker.LastReading(pid); ok {
		held = ": it now " + DescribeSetting(r.env.Sandbox, tenant, "holds")
	} else if cn, ok := r.env.tracker.ConnByPID(r.pool.name, pid); ok {
		held = ": it now " + DescribeSetting(r.env.Sandbox, cn.Tenant, "holds")
	}
	return r.env.Step(ctx, fmt.Sprintf("%s releases backend %d%s.", r.Label(), pid, held))
}

// Abandon gives back a connection the scenario still held when its
// environment closed (a run cancelled between phases): its transaction is
// rolled back and the connection released, so closing the pool cannot hang.
func (r *Request) Abandon() {
	if r.tx != nil {
		ctx, cancel := context.WithTimeout(context.Background(), IdentifyTimeout)
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
			r.ReleaseQuiet(context.WithoutCancel(ctx))
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
		row.Error, row.SQLState, row.Phase = Scrub(err.Error()), code, "failed"
	})
}

// NewRequest adds a request to the log that no instrumented pool serves (a
// user's own connection, the lab's superuser connection): poolLabel names
// where it runs and phase is its first phase. Observe, Fail and Update work
// on it; the phases that need a pool (Acquire, Scope, Query, Release) do not.
func (e *Env) NewRequest(t Tenant, pattern, poolLabel, phase string) *Request {
	tenant := t.Setting()
	r := &Request{Tenant: t, Pattern: pattern, env: e}
	r.Seq = e.tracker.addRequest(RequestRow{Tenant: &tenant, Pattern: pattern, Pool: poolLabel, Phase: phase})
	return r
}

// Pool returns the pool the request acquires from (nil for a request made
// with Env.NewRequest).
func (r *Request) Pool() *Pool { return r.pool }

// Env returns the run the request belongs to.
func (r *Request) Env() *Env { return r.env }

// Update changes the request's row in the log.
func (r *Request) Update(f func(*RequestRow)) { r.env.tracker.updateRequest(r.Seq, f) }

// Row returns the request's row as it is now.
func (r *Request) Row() RequestRow { return r.env.tracker.Request(r.Seq) }

// Tx returns the transaction the request has open, or nil.
func (r *Request) Tx() pgx.Tx { return r.tx }

// Begin opens a transaction on the request's connection; Commit, Release
// and the run's cleanup end it.
func (r *Request) Begin(ctx context.Context) (pgx.Tx, error) {
	if r.conn == nil {
		return nil, errors.New(r.Label() + ": begin without a connection")
	}
	tx, err := r.conn.Begin(ctx)
	if err != nil {
		r.Fail(err)
		return nil, err
	}
	r.tx = tx
	return tx, nil
}

// Commit commits the request's open transaction; a failure is recorded on
// the request.
func (r *Request) Commit(ctx context.Context) error {
	if r.tx == nil {
		return nil
	}
	err := r.tx.Commit(ctx)
	r.tx = nil
	if err != nil {
		r.Fail(err)
	}
	return err
}

// AcquireQuiet takes a connection from the pool without a frame of its own
// (crowds of requests at full speed, or requests whose acquire the scenario
// narrates itself).
func (r *Request) AcquireQuiet(ctx context.Context) error {
	r.SetPhase("acquiring")
	c, err := r.pool.AcquireFor(ctx, r.Seq)
	if err != nil {
		r.Fail(err)
		return err
	}
	r.conn = c
	r.env.hold(r)
	pid := r.PID() // as last read from the connection's backend
	r.Update(func(row *RequestRow) { row.Phase = "acquired"; row.PID = pid })
	return nil
}

// ReleaseQuiet gives the connection back without a frame, rolling back an
// open transaction first, and waits until the pool has read the connection
// again. It never paces, so cleanup paths may call it at any time.
func (r *Request) ReleaseQuiet(ctx context.Context) {
	if r.conn == nil {
		return
	}
	slot := r.pool.Slot(r.conn.Conn())
	r.Abandon()
	r.pool.WaitReleased(ctx, slot)
	r.SetPhase("released")
}

// Held returns the PID last read on the request's connection and the
// tenant setting that backend was last read to hold. Behind PgBouncer a
// pool's connection is a client: its own last reading may be older than
// another client's reading of the same server backend, so the newest
// reading of the backend wins over the connection's.
func (r *Request) Held() (pid uint32, tenant *string) {
	if r.conn == nil {
		return 0, nil
	}
	c, ok := r.env.tracker.Conn(r.pool.name, r.pool.Slot(r.conn.Conn()))
	if !ok {
		return 0, nil
	}
	if t, ok := r.env.tracker.LastReading(c.PID); ok {
		return c.PID, t
	}
	return c.PID, c.Tenant
}

// Finish runs the request's last three phases (scope, query, release) after
// an Acquire.
func (r *Request) Finish(ctx context.Context) error {
	for _, step := range []func(context.Context) error{r.Scope, r.Query, r.Release} {
		if err := step(ctx); err != nil {
			r.ReleaseQuiet(context.WithoutCancel(ctx))
			return err
		}
	}
	return nil
}

// Use makes r run on a connection that the scenario holds for several
// requests (samples taken one after the other on one backend); Use(nil)
// hands it back without releasing it.
func (r *Request) Use(c *pgxpool.Conn) {
	r.conn = c
	if c != nil {
		r.pool.Mark(c.Conn(), ConnAcquired, r.Seq)
	}
}
