package pgenvtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/rlslab/rlslab/internal/pgenv"
)

// The test binaries of one go test run share one PostgreSQL: the first
// binary that needs a server starts a keeper (itself again, in keeper mode,
// in a session of its own), which starts the server and stops it once no
// binary of the run has used it for sharedLinger, or at once when the go
// command that ran them is gone and nobody uses it. Binaries find the
// keeper through a directory in os.TempDir() named after the go command's
// pid, so runs of other checkouts on the same machine never meet. Each
// binary works in a database of its own on it (ownDatabase), dropped at the
// end of its tests.
//
// The directory holds:
//
//	lock         flock'd exclusively while a binary or the keeper changes what is there
//	keeper.lock  flock'd by the keeper for as long as it runs
//	users.lock   flock'd shared by every binary using the server, for its life
//	server.json  the server's URL, present while the keeper serves
//	keeper.log   the keeper's log
const (
	// keeperEnv names the shared directory in the environment of a keeper.
	keeperEnv = "RLSLAB_PGENVTEST_KEEPER"
	// goPIDEnv gives a keeper the pid of the go command it serves.
	goPIDEnv = "RLSLAB_PGENVTEST_GO"
	// sharedEnv set to "0" gives each test binary a server of its own.
	sharedEnv = "RLSLAB_PGENVTEST_SHARED"
	// sharedLinger is how long the keeper waits for the next binary after
	// the last one is done, while the go command still runs; lingerEnv
	// overrides it (a time.ParseDuration string).
	sharedLinger = 30 * time.Second
	lingerEnv    = "RLSLAB_PGENVTEST_LINGER"
	// sharedMaxConnections leaves room for the binaries go test runs at once.
	sharedMaxConnections = 800
)

// sharedInfo is server.json.
type sharedInfo struct {
	URL    string `json:"url"`
	Keeper int    `json:"keeper"`
}

// sharedDir is the directory through which the binaries of this go test
// run (the children of one process) find their keeper.
func sharedDir() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("rlslab-pgenvtest-%d-%d", os.Getuid(), os.Getppid()))
}

