package main

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/safefile"
)

// logFileMode is the mode of a log file the daemon creates: debug lines
// carry clients' keys, so others may not read it.
const logFileMode = 0o640

// logFile is the --log-file the daemon appends to. Reopen switches to a
// fresh file at the same path, so that logrotate can rename the old one
// and send SIGHUP.
type logFile struct {
	path string
	// stdio, when set, makes standard output and error follow the file,
	// so that what the Go runtime writes there (a panic, a race report)
	// lands in the log of a detached daemon instead of /dev/null.
	stdio bool

	mu sync.Mutex
	f  *os.File
}

// openLogFile opens path for appending, creating it if needed.
func openLogFile(path string, stdio bool) (*logFile, error) {
	l := &logFile{path: path, stdio: stdio}
	if err := l.Reopen(); err != nil {
		return nil, err
	}
	return l, nil
}

// Write appends p to the current file.
func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

// Reopen opens the path again and writes to it from now on. On failure
// the old file stays in use. Only a regular file of the daemon's own is
// opened (safefile.OpenOwn): whoever may write the log's directory must
// not make the daemon append to another file.
func (l *logFile) Reopen() error {
	f, err := safefile.OpenOwn(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, logFileMode)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	if l.stdio {
		for _, fd := range []int{1, 2} {
			if err := unix.Dup3(int(f.Fd()), fd, 0); err != nil {
				f.Close()
				return fmt.Errorf("log file: %w", os.NewSyscallError("dup3", err))
			}
		}
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// Close closes the file.
func (l *logFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
