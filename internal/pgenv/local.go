package pgenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// bins are the PostgreSQL server programs used to run a local cluster.
type bins struct {
	initdb, postgres string
}

// errNoBinaries says that no PostgreSQL server binaries were found.
var errNoBinaries = errors.New("initdb and postgres not found on PATH nor in /usr/lib/postgresql/*/bin")

// Start-up limits for a local cluster.
const (
	readyTimeout    = 15 * time.Second
	shutdownTimeout = 5 * time.Second
	logTailBytes    = 4 << 10
)

// findBinaries looks for initdb and postgres on PATH, then in the newest
// /usr/lib/postgresql/*/bin (where Debian and Ubuntu install them without
// putting them on PATH).
func findBinaries() (bins, error) {
	if i, err := exec.LookPath("initdb"); err == nil {
		if p, err := exec.LookPath("postgres"); err == nil {
			return bins{initdb: i, postgres: p}, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		return compareVersions(filepath.Base(filepath.Dir(b)), filepath.Base(filepath.Dir(a)))
	})
	for _, d := range dirs {
		b := bins{initdb: filepath.Join(d, "initdb"), postgres: filepath.Join(d, "postgres")}
		if isExecutable(b.initdb) && isExecutable(b.postgres) {
			return b, nil
		}
	}
	return bins{}, errNoBinaries
}

// compareVersions compares dotted numeric versions such as "9.6" and "15".
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x - y
		}
	}
	return 0
}

// isExecutable reports whether path is a regular file with an execute bit.
func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

// account is the unprivileged user PostgreSQL runs as when rlslab runs as
// root; a nil *account means "as ourselves".
type account struct {
	name     string
	uid, gid uint32
}

// unprivileged returns the account to run initdb and postgres as: nil when we
// are not root, else the postgres user, else nobody.
func unprivileged() (*account, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		return &account{name: name, uid: uint32(uid), gid: uint32(gid)}, nil
	}
	return nil, errors.New("PostgreSQL refuses to run as root, and there is neither a postgres nor a nobody user to run it as")
}

// procAttr returns the process attributes for a child that must die with us
// (sig is sent when the creating thread exits) and run as a.
func (a *account) procAttr(sig syscall.Signal) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{
		Pdeathsig: sig,
		// Own process group: a Ctrl-C in the terminal reaches rlslab only,
		// which then shuts PostgreSQL down in order through Close.
		Setpgid: true,
	}
	if a != nil {
		attr.Credential = &syscall.Credential{Uid: a.uid, Gid: a.gid, Groups: []uint32{}}
	}
	return attr
}

// chown gives path to a; no-op when a is nil.
func (a *account) chown(path string) error {
	if a == nil {
		return nil
	}
	return os.Chown(path, int(a.uid), int(a.gid))
}

// checkReachable returns an error when a cannot traverse every parent of path.
func (a *account) checkReachable(path string) error {
	if a == nil {
		return nil
	}
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		st, err := os.Stat(dir)
		if err != nil {
			return err
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		perm := st.Mode().Perm()
		var can bool
		switch {
		case sys.Uid == a.uid:
			can = perm&0o100 != 0
		case sys.Gid == a.gid:
			can = perm&0o010 != 0
		default:
			can = perm&0o001 != 0
		}
		if !can {
			return fmt.Errorf("PostgreSQL runs as user %s (rlslab runs as root), which cannot enter %s (mode %v): make it traversable (chmod o+x) or choose a directory elsewhere", a.name, dir, perm)
		}
		if dir == filepath.Dir(dir) {
			return nil
		}
	}
}

