package handover

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
// descriptor store (FDNAME=) to find again after a restart (fdstore.go).
const (
	FDNameBroker  = "broker"
	FDNameControl = "control"
	FDNameClient  = "client"
	FDNameState   = "state"
	// roleWaiter is the role of a waiting client's own copy, FDNAME=w<id>
	// (crash.go).
	roleWaiter = "waiter"
)

// Passed holds what a service manager passed: the listening sockets
// (either may be nil) and, after a restart under systemd with --fdstore,
// the clients and state description the previous instance put in the
// file descriptor store, and the waiting clients it kept there for a
// crash, which TakeStored takes. The caller owns all of it and must never
// unlink the socket files: the service manager created them, or keeps
// them for the next instance.
type Passed struct {
	Broker, Control *net.UnixListener
	clients         []int          // stored client connections, close-on-exec
	kept            map[int]uint64 // waiting clients stored one by one: descriptor to id
	state           *os.File       // the stored description, or nil
}

// TakePassed returns what socket activation passed to process pid, or nil
// when nothing was. The descriptor named "broker" is the broker socket,
// "control" the control socket; "client", "state" and w<id> come from the
// file descriptor store; a single descriptor with another name (or none)
// is the broker socket. On error every passed descriptor is closed.
func TakePassed(pid int) (*Passed, error) {
	ds, err := systemd.ListenFDs(pid)
	if err != nil || len(ds) == 0 {
		return nil, err
	}
	names := make([]string, len(ds))
	for i, d := range ds {
		names[i] = d.Name
	}
	roles, err := passedRoles(names)
	if err != nil {
		systemd.CloseAll(ds)
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	p := &Passed{}
	for i, role := range roles {
		d := ds[i]
		switch role {
		case FDNameClient:
			p.clients = append(p.clients, d.FD)
			continue
		case roleWaiter:
			if p.kept == nil {
				p.kept = make(map[int]uint64)
			}
			p.kept[d.FD], _ = WaiterID(d.Name)
			continue
		case FDNameState:
			p.state = os.NewFile(uintptr(d.FD), FDNameState)
			continue
		}
		d.Name = role
		ln, err := systemd.UnixListener(d)
		if err != nil {
			p.Close()
			systemd.CloseAll(ds[i+1:])
			return nil, fmt.Errorf("socket activation: %w", err)
		}
		if role == FDNameBroker {
			p.Broker = ln
		} else {
			p.Control = ln
		}
	}
	return p, nil
}

// passedRoles gives each passed descriptor its role from its name.
func passedRoles(names []string) ([]string, error) {
	roles := make([]string, len(names))
	var unnamed []int // not one of the four names
	seen := map[string]bool{}
	for i, name := range names {
		switch name {
		case FDNameBroker, FDNameControl, FDNameState:
			if seen[name] {
				return nil, fmt.Errorf("more than one descriptor named %q", name)
			}
			seen[name] = true
			roles[i] = name
		case FDNameClient:
			roles[i] = name
		default:
			if _, ok := WaiterID(name); ok {
				roles[i] = roleWaiter
				continue
			}
			unnamed = append(unnamed, i)
		}
	}
	switch {
	case len(unnamed) == 0:
	case len(unnamed) == 1 && !seen[FDNameBroker]:
		// One socket can only be the broker's, whatever its name:
		// unnamed, "unknown" (systemd-socket-activate), or a socket
		// unit's default name, such as "one-socket.socket".
		roles[unnamed[0]] = FDNameBroker
	default:
		i := unnamed[0]
		if names[i] == "" || names[i] == "unknown" {
			return nil, fmt.Errorf("%d sockets passed and socket %d has no name: "+
				"name them %q and %q (FileDescriptorName= or --fdname)", len(names), i, FDNameBroker, FDNameControl)
		}
		return nil, fmt.Errorf("socket %d is named %q; want %q or %q (FileDescriptorName=)", i, names[i], FDNameBroker, FDNameControl)
	}
	return roles, nil
}

// Close closes what was not yet taken; a nil *Passed does nothing.
func (p *Passed) Close() {
	if p == nil {
		return
	}
	for _, ln := range []*net.UnixListener{p.Broker, p.Control} {
		if ln != nil {
			ln.Close()
		}
	}
	for _, fd := range p.clients {
		unix.Close(fd)
	}
	for fd := range p.kept {
		unix.Close(fd)
	}
	if p.state != nil {
		p.state.Close()
	}
	p.Broker, p.Control, p.clients, p.kept, p.state = nil, nil, nil, nil, nil
}
