package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// envDetachFD tells a daemon started by --detach which descriptor is the
// pipe on which it reports to the waiting parent. The leading underscore
// marks it as internal: it is not an interface for operators.
const envDetachFD = "_ONE_SOCKET_DETACH_FD"

// detachOK is what a detached daemon writes once it listens; anything else
// is the error that kept it from starting.
const detachOK = "ok"

// detach starts the daemon again in the background, with the same
// arguments, and waits until it reports. It returns the exit status for
// the parent: 0 once the daemon listens, else the daemon's own status
// after printing its error to stderr.
//
// Go cannot fork without exec (the runtime's threads would not survive),
// so the background daemon is a fresh execution of this binary
// (/proc/self/exe, so a binary replaced on disk meanwhile does not
// matter) in a new session (setsid), with standard input and output on
// /dev/null, and one end of a pipe for its report.
func detach(args []string, stderr io.Writer) int {
	inheritNothing()
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "one-socket: --detach: %v\n", err)
		return 1
	}
	defer r.Close()
	cmd := exec.Command("/proc/self/exe", args...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(os.Environ(), envDetachFD+"=3")
	cmd.ExtraFiles = []*os.File{w} // descriptor 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close() // only the daemon's copy may keep the pipe open
	if err != nil {
		fmt.Fprintf(stderr, "one-socket: --detach: %v\n", err)
		return 1
	}
	// The daemon closes the pipe right after reporting, or by exiting.
	msg, _ := io.ReadAll(r)
	msg = bytes.TrimSpace(msg)
	if string(msg) == detachOK {
		return 0
	}
	cmd.Wait()
	code := cmd.ProcessState.ExitCode()
	if len(msg) == 0 {
		msg = fmt.Appendf(nil, "the daemon exited (%v) before it was listening", cmd.ProcessState)
	}
	fmt.Fprintf(stderr, "one-socket: %s\n", msg)
	if code <= 0 {
		code = 1
	}
	return code
}

// inheritNothing marks every descriptor above standard error
// close-on-exec, so that the daemon inherits only what detach passes on
// purpose and not what whoever started one-socket left open (daemon(7)
// asks a daemon to close them; in Go only this side can do it safely).
func inheritNothing() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}

// startReport is a detached daemon's end of the pipe to its parent. A nil
// *startReport (a daemon in the foreground) reports nothing.
type startReport struct {
	f *os.File
}

// takeStartReport returns the report pipe when this process is a daemon
// started by --detach, else nil. It unsets envDetachFD, so that the
// variable is not passed on.
func takeStartReport() (*startReport, error) {
	v, ok := os.LookupEnv(envDetachFD)
	os.Unsetenv(envDetachFD)
	if !ok {
		return nil, nil
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q is not a descriptor", envDetachFD, v)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return nil, fmt.Errorf("%s=%d is not a pipe", envDetachFD, fd)
	}
	unix.CloseOnExec(fd)
	return &startReport{f: os.NewFile(uintptr(fd), "detach-report")}, nil
}

// ok tells the parent the daemon listens, and closes the pipe.
func (s *startReport) ok() { s.send(detachOK) }

// fail passes err to the parent, and closes the pipe.
func (s *startReport) fail(err error) { s.send(err.Error()) }

func (s *startReport) send(msg string) {
	if s == nil || s.f == nil {
		return
	}
	s.f.WriteString(msg + "\n")
	s.f.Close()
	s.f = nil
}

// detachPaths makes the paths in p absolute and then changes to the root
// directory, so that the detached daemon keeps no directory busy (it could
// not be unmounted) and finds its files wherever it was started from.
// Abstract socket names and empty paths are left as they are.
func detachPaths(p ...*string) error {
	for _, s := range p {
		if *s == "" || isAbstract(*s) {
			continue
		}
		abs, err := filepath.Abs(*s)
		if err != nil {
			return err
		}
		*s = abs
	}
	if err := os.Chdir("/"); err != nil {
		return errors.New("--detach: " + err.Error())
	}
	return nil
}
