package pgproxy

import (
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Events receives what the proxy learns about each client connection and its
// backend. The methods are called from the connection's own goroutines: they
// must return quickly and must not block on the connection. Methods for
// different connections run concurrently; for one connection, Sent may run
// concurrently with Finished or Setting of an earlier statement, but a
// statement's Sent returns before its Finished is called, and Opened comes
// first and Closed last.
type Events interface {
	// Opened reports a client connection logged in and given its backend.
	Opened(c ConnInfo)
	// Sent reports a statement the client sent to the server.
	Sent(c ConnInfo, s Statement)
	// Finished reports the end of a statement reported by Sent.
	Finished(c ConnInfo, r Result)
	// Setting reports the tenant setting of the connection's backend, read
	// by a probe or inferred from a statement the client sent.
	Setting(c ConnInfo, s Setting)
	// Closed reports the end of a client connection that Opened reported;
	// err says why when it was not the client's Terminate or a close.
	Closed(c ConnInfo, err error)
}

// NopEvents implements Events by doing nothing; embed it to implement only
// some of the methods.
type NopEvents struct{}

// Opened does nothing.
func (NopEvents) Opened(ConnInfo) {}

// Sent does nothing.
func (NopEvents) Sent(ConnInfo, Statement) {}

// Finished does nothing.
func (NopEvents) Finished(ConnInfo, Result) {}

// Setting does nothing.
func (NopEvents) Setting(ConnInfo, Setting) {}

// Closed does nothing.
func (NopEvents) Closed(ConnInfo, error) {}

// ConnInfo identifies a client connection and the backend serving it.
type ConnInfo struct {
	ID          uint64 // unique within the Server
	PID         uint32 // the backend's process ID, from its BackendKeyData
	Database    string // as the client asked for it
	User        string // as the client logged in
	Application string // the client's application_name, if it sent one
	Client      string // the client's address
	Opened      time.Time
}

// Statement is one statement a client sent: a simple Query message (which may
// hold several statements) or an Execute of a prepared statement's portal.
type Statement struct {
	ID   uint64 // increasing within the connection
	Text string
	// Params are the Bind parameters in text form where the client sent them
	// as text (nil entries for NULL or binary values); nil for a simple query.
	Params []*string
	// InTransaction says whether the statement runs inside a transaction
	// block the client opened, or after another statement of the same
	// pipeline (an implicit transaction).
	InTransaction bool
	// Declared is the tenant the statement declares in a sqlcommenter
	// comment (/* tenant='2' */); "" when it declares none.
	Declared string
	At       time.Time
}

// Result is how a statement ended.
type Result struct {
	ID      uint64 // the Statement's ID
	Text    string
	Tag     string   // the last CommandComplete tag, e.g. "SELECT 3"
	Columns []string // the last result's column names
	Rows    int      // DataRows returned
	// TenantColumn says whether a result had a tenant_id column; the tenant
	// counts below are meaningful only then.
	TenantColumn bool
	// Tenant is the tenant the rows were compared with: the declared one, or
	// else the setting in force when the statement ran ("" when neither).
	Tenant string
	// ForeignRows counts rows whose tenant_id is not Tenant (0 when Tenant
	// is "" or there is no tenant_id column).
	ForeignRows int
	// Tenants are the distinct tenant_id values seen, in order of first
	// appearance (at most 32).
	Tenants  []string
	Declared string // as in Statement
	// InTransaction is as in Statement.
	InTransaction bool
	Setting       Setting // the tenant setting in force when the statement ran
	// Err is the server's error, nil on success. A statement skipped because
	// an earlier one of its pipeline failed carries that earlier error.
	Err      *pgconn.PgError
	Duration time.Duration // from Sent to the end of its result
}

// Leak says whether the statement served another tenant: it declared a
// tenant other than the setting in force, or got rows of other tenants.
func (r Result) Leak() bool {
	if r.ForeignRows > 0 {
		return true
	}
	return r.Declared != "" && r.Setting.Known && (r.Setting.Null || r.Setting.Value != r.Declared)
}

// Setting is the value of the tenant setting on a backend.
type Setting struct {
	// Known is false before anything was read or inferred, or when an
	// inference could not tell the value (for example a set_config with an
	// expression); Value is then "".
	Known bool
	// Null means the setting does not exist on the backend (never set):
	// current_setting(name, true) returned NULL.
	Null  bool
	Value string
	// Inferred means the value comes from statements the client sent, not
	// from a reading; it stays so until the next probe confirms it.
	Inferred bool
	// Local means the value was set with SET LOCAL or set_config(..., true)
	// and ends with the transaction.
	Local bool
	// Statement is the statement that wrote the value, when the proxy saw
	// it ("" when the value was only read).
	Statement string
	// At is when the value was written (the statement's completion) or, if
	// the proxy never saw it written, first read.
	At time.Time
	// Read is when a probe last read the value; zero while it is inferred.
	Read time.Time
	// Role is the backend's current_user: as the last probe read it, or
	// as the SET ROLE, SET LOCAL ROLE or RESET ROLE the client sent since
	// made it (a local one until its transaction ends); "" before the
	// first reading, or after a write of the role the text did not tell.
	Role string
	// RoleInferred means Role comes from statements the client sent, not
	// from a reading; it stays so until the next probe confirms it.
	RoleInferred bool
}

// same reports whether two settings say the same thing to a watcher.
func (s Setting) same(o Setting) bool {
	return s.Known == o.Known && s.Null == o.Null && s.Value == o.Value && s.Inferred == o.Inferred && s.Local == o.Local && s.Role == o.Role && s.RoleInferred == o.RoleInferred
}