// startLocal runs a cluster from the local binaries: a fresh one in a temp
// dir, or the one in opts.DataDir.
func startLocal(ctx context.Context, opts Options, b bins) (s *Server, err error) {
	acct, err := unprivileged()
	if err != nil {
		return nil, err
	}
	sweepAbandoned(opts.Logger, os.TempDir(), time.Hour)
	runDir, err := os.MkdirTemp("", "rlslab-pg-")
	if err != nil {
		return nil, err
	}
	// Locked for as long as this process lives: the sweep of a later
	// rlslab removes the directory once the lock is free.
	runLock, _, err := tryLock(filepath.Join(runDir, lockName))
	if err != nil {
		os.RemoveAll(runDir)
		return nil, err
	}
	var dataLock *lockFile
	defer func() {
		if err != nil {
			os.RemoveAll(runDir)
			runLock.unlock()
			dataLock.unlock()
		}
	}()
	if err := acct.chown(runDir); err != nil {
		return nil, err
	}
	if err := acct.checkReachable(runDir); err != nil {
		return nil, err
	}
	s = &Server{Kind: "local", maxConns: opts.MaxConnections, runDir: runDir, died: make(chan struct{}), logger: opts.Logger, runLock: runLock}
	password := rand.Text()

	if opts.DataDir == "" {
		s.dataDir = filepath.Join(runDir, "data")
		if err := initdb(ctx, b, acct, s.dataDir, runDir, password, true); err != nil {
			return nil, err
		}
	} else {
		s.keepData = true
		if s.dataDir, err = filepath.Abs(opts.DataDir); err != nil {
			return nil, err
		}
		var lockedBefore bool
		if dataLock, lockedBefore, err = lockDataDir(opts, s.dataDir); err != nil {
			return nil, err
		}
		s.dataLock = dataLock
		if acct, err = prepareDataDir(ctx, opts, b, acct, s.dataDir, runDir, password, lockedBefore); err != nil {
			return nil, err
		}
	}

	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		err = s.launch(b, acct, port)
		if err == nil {
			if err = s.waitReady(ctx); err == nil {
				break
			}
		}
		s.stopProcess()
		if ctx.Err() != nil {
			return nil, err
		}
		logTail := s.logTail()
		if attempt < 3 && bytes.Contains(logTail, []byte("already in use")) {
			opts.Logger.Warn("postgres port taken; retrying with another", "port", port)
			continue
		}
		// After a crash (postgres killed hard), its backends linger briefly
		// and postgres refuses to start until they are gone.
		if attempt < 12 && bytes.Contains(logTail, []byte("pre-existing shared memory block")) {
			if attempt == 1 {
				opts.Logger.Warn("processes of a previous server still use DataDir; waiting for them to exit", "dir", s.dataDir)
			}
			time.Sleep(min(25*time.Millisecond<<attempt, time.Second))
			continue
		}
		return nil, err
	}

	// Password authentication for TCP clients; the socket uses trust and is
	// reachable only by the cluster's owner (and root).
	if err := s.setPassword(ctx, password); err != nil {
		s.stopProcess()
		return nil, err
	}
	return s, nil
}

// prepareDataDir makes dataDir ready to start: it initdb's an empty or
// missing directory and checks a directory that already holds a cluster. It
// returns the account to run postgres as, the cluster owner when we are root.
// lockedBefore says an rlslab used dataDir before (see checkStalePid).
func prepareDataDir(ctx context.Context, opts Options, b bins, acct *account, dataDir, runDir, password string, lockedBefore bool) (*account, error) {
	if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); err == nil {
		st, err := os.Stat(dataDir)
		if err != nil {
			return nil, err
		}
		if acct != nil {
			sys := st.Sys().(*syscall.Stat_t)
			if sys.Uid == 0 {
				return nil, fmt.Errorf("DataDir %s holds a cluster owned by root; PostgreSQL will not run as root (chown -R it to an unprivileged user)", dataDir)
			}
			acct = &account{name: "uid " + strconv.Itoa(int(sys.Uid)), uid: sys.Uid, gid: sys.Gid}
			if err := acct.checkReachable(dataDir); err != nil {
				return nil, err
			}
			if err := os.Chown(runDir, int(sys.Uid), int(sys.Gid)); err != nil {
				return nil, err
			}
		}
		if err := checkStalePid(opts, dataDir, lockedBefore); err != nil {
			return nil, err
		}
		opts.Logger.Info("reusing PostgreSQL cluster", "dir", dataDir)
		return acct, nil
	}

	// Parents we create must be traversable by the account; postgres
	// itself wants the data directory private (initdb sets 0700).
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dataDir)
	if err != nil {
		return nil, err
	}
	if len(entries) > 0 {
		return nil, fmt.Errorf("DataDir %s is neither empty nor a PostgreSQL cluster (no PG_VERSION)", dataDir)
	}
	if err := acct.chown(dataDir); err != nil {
		return nil, err
	}
	if err := acct.checkReachable(dataDir); err != nil {
		return nil, err
	}
	opts.Logger.Info("creating PostgreSQL cluster", "dir", dataDir)
	return acct, initdb(ctx, b, acct, dataDir, runDir, password, false)
}

