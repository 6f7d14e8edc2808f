package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// clockTick is the unit of the CPU times in /proc/PID/stat (USER_HZ, 100
// on Linux).
const clockTick = 10 * time.Millisecond

// cpuMeter reads the CPU time used so far by the three programs of a bench
// on one machine: PostgreSQL (its postmaster and every backend that has
// exited, which is where a connection's start-up and a run's queries are
// spent), rlslab, and the bench itself. A program it cannot read (another
// machine, another user's process) counts as unknown.
type cpuMeter struct {
	postmaster int // 0: unknown
	rlslab     int // 0: unknown
}

// cpuTimes is the CPU time used so far by each program; -1 is unknown.
type cpuTimes struct{ postgres, rlslab, bench time.Duration }

// newCPUMeter finds the postmaster of the server at dbURL (a superuser's:
// it reads postmaster.pid from the data directory; "": none) and takes
// rlslab's process id (0: none).
func newCPUMeter(ctx context.Context, dbURL string, rlslabPID int) *cpuMeter {
	m := &cpuMeter{rlslab: rlslabPID}
	if dbURL == "" {
		return m
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return m
	}
	defer conn.Close(ctx)
	var pidFile string
	if err := conn.QueryRow(ctx, "SELECT pg_read_file('postmaster.pid')").Scan(&pidFile); err == nil {
		first, _, _ := strings.Cut(pidFile, "\n")
		if pid, err := strconv.Atoi(strings.TrimSpace(first)); err == nil && procCPU(pid, true) >= 0 {
			m.postmaster = pid
		}
	}
	return m
}

// read returns the CPU time each program has used so far.
func (m *cpuMeter) read() cpuTimes {
	t := cpuTimes{postgres: -1, rlslab: -1, bench: -1}
	if m.postmaster > 0 {
		t.postgres = procCPU(m.postmaster, true)
	}
	if m.rlslab > 0 {
		t.rlslab = procCPU(m.rlslab, false)
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		t.bench = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return t
}

// since returns the CPU time used between before and t (unknown stays -1).
func (t cpuTimes) since(before cpuTimes) cpuTimes {
	d := func(a, b time.Duration) time.Duration {
		if a < 0 || b < 0 {
			return -1
		}
		return a - b
	}
	return cpuTimes{postgres: d(t.postgres, before.postgres), rlslab: d(t.rlslab, before.rlslab), bench: d(t.bench, before.bench)}
}

// print prints the CPU time of a phase of n runs, in all and per run.
func (t cpuTimes) print(w io.Writer, n int) {
	var parts []string
	for _, p := range []struct {
		name string
		d    time.Duration
	}{{"postgres", t.postgres}, {"rlslab", t.rlslab}, {"bench", t.bench}} {
		if p.d < 0 {
			continue
		}
		s := fmt.Sprintf("%s %.1f s", p.name, p.d.Seconds())
		if n > 0 {
			s += fmt.Sprintf(" (%d ms a run)", (p.d / time.Duration(n)).Milliseconds())
		}
		parts = append(parts, s)
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, "    %-32s %s\n", "CPU time", strings.Join(parts, ", "))
	}
}

// procCPU returns the CPU time a process has used (user and system), with
// that of its children that have exited when children is set, or -1 when
// it cannot be read.
func procCPU(pid int, children bool) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	return statCPU(string(data), children)
}

// statCPU reads the CPU time from the text of a /proc/PID/stat file (see
// procCPU), or -1 when it is not one.
func statCPU(stat string, children bool) time.Duration {
	// The command name, in parentheses, may hold spaces and parentheses:
	// the fields count from after its last closing parenthesis (field 3,
	// the state, comes first).
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(stat[i+1:])
	// utime, stime, cutime, cstime are fields 14 to 17, here 11 to 14.
	if len(f) < 15 {
		return -1
	}
	last := 12
	if children {
		last = 14
	}
	var ticks int64
	for _, v := range f[11 : last+1] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return -1
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick
}

// first returns the first server's URL, or "" when none was given.
func (l labDBFlags) first() string {
	if len(l) == 0 {
		return ""
	}
	return l[0]
}

// first returns the first process id, or 0 when none was given.
func (p pidFlags) first() int {
	if len(p) == 0 {
		return 0
	}
	return p[0]
}
