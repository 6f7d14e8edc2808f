package bouncer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// binaryCandidates are tried after PATH; Debian installs to /usr/sbin, which
// is not on every user's PATH.
var binaryCandidates = []string{"/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer", "/usr/local/sbin/pgbouncer"}

// stopWait is how long Close waits after SIGINT before SIGKILL.
const stopWait = 3 * time.Second

// dirPrefix names the temporary directory of each local PgBouncer.
const dirPrefix = "rlslab-pgbouncer-"

// abandonedAge is how old a temporary directory without a running
// PgBouncer must be before a sweep removes it: older than the longest
// start-up (three tries of readyTimeout), so a PgBouncer that another
// rlslab is still starting keeps its directory.
const abandonedAge = 3*readyTimeout + 15*time.Second

// findBinary returns the path of a pgbouncer executable.
func findBinary() (string, error) {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	for _, p := range binaryCandidates {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("pgbouncer binary not found on PATH or in /usr/sbin")
}

// localProcess is a pgbouncer child process and its temporary directory.
type localProcess struct {
	cmd    *exec.Cmd
	dir    string
	exited chan struct{} // closed when the process has been reaped
	output *os.File      // the child's stdout and stderr
}

// runAs returns the credential to run PgBouncer with: PgBouncer refuses to
// run as root, so as root it runs as postgres, or nobody.
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var last error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			last = err
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			last = fmt.Errorf("user %s: bad uid/gid %q/%q", name, u.Uid, u.Gid)
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("running as root and no unprivileged user (postgres, nobody) to run pgbouncer as: %w", last)
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

// startLocal runs bin in the foreground as a child process.
func startLocal(ctx context.Context, bin string, opts Options, logger *slog.Logger) (*Bouncer, error) {
	started := time.Now()
	cred, err := runAs()
	if err != nil {
		return nil, fmt.Errorf("bouncer: %w", err)
	}
	sweepAbandoned(logger, os.TempDir(), abandonedAge)
	adminPassword := randomPassword()
	secrets, adminSecret, err := authSecrets(ctx, opts, adminPassword, logger)
	if err != nil {
		return nil, fmt.Errorf("bouncer: %w", err)
	}
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("bouncer: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(dir)
		}
	}()
	authPath := filepath.Join(dir, "userlist.txt")
	if err := writeOwned(authPath, authFile(secrets, adminUserName, adminSecret), cred); err != nil {
		return nil, fmt.Errorf("bouncer: %w", err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("bouncer: %w", err)
		}
	}

	// A free port can be taken between freePort and PgBouncer's bind; retry.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, fmt.Errorf("bouncer: %w", err)
		}
		cfg := config{
			listenAddr:     "127.0.0.1",
			listenPort:     port,
			upstreamHost:   opts.Upstream.Host,
			upstreamPort:   opts.Upstream.Port,
			authFile:       authPath,
			logFile:        filepath.Join(dir, "pgbouncer.log"),
			pidFile:        filepath.Join(dir, "pgbouncer.pid"),
			databases:      opts.Databases,
			poolSize:       opts.PoolSize,
			resetAlways:    opts.ResetQueryAlways,
			adminUser:      adminUserName,
			maxClientConns: 200,
		}
		iniPath := filepath.Join(dir, "pgbouncer.ini")
		if err := writeOwned(iniPath, cfg.ini(), cred); err != nil {
			return nil, fmt.Errorf("bouncer: %w", err)
		}
		b := &Bouncer{
			kind:          KindLocal,
			host:          "127.0.0.1",
			port:          port,
			adminUser:     adminUserName,
			adminPassword: adminPassword,
			logger:        logger,
		}
		p, err := spawn(bin, iniPath, dir, cred)
		if err != nil {
			return nil, fmt.Errorf("bouncer: start %s: %w", bin, err)
		}
		b.local = p
		v, err := waitReady(ctx, b.AdminURL(), p.exited)
		if err == nil {
			b.version = v
			ok = true
			logger.Info("pgbouncer started", "kind", b.kind, "pid", b.PID(), "port", port,
				"version", v, "dir", dir, "took", time.Since(started).Round(time.Millisecond))
			return b, nil
		}
		_ = p.kill()
		tail := p.logTail()
		lastErr = fmt.Errorf("bouncer: %w; log:\n%s", err, tail)
		if !strings.Contains(tail, "in use") {
			break
		}
		logger.Debug("pgbouncer port taken, retrying", "port", port)
	}
	return nil, lastErr
}