// sweepAbandoned removes temporary cluster directories (rlslab-pg-*) that a
// dead rlslab left in dir. Such a directory holds a lock file that its
// rlslab keeps locked while it lives (the kernel releases it however the
// process dies): a free lock means a dead owner, whatever the directory's
// age. Its postgres, if it still shuts down, is waited for (and asked to
// stop) first. A directory without a lock file (an older rlslab's, or one
// being made this instant) is removed only when older than legacyAge and
// its server is not running.
func sweepAbandoned(log *slog.Logger, dir string, legacyAge time.Duration) {
	matches, _ := filepath.Glob(filepath.Join(dir, "rlslab-pg-*"))
	for _, m := range matches {
		fi, err := os.Stat(m)
		if err != nil || !fi.IsDir() {
			continue
		}
		pid := postmasterPid(filepath.Join(m, "data"))
		lock, _, err := tryLockExisting(filepath.Join(m, lockName))
		switch {
		case err != nil:
			continue // held by a live rlslab (or unreadable)
		case lock == nil:
			if time.Since(fi.ModTime()) < legacyAge || (pid > 0 && processRunsPostgres(pid)) {
				continue
			}
		default:
			// The owner is dead: its postgres got SIGINT as it died.
			if pid > 0 && !stopOrphan(log, pid) {
				lock.unlock()
				continue
			}
		}
		err = os.RemoveAll(m)
		lock.unlock()
		if err == nil {
			log.Info("removed the temporary cluster of an rlslab that is no longer running", "dir", m)
		}
	}
}

// postmasterPid returns the pid in dataDir's postmaster.pid, or 0.
func postmasterPid(dataDir string) int {
	data, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(data), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// orphanWait bounds how long a dead rlslab's postgres is given to finish
// its shutdown before it is asked again (SIGINT), and again after that.
const orphanWait = 5 * time.Second

// stopOrphan waits until the postgres pid of a dead rlslab has exited,
// asking it to stop (SIGINT, a fast shutdown) if it takes more than
// orphanWait; it reports whether it is gone.
func stopOrphan(log *slog.Logger, pid int) bool {
	if waitGone(pid, orphanWait) {
		return true
	}
	log.Warn("the PostgreSQL of an rlslab that is no longer running is still up; stopping it", "pid", pid)
	_ = syscall.Kill(pid, syscall.SIGINT)
	return waitGone(pid, orphanWait)
}

// waitGone waits (checking with a growing pause) until pid no longer runs
// postgres, at most timeout; it reports whether it is gone.
func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	pause := 5 * time.Millisecond
	for processRunsPostgres(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
		pause = min(pause*2, 200*time.Millisecond)
	}
	return true
}

