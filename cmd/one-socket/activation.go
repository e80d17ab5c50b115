package main

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/systemd"
)

// Names of passed descriptors: the sockets, as set with
// FileDescriptorName= in a socket unit or --fdname in
// systemd-socket-activate, and what the daemon puts in systemd's file
// descriptor store (FDNAME=) to find again after a restart.
const (
	fdNameBroker  = "broker"
	fdNameControl = "control"
	fdNameClient  = "client"
	fdNameState   = "state"
	// roleWaiter is the role of a waiting client's own copy, FDNAME=w<id>
	// (crash.go).
	roleWaiter = "waiter"
)

// activated holds what a service manager passed: the listening sockets
// (either may be nil) and, after a restart under systemd with --fdstore,
// the clients and state description the previous instance put in the
// file descriptor store (fdstore.go), and the waiting clients it kept
// there for a crash (crash.go). The daemon owns all of it and must
// never unlink the socket files: the service manager created them, or
// keeps them for the next instance.
type activated struct {
	broker, control *net.UnixListener
	clients         []int          // stored client connections, close-on-exec
	kept            map[int]uint64 // waiting clients stored one by one: descriptor to id
	state           *os.File       // the stored description, or nil
}

// takeActivated returns what socket activation passed to process pid, or
// nil when nothing was. The descriptor named "broker" is the broker
// socket, "control" the control socket; "client", "state" and w<id> come
// from the file descriptor store; a single descriptor with another name
// (or none) is the broker socket. On error every passed descriptor is
// closed.
func takeActivated(pid int) (*activated, error) {
	ds, err := systemd.ListenFDs(pid)
	if err != nil || len(ds) == 0 {
		return nil, err
	}
	names := make([]string, len(ds))
	for i, d := range ds {
		names[i] = d.Name
	}
	roles, err := activationRoles(names)
	if err != nil {
		systemd.CloseAll(ds)
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	act := &activated{}
	for i, role := range roles {
		d := ds[i]
		switch role {
		case fdNameClient:
			act.clients = append(act.clients, d.FD)
			continue
		case roleWaiter:
			if act.kept == nil {
				act.kept = make(map[int]uint64)
			}
			act.kept[d.FD], _ = waiterID(d.Name)
			continue
		case fdNameState:
			act.state = os.NewFile(uintptr(d.FD), fdNameState)
			continue
		}
		d.Name = role
		ln, err := systemd.UnixListener(d)
		if err != nil {
			act.close()
			systemd.CloseAll(ds[i+1:])
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
			if _, ok := waiterID(name); ok {
				roles[i] = roleWaiter
				continue
			}
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
	for fd := range a.kept {
		unix.Close(fd)
	}
	if a.state != nil {
		a.state.Close()
	}
	a.broker, a.control, a.clients, a.kept, a.state = nil, nil, nil, nil, nil
}
