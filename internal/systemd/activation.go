// Package systemd speaks the two protocols a daemon shares with its
// service manager: socket activation (sd_listen_fds(3)), from both sides,
// and notification (sd_notify(3)): readiness, status, stopping, reloading,
// the file descriptor store and the barrier.
//
// github.com/coreos/go-systemd/v22 is not used. Its activation.Files
// returns nil for a malformed LISTEN_FDS and leaves those descriptors
// open, has no bound on the count, and cannot tell a missing
// LISTEN_FDNAMES from one that names the wrong number of descriptors; its
// daemon.SdNotify sends no descriptors, so it has neither FDSTORE=1 with
// descriptors nor BARRIER=1. Each of those is an error here.
package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ListenFDsStart is the first descriptor a service manager passes
// (SD_LISTEN_FDS_START in sd-daemon.h).
const ListenFDsStart = 3

// MaxListenFDs bounds LISTEN_FDS: a few sockets, and a file descriptor
// store that may hold one descriptor per client.
const MaxListenFDs = 1 << 24

// The environment of socket activation.
const (
	envPID   = "LISTEN_PID"
	envFDs   = "LISTEN_FDS"
	envNames = "LISTEN_FDNAMES"
)

// Descriptor is one descriptor the service manager passed.
type Descriptor struct {
	FD   int
	Name string // its LISTEN_FDNAMES entry; "" when none was given
}

// ListenFDs returns the descriptors passed to process pid, in order from
// ListenFDsStart, or none when nothing was passed to it. It unsets the
// LISTEN_ variables whoever they were meant for, so that no child inherits
// them, and marks the descriptors close-on-exec; the caller owns them. On
// error every passed descriptor has been closed.
func ListenFDs(pid int) ([]Descriptor, error) {
	pidStr, nStr := os.Getenv(envPID), os.Getenv(envFDs)
	namesStr, haveNames := os.LookupEnv(envNames)
	for _, v := range []string{envPID, envFDs, envNames} {
		os.Unsetenv(v)
	}
	if pidStr == "" || nStr == "" {
		return nil, nil
	}
	if p, err := strconv.Atoi(pidStr); err != nil || p != pid {
		// Meant for another process (a parent, say): not ours to touch.
		return nil, nil
	}
	n, err := strconv.Atoi(nStr)
	if err != nil || n < 0 || n > MaxListenFDs {
		// Closing what may not be descriptors at all is worse than
		// leaving them: the count itself is what is wrong.
		return nil, fmt.Errorf("socket activation: %s=%q is not a descriptor count", envFDs, nStr)
	}
	if n == 0 {
		return nil, nil
	}
	ds := make([]Descriptor, n)
	for i := range ds {
		ds[i].FD = ListenFDsStart + i
	}
	if haveNames {
		names := strings.Split(namesStr, ":")
		if len(names) != n {
			CloseAll(ds)
			return nil, fmt.Errorf("socket activation: %s names %d descriptors but %s is %d", envNames, len(names), envFDs, n)
		}
		for i := range ds {
			ds[i].Name = names[i]
		}
	}
	// Close-on-exec before anything else, so that nothing this process
	// starts inherits the manager's descriptors.
	for _, d := range ds {
		if _, err := unix.FcntlInt(uintptr(d.FD), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
			CloseAll(ds)
			return nil, fmt.Errorf("socket activation: descriptor %d: %w", d.FD, os.NewSyscallError("fcntl", err))
		}
	}
	return ds, nil
}

// CloseAll closes every descriptor in ds.
func CloseAll(ds []Descriptor) {
	for _, d := range ds {
		unix.Close(d.FD)
	}
}

// UnixListener checks that d is a listening Unix stream socket, as
// ListenStream=/path with Accept=no passes, and returns it as a listener
// that does not unlink its file on Close: the file is the manager's.
// d.FD is closed in every case; the listener holds a duplicate.
func UnixListener(d Descriptor) (*net.UnixListener, error) {
	f := os.NewFile(uintptr(d.FD), d.Name)
	defer f.Close()
	what := fmt.Sprintf("descriptor %d", d.FD)
	if d.Name != "" {
		what = fmt.Sprintf("%s socket (descriptor %d)", d.Name, d.FD)
	}
	if sa, err := unix.Getsockname(d.FD); err != nil {
		return nil, fmt.Errorf("%s: %w", what, os.NewSyscallError("getsockname", err))
	} else if _, ok := sa.(*unix.SockaddrUnix); !ok {
		return nil, fmt.Errorf("%s is not a Unix socket; ListenStream= must name a path", what)
	}
	if typ, err := unix.GetsockoptInt(d.FD, unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
		return nil, fmt.Errorf("%s: %w", what, os.NewSyscallError("getsockopt", err))
	} else if typ != unix.SOCK_STREAM {
		return nil, fmt.Errorf("%s is not a stream socket; it must come from ListenStream=", what)
	}
	// Accept=yes passes a connection rather than the listener.
	if on, err := unix.GetsockoptInt(d.FD, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil {
		return nil, fmt.Errorf("%s: %w", what, os.NewSyscallError("getsockopt", err))
	} else if on == 0 {
		return nil, fmt.Errorf("%s is not listening; the socket unit needs Accept=no", what)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	uln, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, errors.New(what + " is not a Unix listener")
	}
	uln.SetUnlinkOnClose(false)
	return uln, nil
}

// ListenEnv returns env less any LISTEN_ variables, plus, with names,
// those that pass len(names) descriptors from ListenFDsStart on, named
// names. LISTEN_PID is not among them: only the process that is to take
// the descriptors knows its pid (see WithListenPID).
func ListenEnv(env []string, names ...string) []string {
	var out []string
	for _, kv := range env {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case envPID, envFDs, envNames:
			continue
		}
		out = append(out, kv)
	}
	if len(names) == 0 {
		return out
	}
	return append(out, envFDs+"="+strconv.Itoa(len(names)), envNames+"="+strings.Join(names, ":"))
}

// WithListenPID returns env with LISTEN_PID set to pid, for a process
// that is about to exec the program the descriptors are for.
func WithListenPID(env []string, pid int) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, envPID+"=") {
			out = append(out, kv)
		}
	}
	return append(out, envPID+"="+strconv.Itoa(pid))
}

// ValidFDName reports whether systemd accepts s as a descriptor name
// (FileDescriptorName=, FDNAME=): 1 to 255 printable ASCII characters,
// none of them ':'.
func ValidFDName(s string) bool {
	if len(s) == 0 || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c > '~' || c == ':' {
			return false
		}
	}
	return true
}
