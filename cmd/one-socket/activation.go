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

// Names of passed descriptors: the sockets, as set with
// FileDescriptorName= in a socket unit or --fdname in
// systemd-socket-activate, and what the daemon puts in systemd's file
// descriptor store (FDNAME=) to find again after a restart.
const (
	fdNameBroker  = "broker"
	fdNameControl = "control"
	fdNameClient  = "client"
	fdNameState   = "state"
)

// activated holds what a service manager passed: the listening sockets
// (either may be nil) and, after a restart under systemd with --fdstore,
// the clients and state description the previous instance put in the
// file descriptor store (fdstore.go). The daemon owns all of it and must
// never unlink the socket files: the service manager created them, or
// keeps them for the next instance.
type activated struct {
	broker, control *net.UnixListener
	clients         []int    // stored client connections, close-on-exec
	state           *os.File // the stored description, or nil
}

// maxListenFDs bounds LISTEN_FDS: the sockets, and a file descriptor
// store that may hold one descriptor per waiting client.
const maxListenFDs = 1 << 24

// takeActivated returns what socket activation passed, or nil when
// nothing was passed to this process. It implements the sd_listen_fds
// protocol: LISTEN_PID must be pid; LISTEN_FDS descriptors start at 3;
// LISTEN_FDNAMES names them. The descriptor named "broker" is the broker
// socket, "control" the control socket, "client" and "state" come from the
// file descriptor store; a single descriptor with another name (or none)
// is the broker socket. It unsets the LISTEN_* variables so that no child
// inherits them, marks the descriptors close-on-exec, and on error closes
// every one of them.
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
	if err != nil || n < 0 || n > maxListenFDs {
		return nil, fmt.Errorf("socket activation: LISTEN_FDS=%q is not a descriptor count", nStr)
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
	roles, err := activationRoles(names)
	if err != nil {
		return fail(err)
	}

	// Close-on-exec first, so that nothing this process starts inherits
	// the service manager's descriptors.
	for i := range n {
		if _, err := unix.FcntlInt(uintptr(listenFDsStart+i), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
			return fail(os.NewSyscallError("fcntl", err))
		}
	}
	act := &activated{}
	for i, role := range roles {
		fd := listenFDsStart + i
		switch role {
		case fdNameClient:
			act.clients = append(act.clients, fd)
			continue
		case fdNameState:
			act.state = os.NewFile(uintptr(fd), fdNameState)
			continue
		}
		ln, err := activatedListener(fd, role)
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

// activationRoles gives each passed descriptor its role from its name.
func activationRoles(names []string) ([]string, error) {
	roles := make([]string, len(names))
	var unnamed []int // not one of the four names
	seen := map[string]bool{}
	for i, name := range names {
		switch name {
		case fdNameBroker, fdNameControl, fdNameState:
			if seen[name] {
				return nil, fmt.Errorf("more than one descriptor named %q", name)
			}
			seen[name] = true
			roles[i] = name
		case fdNameClient:
			roles[i] = name
		default:
			unnamed = append(unnamed, i)
		}
	}
	switch {
	case len(unnamed) == 0:
	case len(unnamed) == 1 && !seen[fdNameBroker]:
		// One socket can only be the broker's, whatever its name:
		// unnamed, "unknown" (systemd-socket-activate), or a socket
		// unit's default name, such as "one-socket.socket".
		roles[unnamed[0]] = fdNameBroker
	default:
		i := unnamed[0]
		if names[i] == "" || names[i] == "unknown" {
			return nil, fmt.Errorf("%d sockets passed and socket %d has no name: "+
				"name them %q and %q (FileDescriptorName= or --fdname)", len(names), i, fdNameBroker, fdNameControl)
		}
		return nil, fmt.Errorf("socket %d is named %q; want %q or %q (FileDescriptorName=)", i, names[i], fdNameBroker, fdNameControl)
	}
	return roles, nil
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

// close closes what was not yet handed on; a nil *activated does
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
	for _, fd := range a.clients {
		unix.Close(fd)
	}
	if a.state != nil {
		a.state.Close()
	}
	a.broker, a.control, a.clients, a.state = nil, nil, nil, nil
}