// lockDataDir takes the lock of a kept data directory (the file next to
// it, named after it with lockSuffix), held while this process uses the
// cluster: a second rlslab on the same directory is refused, and after a
// crash the next one knows that the cluster's last user is dead. When the
// directory's parent cannot hold the file, it goes without (and logs it).
// It also reports whether the lock file was there already (an rlslab used
// the directory before).
func lockDataDir(opts Options, dataDir string) (*lockFile, bool, error) {
	if err := os.MkdirAll(filepath.Dir(dataDir), 0o755); err != nil {
		return nil, false, err
	}
	l, created, err := tryLock(dataDir + lockSuffix)
	if errors.Is(err, errLocked) {
		return nil, false, fmt.Errorf("DataDir %s is in use by another rlslab (%v): stop it first, or use another directory", dataDir, err)
	}
	if err != nil {
		opts.Logger.Warn("cannot lock the data directory; going without", "dir", dataDir, "err", err)
		return nil, false, nil
	}
	return l, !created, nil
}

// checkStalePid handles a postmaster.pid left in dataDir. Its postgres may
// still be running: when the directory's lock was free (lockedBefore: an
// rlslab used it, and that rlslab is dead), it is the dead rlslab's
// server finishing its shutdown, and is waited for (and asked to stop);
// otherwise it is another server and an error. A stale file is removed.
func checkStalePid(opts Options, dataDir string, lockedBefore bool) error {
	pidFile := filepath.Join(dataDir, "postmaster.pid")
	data, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	first, _, _ := strings.Cut(string(data), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err == nil && pid > 0 && processRunsPostgres(pid) {
		if !lockedBefore {
			return fmt.Errorf("DataDir %s is in use by PostgreSQL process %d (see %s): stop that server first", dataDir, pid, pidFile)
		}
		opts.Logger.Warn("the PostgreSQL of a crashed rlslab still runs on DataDir; waiting for it to stop", "dir", dataDir, "pid", pid)
		if !stopOrphan(opts.Logger, pid) {
			return fmt.Errorf("DataDir %s: PostgreSQL process %d, left by an rlslab that is no longer running, did not stop: stop it first", dataDir, pid)
		}
		if _, err := os.Stat(pidFile); errors.Is(err, os.ErrNotExist) {
			return nil // it cleaned up after itself
		}
	}
	opts.Logger.Warn("removing stale postmaster.pid left by a crashed server", "file", pidFile, "pid", first)
	return os.Remove(pidFile)
}

// processRunsPostgres reports whether pid is alive (not a zombie nobody
// reaped) and, where /proc tells, runs postgres (a pid may have been reused
// after a crash).
func processRunsPostgres(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	if stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && (stat[i+2] == 'Z' || stat[i+2] == 'X') {
			return false
		}
	}
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return true // cannot tell: assume it is
	}
	c := strings.TrimSpace(string(comm))
	return strings.HasPrefix(c, "postgres") || strings.HasPrefix(c, "postmaster")
}

