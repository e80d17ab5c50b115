package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// listenFDsStart is the first descriptor a service manager passes
// (SD_LISTEN_FDS_START in sd-daemon.h).
const listenFDsStart = 3

// Names of activated sockets, as set with FileDescriptorName= in a socket
// unit or --fdname in systemd-socket-activate.
const (
	fdNameBroker  = "broker"
	fdNameControl = "control"
)

// activated holds the listening sockets a service manager passed; either
// may be nil. The daemon owns them and must never unlink their files: the
// service manager created them and keeps them across restarts.
type activated struct {
	broker, control *net.UnixListener
}

// takeActivated returns the sockets passed by socket activation, or nil
// when there are none for this process. It implements the sd_listen_fds
// protocol: LISTEN_PID must be pid; LISTEN_FDS descriptors start at 3;
// LISTEN_FDNAMES names them. The descriptor named "broker" is the broker
// socket and "control" the control socket; a single descriptor not named
// "control" is the broker socket, whatever its name. It unsets the
// LISTEN_* variables so that no child inherits them, marks the
// descriptors close-on-exec, and on error closes every one of them.
func takeActivated(pid int) (*activated, error) {
	pidStr, nStr := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	namesStr, haveNames := os.LookupEnv("LISTEN_FDNAMES")
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v)
	}
	if pidStr == "" || nStr == "" {
		return nil, nil
	}
	if p, err := strconv.Atoi(pidStr); err != nil || p != pid {
		// Meant for another process (our parent, say): not ours to touch.
		return nil, nil
	}
	n, err := strconv.Atoi(nStr)
	if err != nil || n < 0 || n > 64 {
		return nil, fmt.Errorf("socket activation: LISTEN_FDS=%q is not a small count", nStr)
	}
	if n == 0 {
		return nil, nil
	}
	fail := func(err error) (*activated, error) {
		for i := range n {
			unix.Close(listenFDsStart + i)
		}
		return nil, fmt.Errorf("socket activation: %w", err)
	}

	names := make([]string, n)
	if haveNames {
		names = strings.Split(namesStr, ":")
		if len(names) != n {
			return fail(fmt.Errorf("LISTEN_FDNAMES names %d sockets but LISTEN_FDS is %d", len(names), n))
		}
	}
	roles := make([]string, n)
	seen := map[string]bool{}
	for i, name := range names {
		switch {
		case name == fdNameBroker || name == fdNameControl:
			roles[i] = name
		case n == 1:
			// One socket can only be the broker's, whatever its name:
			// unnamed, "unknown" (systemd-socket-activate), or a socket
			// unit's default name, such as "one-socket.socket".
			roles[i] = fdNameBroker
		case name == "" || name == "unknown":
			return fail(fmt.Errorf("%d sockets passed and socket %d has no name: "+
				"name them %q and %q (FileDescriptorName= or --fdname)", n, i, fdNameBroker, fdNameControl))
		default:
			return fail(fmt.Errorf("socket %d is named %q; want %q or %q (FileDescriptorName=)", i, name, fdNameBroker, fdNameControl))
		}
		if seen[roles[i]] {
			return fail(fmt.Errorf("more than one socket named %q", roles[i]))
		}
		seen[roles[i]] = true
	}

	// Close-on-exec first, so that nothing this process starts inherits
	// the service manager's sockets.
	for i := range n {
		if _, err := unix.FcntlInt(uintptr(listenFDsStart+i), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
			return fail(os.NewSyscallError("fcntl", err))
		}
	}
	act := &activated{}
	for i, role := range roles {
		ln, err := activatedListener(listenFDsStart+i, role)
		if err != nil {
			act.close()
			for j := i + 1; j < n; j++ {
				unix.Close(listenFDsStart + j)
			}
			return nil, fmt.Errorf("socket activation: %w", err)
		}
		if role == fdNameBroker {
			act.broker = ln
		} else {
			act.control = ln
		}
	}
	return act, nil
}

// activatedListener checks that fd is a listening Unix stream socket and
// returns it as a listener. The descriptor fd itself is always closed: the
// listener holds a duplicate.
func activatedListener(fd int, role string) (*net.UnixListener, error) {
	f := os.NewFile(uintptr(fd), role)
	defer f.Close()
	if sa, err := unix.Getsockname(fd); err != nil {
		return nil, fmt.Errorf("%s socket (descriptor %d): %w", role, fd, os.NewSyscallError("getsockname", err))
	} else if _, ok := sa.(*unix.SockaddrUnix); !ok {
		return nil, fmt.Errorf("%s socket (descriptor %d) is not a Unix socket; one-socket needs ListenStream=/path", role, fd)
	}
	if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
		return nil, fmt.Errorf("%s socket (descriptor %d): %w", role, fd, os.NewSyscallError("getsockopt", err))
	} else if typ != unix.SOCK_STREAM {
		return nil, fmt.Errorf("%s socket (descriptor %d) is not a stream socket; one-socket needs ListenStream=", role, fd)
	}
	// Accept=yes would pass a connection rather than the listener.
	if on, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil {
		return nil, fmt.Errorf("%s socket (descriptor %d): %w", role, fd, os.NewSyscallError("getsockopt", err))
	} else if on == 0 {
		return nil, fmt.Errorf("%s socket (descriptor %d) is not listening; one-socket needs Accept=no", role, fd)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("%s socket (descriptor %d): %w", role, fd, err)
	}
	uln, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, errors.New(role + " socket is not a Unix listener")
	}
	return uln, nil
}

// listenerPath returns the address a listener is bound to: a file path,
// or "@name" for an abstract socket.
func listenerPath(ln *net.UnixListener) string {
	if a, ok := ln.Addr().(*net.UnixAddr); ok && a.Name != "" {
		return a.Name
	}
	return "(unnamed)"
}

// close closes the sockets not yet handed on; a nil *activated does
// nothing.
func (a *activated) close() {
	if a == nil {
		return
	}
	for _, ln := range []*net.UnixListener{a.broker, a.control} {
		if ln != nil {
			ln.Close()
		}
	}
	a.broker, a.control = nil, nil
}