// flock opens path (creating it) and takes how (syscall.LOCK_EX or
// LOCK_SH, maybe with LOCK_NB) on it; the lock lasts until the file is
// closed or the process ends.
func flock(path string, how int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// locked reports whether a live process holds a lock on path.
func locked(path string) bool {
	f, err := flock(path, syscall.LOCK_EX|syscall.LOCK_NB)
	if err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	f.Close()
	return false
}

// sharedServer returns the URL of the run's shared server, starting its
// keeper if there is none, and keeps the server while this process lives
// (users is the shared lock that says so; it is released at exit). The
// lock is taken before the server is there, so that a keeper never stops
// for want of users while a binary waits for it to serve.
func sharedServer(ctx context.Context) (url string, users *os.File, err error) {
	dir := sharedDir()
	sweepShared(dir)
	wait := 10 * time.Millisecond
	for keepers := 0; ; {
		url, u, spawned, err := joinShared(ctx, dir)
		if users != nil {
			users.Close() // u, when there is one, holds the lock now
		}
		users = u
		if err != nil || url != "" {
			if err != nil && users != nil {
				users.Close()
				users = nil
			}
			return url, users, err
		}
		if spawned {
			if keepers++; keepers > 2 {
				users.Close()
				return "", nil, fmt.Errorf("%d keepers started, none served: %s", keepers, keeperLog(dir))
			}
		}
		select {
		case <-ctx.Done():
			users.Close()
			return "", nil, fmt.Errorf("no shared PostgreSQL from the keeper (%w): %s", ctx.Err(), keeperLog(dir))
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// keeperLog returns the end of the keeper's log in dir, for an error.
func keeperLog(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "keeper.log"))
	if err != nil {
		return "no keeper log: " + err.Error()
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return "keeper log ends:\n" + string(b)
}

// joinShared, under the directory's lock, registers this process as a
// user (users, a shared lock on users.lock) and returns the URL named in
// server.json, or "" while the server is not there yet, having started a
// keeper when none runs (spawned). The directory is made again when a
// keeper that stopped has removed it.
func joinShared(ctx context.Context, dir string) (url string, users *os.File, spawned bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, false, err
	}
	lk, err := flock(filepath.Join(dir, "lock"), syscall.LOCK_EX)
	if err != nil {
		return "", nil, false, err
	}
	defer lk.Close()
	users, err = flock(filepath.Join(dir, "users.lock"), syscall.LOCK_SH)
	if err != nil {
		return "", nil, false, err
	}
	if b, err := os.ReadFile(filepath.Join(dir, "server.json")); err == nil {
		var info sharedInfo
		if err := json.Unmarshal(b, &info); err != nil {
			users.Close()
			return "", nil, false, fmt.Errorf("%s/server.json: %w", dir, err)
		}
		return info.URL, users, false, nil
	}
	if locked(filepath.Join(dir, "keeper.lock")) {
		return "", users, false, nil // starting, or stopping: wait
	}
	fail := func(err error) (string, *os.File, bool, error) {
		users.Close()
		return "", nil, true, err
	}
	log, err := os.OpenFile(filepath.Join(dir, "keeper.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fail(err)
	}
	defer log.Close()
	// The keeper is this test binary again; Main sees keeperEnv before it
	// runs any test, and -test.run keeps a binary without Main from
	// running tests in its place.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), keeperEnv+"="+dir, goPIDEnv+"="+strconv.Itoa(os.Getppid()))
	cmd.Dir = os.TempDir()
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("start the keeper: %w", err))
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	// The keeper takes keeper.lock first thing; until it has, the next
	// look must not start another. A loaded machine may take seconds to
	// start a race-built binary, so this waits for the lock or the exit
	// rather than for a fixed time.
	for wait := 2 * time.Millisecond; !locked(filepath.Join(dir, "keeper.lock")); wait = min(2*wait, 100*time.Millisecond) {
		select {
		case <-exited:
			return fail(fmt.Errorf("the keeper exited before it served: %s", keeperLog(dir)))
		case <-ctx.Done():
			return fail(fmt.Errorf("the keeper did not start (%w): %s", ctx.Err(), keeperLog(dir)))
		case <-time.After(wait): // the keeper process is starting; no event to wait on
		}
	}
	return "", users, true, nil
}

// keep is the keeper: it serves one PostgreSQL for the binaries that use
// the directory dir and stops it when none has for sharedLinger, or when
// the go command is gone and none uses it. It returns the exit status.
func keep(dir string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	kl, err := flock(filepath.Join(dir, "keeper.lock"), syscall.LOCK_EX|syscall.LOCK_NB)
	if err != nil {
		log.Error("keeper: another keeper runs", "err", err)
		return 1
	}
	defer kl.Close()
	goCmd, _ := strconv.Atoi(os.Getenv(goPIDEnv))
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	srv, err := pgenv.Start(ctx, pgenv.Options{DB: "auto", MaxConnections: sharedMaxConnections, Logger: log})
	cancel()
	if err != nil {
		log.Error("keeper: no PostgreSQL", "err", err)
		return 1
	}
	defer func() {
		if err := srv.Close(); err != nil {
			log.Error("keeper: stopping PostgreSQL", "err", err)
		}
		os.RemoveAll(dir)
	}()
	// The TCP URL with a password: PgBouncer, run by the tests as another
	// user, reaches it too.
	b, _ := json.Marshal(sharedInfo{URL: srv.TCPURL, Keeper: os.Getpid()})
	tmp := filepath.Join(dir, "server.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		log.Error("keeper", "err", err)
		return 1
	}
	if err := os.Rename(tmp, filepath.Join(dir, "server.json")); err != nil {
		log.Error("keeper", "err", err)
		return 1
	}
	log.Info("keeper: serving", "go", goCmd)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	linger := sharedLinger
	if d, err := time.ParseDuration(os.Getenv(lingerEnv)); err == nil {
		linger = d
	}
	var idleSince time.Time
	for {
		select {
		case <-srv.Died():
			os.Remove(filepath.Join(dir, "server.json"))
			return 1
		case <-tick.C:
		}
		if stop := idle(dir, &idleSince, linger, goCmd); stop {
			log.Info("keeper: no more users; stopping")
			return 0
		}
	}
}

// idle reports, under the directory's lock, whether the keeper should stop:
// no binary uses the server, and none has for linger or the go command is
// gone. When it should, server.json is already removed.
func idle(dir string, idleSince *time.Time, linger time.Duration, goCmd int) bool {
	lk, err := flock(filepath.Join(dir, "lock"), syscall.LOCK_EX)
	if err != nil {
		return true
	}
	defer lk.Close()
	if locked(filepath.Join(dir, "users.lock")) {
		*idleSince = time.Time{}
		return false
	}
	if idleSince.IsZero() {
		*idleSince = time.Now()
	}
	if time.Since(*idleSince) < linger && alive(goCmd) {
		return false
	}
	os.Remove(filepath.Join(dir, "server.json"))
	return true
}

// alive reports whether process pid still runs (false for 0 and 1).
func alive(pid int) bool {
	if pid <= 1 {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}

// sweepShared removes the directories of earlier runs whose keeper was
// killed: no keeper and no user holds them, and they are an hour old.
func sweepShared(keepDir string) {
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), fmt.Sprintf("rlslab-pgenvtest-%d-*", os.Getuid())))
	for _, d := range old {
		st, err := os.Stat(d)
		if d == keepDir || err != nil || time.Since(st.ModTime()) < time.Hour {
			continue
		}
		if !locked(filepath.Join(d, "keeper.lock")) && !locked(filepath.Join(d, "users.lock")) {
			os.RemoveAll(d)
		}
	}
}