// writeOwned writes a 0600 file owned by cred's user.
func writeOwned(path, content string, cred *syscall.Credential) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return err
	}
	if cred != nil {
		return os.Chown(path, int(cred.Uid), int(cred.Gid))
	}
	return nil
}

// spawn starts pgbouncer in the foreground with its own process group (a
// terminal's Ctrl-C goes to us, and Close stops it gracefully) and a parent
// death signal (it dies with us).
func spawn(bin, iniPath, dir string, cred *syscall.Credential) (*localProcess, error) {
	out, err := os.OpenFile(filepath.Join(dir, "output.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, iniPath)
	cmd.Dir = dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: cred,
		Pdeathsig:  syscall.SIGKILL,
		Setpgid:    true,
	}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, err
	}
	p := &localProcess{cmd: cmd, dir: dir, exited: make(chan struct{}), output: out}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// kill sends SIGKILL and waits for the process to be reaped.
func (p *localProcess) kill() error {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		return fmt.Errorf("pgbouncer pid %d did not exit after SIGKILL", p.cmd.Process.Pid)
	}
	p.output.Close()
	return nil
}

// stop sends SIGINT (PgBouncer's safe shutdown), waits, then SIGKILL, and
// removes the temporary directory.
func (p *localProcess) stop(logger *slog.Logger) error {
	var err error
	select {
	case <-p.exited:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-p.exited:
		case <-time.After(stopWait):
			logger.Warn("pgbouncer ignored SIGINT, killing", "pid", p.cmd.Process.Pid)
			err = p.kill()
		}
	}
	p.output.Close()
	if rerr := os.RemoveAll(p.dir); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// logTail returns the last lines of PgBouncer's output (in the foreground it
// logs to stderr as well as to its log file), else of its log file.
func (p *localProcess) logTail() string {
	for _, name := range []string{"output.log", "pgbouncer.log"} {
		data, err := os.ReadFile(filepath.Join(p.dir, name))
		if err != nil || len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		return strings.Join(lines, "\n")
	}
	return "(empty)"
}

// Sweep removes the temporary directories (rlslab-pgbouncer-*) that local
// PgBouncers of a killed rlslab left behind: their config, log and
// auth_file. Only directories whose PgBouncer is not running and that are
// older than any start-up are removed. Every local start sweeps too.
func Sweep(logger *slog.Logger) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	sweepAbandoned(logger, os.TempDir(), abandonedAge)
}

// sweepAbandoned removes the rlslab-pgbouncer-* directories in dir that are
// older than minAge and whose pidfile names no running pgbouncer.
func sweepAbandoned(logger *slog.Logger, dir string, minAge time.Duration) {
	matches, _ := filepath.Glob(filepath.Join(dir, dirPrefix+"*"))
	for _, m := range matches {
		fi, err := os.Lstat(m)
		if err != nil || !fi.IsDir() || time.Since(fi.ModTime()) < minAge {
			continue
		}
		if data, err := os.ReadFile(filepath.Join(m, "pgbouncer.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid > 0 && runsPgBouncer(pid) {
				continue
			}
		}
		if err := os.RemoveAll(m); err == nil {
			logger.Info("removed the directory of a PgBouncer that is no longer running", "dir", m)
		} else {
			logger.Warn("could not remove the directory of a PgBouncer that is no longer running", "dir", m, "err", err)
		}
	}
}

// runsPgBouncer reports whether pid is alive and, where /proc tells, runs
// pgbouncer (a pid may have been reused).
func runsPgBouncer(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return true // cannot tell: assume it does
	}
	return strings.HasPrefix(strings.TrimSpace(string(comm)), "pgbouncer")
}
