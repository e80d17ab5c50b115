package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/safefile"
)

// pidFile is a pid file this process holds: created (or taken over) and
// locked with flock for as long as the daemon runs. The lock, not the
// file's existence, says whether a daemon is alive, so a file left by a
// killed daemon is simply taken over.
type pidFile struct {
	path string
	f    *os.File
}

// errPidFileHeld is wrapped by createPidFile when a live daemon holds the
// file.
var errPidFileHeld = errors.New("pid file is locked")

// createPidFile locks path (creating it, mode 0644, if needed) without
// waiting and writes the calling process's pid into it. If another process
// holds the lock it fails, naming that process, and leaves the file alone.
func createPidFile(path string) (*pidFile, error) {
	if _, err := os.Stat(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("pid file %s: %w", path, err)
	}
	// The holder unlinks the file before it unlocks it; whoever opened the
	// old file in between would lock an orphan. So after locking, check
	// that the path still leads to the locked file, and try again if not.
	for range 10 {
		// Only a file of the daemon's own: its owner could otherwise
		// write any pid in it for logrotate's kill -HUP $(cat ...).
		f, err := safefile.OpenOwn(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("pid file: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			b := make([]byte, 32)
			n, _ := f.ReadAt(b, 0)
			b = b[:n]
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				if pid, perr := strconv.Atoi(string(bytes.TrimSpace(b))); perr == nil && pid > 0 {
					return nil, fmt.Errorf("another one-socket (pid %d) holds %s: %w", pid, path, errPidFileHeld)
				}
				return nil, fmt.Errorf("another one-socket holds %s: %w", path, errPidFileHeld)
			}
			return nil, fmt.Errorf("pid file %s: %w", path, os.NewSyscallError("flock", err))
		}
		if !sameFile(f, path) {
			f.Close()
			continue
		}
		pf := &pidFile{path: path, f: f}
		if err := pf.write(os.Getpid()); err != nil {
			pf.remove()
			return nil, err
		}
		return pf, nil
	}
	return nil, fmt.Errorf("pid file %s keeps being replaced", path)
}

// sameFile reports whether path names the file f is open on.
func sameFile(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Lstat(path)
	if err != nil {
		return false
	}
	return os.SameFile(a, b)
}

// write replaces the file's content with pid and a newline.
func (pf *pidFile) write(pid int) error {
	if err := pf.f.Truncate(0); err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	if _, err := pf.f.WriteAt([]byte(strconv.Itoa(pid)+"\n"), 0); err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	return nil
}

// remove unlinks the file and then releases the lock, in that order, so
// that no other daemon can lock the file before it is gone. A nil
// *pidFile does nothing.
func (pf *pidFile) remove() error {
	if pf == nil || pf.f == nil {
		return nil
	}
	var err error
	if sameFile(pf.f, pf.path) {
		if rerr := os.Remove(pf.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = fmt.Errorf("removing the pid file: %w", rerr)
		}
	}
	pf.f.Close()
	pf.f = nil
	return err
}
