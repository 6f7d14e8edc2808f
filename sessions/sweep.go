package sessions

import (
	"context"
	"fmt"
	"regexp"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// The marker rlslab puts on every database and role it creates for a lab,
// as a COMMENT naming the rlslab instance that made it. The sweep drops only
// marked objects, and only those of instances that are no longer running,
// so a user's own lab_x database is never touched and two rlslab processes
// on one server leave each other alone.
const markerPrefix = "rlslab lab; instance "

// lockClass is the first key of the advisory lock a running instance holds.
const lockClass = 0x726c73 // "rls"

var markerRe = regexp.MustCompile(`^rlslab lab; instance (-?\d+)$`)

// instance is this process's identity on the server: a random number and a
// session-level advisory lock on it, held on one connection for as long as
// the process runs (and released by the server if the process dies).
type instance struct {
	id   int32
	conn *pgx.Conn
}

// lockInstance picks an instance number and takes its lock.
func lockInstance(ctx context.Context, cfg *pgx.ConnConfig) (*instance, error) {
	cfg = cfg.Copy()
	cfg.RuntimeParams["application_name"] = "rlslab instance"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("instance lock: %w", err)
	}
	for range 10 {
		n, _ := strconv.ParseInt(randomHex(4), 16, 64)
		id := int32(n)
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", lockClass, id).Scan(&ok); err != nil {
			conn.Close(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("instance lock: %w", err)
		}
		if ok {
			return &instance{id: id, conn: conn}, nil
		}
	}
	conn.Close(context.WithoutCancel(ctx))
	return nil, fmt.Errorf("instance lock: no free instance number")
}

// marker is the comment put on this instance's objects.
func (i *instance) marker() string { return markerPrefix + strconv.Itoa(int(i.id)) }

// unlock ends the instance's lock.
func (i *instance) unlock() {
	ctx, cancel := context.WithTimeout(context.Background(), connCloseTimeout)
	defer cancel()
	i.conn.Close(ctx)
}

// leftover is a marked lab database or role found on the server.
type leftover struct {
	name     string
	instance int32
	database bool
}

// sweep drops the lab databases and roles of rlslab instances that are no
// longer running (all: at start-up), and this instance's labs whose drop
// failed before. It logs what it dropped.
func (s *labServer) sweep(ctx context.Context, startup bool) {
	ctx, cancel := context.WithTimeout(ctx, dropTimeout)
	defer cancel()
	rows, err := s.admin.Query(ctx, `
		SELECT datname, shobj_description(oid, 'pg_database'), true FROM pg_database
		WHERE datname LIKE 'lab\_%' AND shobj_description(oid, 'pg_database') LIKE 'rlslab lab; instance %'
		UNION ALL
		SELECT rolname, shobj_description(oid, 'pg_authid'), false FROM pg_roles
		WHERE rolname LIKE 'lab\_%' AND shobj_description(oid, 'pg_authid') LIKE 'rlslab lab; instance %'`)
	if err != nil {
		s.m.fails.Warn("sweep: list leftovers", "err", err)
		return
	}
	found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (leftover, error) {
		var l leftover
		var comment string
		if err := r.Scan(&l.name, &comment, &l.database); err != nil {
			return l, err
		}
		if mm := markerRe.FindStringSubmatch(comment); mm != nil {
			n, _ := strconv.ParseInt(mm[1], 10, 32)
			l.instance = int32(n)
		}
		return l, nil
	})
	if err != nil {
		s.m.fails.Warn("sweep: list leftovers", "err", err)
		return
	}
	alive := map[int32]bool{s.inst.id: true}
	dead := map[int32]bool{}
	labIDs := map[string]bool{}
	for _, l := range found {
		if l.instance == s.inst.id || dead[l.instance] || alive[l.instance] {
			continue
		}
		var held bool
		err := s.admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 AND objsubid = 2 AND granted)`,
			int64(lockClass), int64(uint32(l.instance))).Scan(&held)
		if err != nil {
			s.m.fails.Warn("sweep: instance check", "err", err)
			return
		}
		alive[l.instance], dead[l.instance] = held, !held
	}
	s.m.mu.Lock()
	retry := s.retry
	s.retry = map[string]bool{}
	s.m.mu.Unlock()
	for _, l := range found {
		id := labIDOf(l.name)
		if id == "" {
			continue
		}
		if dead[l.instance] || (l.instance == s.inst.id && retry[id]) {
			labIDs[id] = true
		}
	}
	for id := range labIDs {
		if err := s.dropSandbox(ctx, id); err != nil {
			s.m.fails.Warn("sweep: drop lab", "lab", id, "err", err)
			s.m.mu.Lock()
			s.retry[id] = true
			s.m.mu.Unlock()
			continue
		}
		if startup || !retry[id] {
			s.m.log.Info("swept a lab left by an rlslab that is no longer running", "lab", id, "database", "lab_"+id)
		} else {
			s.m.log.Info("dropped a lab whose earlier drop failed", "lab", id)
		}
	}
}

// labIDRe reads the lab id out of a lab database or role name.
var labIDRe = regexp.MustCompile(`^lab_([0-9a-f]{8})(?:_owner|_app)?$`)

// labIDOf returns the lab id of a lab database or role name, or "".
func labIDOf(name string) string {
	if m := labIDRe.FindStringSubmatch(name); m != nil {
		return m[1]
	}
	return ""
}

// retryDrop remembers that lab id could not be dropped; the reaper tries
// again.
func (s *labServer) retryDrop(id string) {
	s.m.mu.Lock()
	s.retry[id] = true
	s.m.mu.Unlock()
}