// initdb creates a cluster in dataDir whose superuser postgres is trusted on
// the Unix socket and needs password over TCP. fast skips fsync.
func initdb(ctx context.Context, b bins, acct *account, dataDir, runDir, password string, fast bool) error {
	pwfile := filepath.Join(runDir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(password+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(pwfile)
	if err := acct.chown(pwfile); err != nil {
		return err
	}
	args := []string{"-D", dataDir, "-U", "postgres", "--pwfile=" + pwfile,
		"--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C"}
	if fast {
		args = append(args, "--no-sync")
	}
	cmd := exec.CommandContext(ctx, b.initdb, args...)
	cmd.Dir = runDir
	cmd.SysProcAttr = acct.procAttr(syscall.SIGKILL)
	runtime.LockOSThread() // Pdeathsig follows the thread that forks
	out, err := cmd.CombinedOutput()
	runtime.UnlockOSThread()
	if err != nil {
		return fmt.Errorf("initdb %s: %w\n%s", dataDir, err, tail(out))
	}
	return nil
}

// launch starts postgres as a child process on port.
func (s *Server) launch(b bins, acct *account, port int) error {
	logFile, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child keeps its own descriptor
	args := []string{"-D", s.dataDir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "port=" + strconv.Itoa(port),
		"-c", "unix_socket_directories=" + s.runDir,
		"-c", "max_connections=" + strconv.Itoa(s.maxConns),
		"-c", "logging_collector=off",
	}
	if s.maxConns <= 10 {
		args = append(args, "-c", "max_wal_senders=0") // must stay below max_connections
	}
	if !s.keepData {
		args = append(args, "-c", "fsync=off", "-c", "full_page_writes=off",
			"-c", "synchronous_commit=off", "-c", "shared_buffers=32MB")
	}
	// Not CommandContext: the server must outlive Start's ctx until Close.
	cmd := exec.Command(b.postgres, args...)
	cmd.Dir = s.runDir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = acct.procAttr(syscall.SIGINT) // SIGINT is a fast shutdown
	runtime.LockOSThread()
	err = cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
		if !s.stopping.Load() {
			s.logger.Error("postgres exited unexpectedly", "pid", cmd.Process.Pid, "err", s.waitErr, "log", string(s.logTail()))
			close(s.died)
		}
	}()
	q := url.Values{"host": {s.runDir}, "port": {strconv.Itoa(port)}, "sslmode": {"disable"}}
	s.URL = "postgres://postgres@/postgres?" + q.Encode()
	s.port = port
	return nil
}

// waitReady waits until the server accepts connections, it exits, or the
// start-up time runs out.
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	cfg, err := pgx.ParseConfig(s.URL)
	if err != nil {
		return err
	}
	cfg.ConnectTimeout = time.Second
	delay := 5 * time.Millisecond
	for {
		err := ping(ctx, cfg)
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("postgres exited during start-up (%v); log:\n%s", s.waitErr, s.logTail())
		case <-ctx.Done():
			return fmt.Errorf("postgres did not accept connections within %v (%v): %w; log:\n%s", readyTimeout, err, ctx.Err(), s.logTail())
		case <-time.After(delay):
		}
		delay = min(delay*2, 200*time.Millisecond)
	}
}

// setPassword sets the superuser's password (for TCPURL) and sets TCPURL.
func (s *Server) setPassword(ctx context.Context, password string) error {
	conn, err := pgx.Connect(ctx, s.URL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// ALTER ROLE takes no bind parameters; rand.Text is base32, safe to quote.
	if _, err := conn.Exec(ctx, "ALTER ROLE postgres PASSWORD '"+password+"'"); err != nil {
		return fmt.Errorf("set postgres password: %w", err)
	}
	s.TCPURL = (&url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword("postgres", password),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path:     "/postgres",
		RawQuery: "sslmode=disable",
	}).String()
	return nil
}

// logPath is the file postgres writes its log to.
func (s *Server) logPath() string { return filepath.Join(s.runDir, "postgres.log") }

// logTail returns the end of the server's log.
func (s *Server) logTail() []byte {
	f, err := os.Open(s.logPath())
	if err != nil {
		return nil
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > logTailBytes {
		_, _ = f.Seek(-logTailBytes, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return b
}

// tail returns the end of b, at most logTailBytes.
func tail(b []byte) []byte {
	if len(b) > logTailBytes {
		return b[len(b)-logTailBytes:]
	}
	return b
}

// stopProcess stops postgres: SIGINT (fast shutdown), then SIGKILL after
// shutdownTimeout. It reports whether SIGKILL was needed as an error.
func (s *Server) stopProcess() error {
	if s.cmd == nil {
		return nil
	}
	s.stopping.Store(true)
	select {
	case <-s.exited:
		return nil
	default:
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
		return nil
	case <-time.After(shutdownTimeout):
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	return fmt.Errorf("postgres (pid %d) did not stop within %v of SIGINT; killed it", s.cmd.Process.Pid, shutdownTimeout)
}

// closeLocal stops postgres, removes the run directory and releases the
// locks.
func (s *Server) closeLocal() error {
	err := s.stopProcess()
	if rmErr := os.RemoveAll(s.runDir); rmErr != nil && err == nil {
		err = rmErr
	}
	s.runLock.unlock()
	s.dataLock.unlock()
	return err
}

// freePort asks the kernel for a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
