package admin

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Pool is one row of SHOW POOLS: one user/database pair.
type Pool struct {
	Database  string
	User      string
	ClActive  int
	ClWaiting int
	SvActive  int
	SvIdle    int
	SvUsed    int
	SvTested  int
	SvLogin   int
	MaxWait   time.Duration // how long the oldest waiting client has waited
	PoolMode  string
	Raw       map[string]string // every column as text, by name
}

// Server is one row of SHOW SERVERS: a connection from PgBouncer to
// PostgreSQL.
type Server struct {
	Type            string // "S"
	User            string
	Database        string
	State           string // active, idle, used, tested, new, ...
	Addr            string
	Port            int
	LocalAddr       string
	LocalPort       int
	ConnectTime     time.Time
	RequestTime     time.Time
	Ptr             string // this connection's address inside PgBouncer
	Link            string // Ptr of the paired client, "" if none
	RemotePID       int    // the backend PID, as pg_backend_pid() and pg_stat_activity see it
	ApplicationName string
	Raw             map[string]string // every column as text, by name
}

// Client is one row of SHOW CLIENTS: a connection from a client to
// PgBouncer. It has the same columns as a Server.
type Client = Server

// ShowPools runs SHOW POOLS on an admin console connection.
func ShowPools(ctx context.Context, admin *pgx.Conn) ([]Pool, error) {
	rows, err := show(ctx, admin, "POOLS")
	if err != nil {
		return nil, err
	}
	out := make([]Pool, 0, len(rows))
	for _, r := range rows {
		out = append(out, Pool{
			Database:  r["database"],
			User:      r["user"],
			ClActive:  atoi(r["cl_active"]),
			ClWaiting: atoi(r["cl_waiting"]),
			SvActive:  atoi(r["sv_active"]),
			SvIdle:    atoi(r["sv_idle"]),
			SvUsed:    atoi(r["sv_used"]),
			SvTested:  atoi(r["sv_tested"]),
			SvLogin:   atoi(r["sv_login"]),
			MaxWait:   time.Duration(atoi(r["maxwait"]))*time.Second + time.Duration(atoi(r["maxwait_us"]))*time.Microsecond,
			PoolMode:  r["pool_mode"],
			Raw:       r,
		})
	}
	return out, nil
}

// ShowServers runs SHOW SERVERS on an admin console connection.
func ShowServers(ctx context.Context, admin *pgx.Conn) ([]Server, error) {
	return showConns(ctx, admin, "SERVERS")
}

// ShowClients runs SHOW CLIENTS on an admin console connection. The admin
// connection itself is one of the clients.
func ShowClients(ctx context.Context, admin *pgx.Conn) ([]Client, error) {
	return showConns(ctx, admin, "CLIENTS")
}

// ShowConfig runs SHOW CONFIG and returns each setting's current value.
func ShowConfig(ctx context.Context, admin *pgx.Conn) (map[string]string, error) {
	rows, err := show(ctx, admin, "CONFIG")
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(rows))
	for _, r := range rows {
		out[r["key"]] = r["value"]
	}
	return out, nil
}

func showConns(ctx context.Context, admin *pgx.Conn, what string) ([]Server, error) {
	rows, err := show(ctx, admin, what)
	if err != nil {
		return nil, err
	}
	out := make([]Server, 0, len(rows))
	for _, r := range rows {
		out = append(out, Server{
			Type:            r["type"],
			User:            r["user"],
			Database:        r["database"],
			State:           r["state"],
			Addr:            r["addr"],
			Port:            atoi(r["port"]),
			LocalAddr:       r["local_addr"],
			LocalPort:       atoi(r["local_port"]),
			ConnectTime:     parseTime(r["connect_time"]),
			RequestTime:     parseTime(r["request_time"]),
			Ptr:             r["ptr"],
			Link:            r["link"],
			RemotePID:       atoi(r["remote_pid"]),
			ApplicationName: r["application_name"],
			Raw:             r,
		})
	}
	return out, nil
}

// show runs SHOW <what> with the simple protocol and returns each row as a
// map from column name to text value (NULL as "").
func show(ctx context.Context, admin *pgx.Conn, what string) ([]map[string]string, error) {
	rows, err := admin.Query(ctx, "SHOW "+what, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return nil, fmt.Errorf("bouncer: SHOW %s: %w", what, err)
	}
	defer rows.Close()
	fields := rows.FieldDescriptions()
	var out []map[string]string
	for rows.Next() {
		raw := rows.RawValues()
		m := make(map[string]string, len(fields))
		for i, f := range fields {
			if i < len(raw) {
				m[f.Name] = string(raw[i])
			}
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("bouncer: SHOW %s: %w", what, err)
	}
	return out, nil
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// parseTime reads PgBouncer's "2006-01-02 15:04:05 UTC" timestamps; zero if
// it cannot.
func parseTime(s string) time.Time {
	for _, layout := range []string{"2006-01-02 15:04:05 MST", "2006-01-02 15:04:05.999999 MST", "2006-01-02 15:04:05-07", time.RFC3339Nano} {
		if t, err := time.Parse(layout, s); err == nil {
			return t
		}
	}
	return time.Time{}
}
