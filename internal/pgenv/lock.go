package pgenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockName is the file in a temporary cluster's run directory that the
// rlslab using it holds locked; a kept data directory's lock is the file
// next to it, named after it with lockSuffix.
const (
	lockName   = "rlslab.lock"
	lockSuffix = ".rlslab.lock"
)

// errLocked says that another running process holds a lock.
var errLocked = errors.New("locked by a running process")

// lockFile holds an exclusive flock(2) on a file for as long as the
// process lives or until unlock: the kernel releases it when the process
// dies, however it dies, so a held lock always means a live owner (a
// recorded pid might have been reused).
type lockFile struct {
	f *os.File
}

// tryLock takes the lock on path, creating the file; it fails with an
// error wrapping errLocked (naming the owner's pid) when a live process
// holds it. created reports whether the file did not exist before. A new
// lock file appears already locked (it is made and locked under another
// name, then linked into place), so that no sweep ever finds it free.
func tryLock(path string) (l *lockFile, created bool, err error) {
	if tmp, err := os.CreateTemp(filepath.Dir(path), ".rlslab-lock-*"); err == nil {
		name := tmp.Name()
		if syscall.Flock(int(tmp.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			_, _ = tmp.WriteString(strconv.Itoa(os.Getpid()) + "\n")
			if os.Link(name, path) == nil {
				os.Remove(name)
				return &lockFile{f: tmp}, true, nil
			}
		}
		tmp.Close()
		os.Remove(name)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, false, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 0)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, fmt.Errorf("%s: %w (pid %s)", path, errLocked, strings.TrimSpace(string(b[:n])))
		}
		return nil, false, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &lockFile{f: f}, false, nil
}

// tryLockExisting is tryLock on a file that must already exist: it returns
// nil, false, nil when it does not.
func tryLockExisting(path string) (*lockFile, bool, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	return tryLock(path)
}

// unlock releases the lock (the file stays); nil-safe.
func (l *lockFile) unlock() {
	if l == nil || l.f == nil {
		return
	}
	_ = l.f.Close()
	l.f = nil
}
