package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const envNotify = "NOTIFY_SOCKET"

// ErrNoManager is returned for messages that need a service manager, such
// as FDSTORE=1, from a nil *Notifier.
var ErrNoManager = errors.New("sd_notify: no service manager (NOTIFY_SOCKET is unset)")

// Notifier sends sd_notify(3) messages to the service manager. A nil
// *Notifier, for a process no manager started, sends nothing, and its
// methods succeed except those that would hand descriptors over.
type Notifier struct {
	addr string // a path, or "@name" for the abstract namespace

	// sock is the datagram socket every message goes out on, made at the
	// first; it connects to nothing, so a manager that re-executes
	// itself (and binds its socket again) is found by its address.
	sockOnce sync.Once
	sock     int
	sockErr  error

	mu   sync.Mutex
	stop chan struct{} // ends the status loop; nil when none runs
	done chan struct{}
}

// NewNotifier reads and unsets NOTIFY_SOCKET, so that no child sends
// messages in this process's name, and returns a Notifier for it, or nil
// when it is unset. Only Unix datagram sockets (a path or "@name") are
// supported; other kinds (vsock:) are an error.
func NewNotifier() (*Notifier, error) {
	addr := os.Getenv(envNotify)
	os.Unsetenv(envNotify)
	if addr == "" {
		return nil, nil
	}
	if !strings.HasPrefix(addr, "/") && !strings.HasPrefix(addr, "@") {
		return nil, fmt.Errorf("%s=%q: only Unix socket paths and @names are supported", envNotify, addr)
	}
	return &Notifier{addr: addr}, nil
}

// Env returns the NOTIFY_SOCKET setting for a program that takes this
// process's place (by exec), or nil for a nil Notifier.
func (n *Notifier) Env() []string {
	if n == nil {
		return nil
	}
	return []string{envNotify + "=" + n.addr}
}

// Notify sends one message: lines of VARIABLE=value.
func (n *Notifier) Notify(state string) error {
	if n == nil {
		return nil
	}
	return n.send(state, nil, 0)
}

// NotifyFDs sends one message with fds attached (SCM_RIGHTS). The caller
// keeps its descriptors; the manager receives duplicates.
func (n *Notifier) NotifyFDs(state string, fds []int) error {
	if n == nil {
		return ErrNoManager
	}
	return n.send(state, fds, 0)
}

// sendTimeout bounds a send to a manager whose queue is full: a daemon
// that stores each waiting client sends a message per client, and must
// not hang for good behind a manager that stopped reading.
const sendTimeout = 5 * time.Second

// socket returns the socket messages go out on, made at the first call.
func (n *Notifier) socket() (int, error) {
	n.sockOnce.Do(func() {
		s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			n.sock, n.sockErr = -1, fmt.Errorf("sd_notify: %w", os.NewSyscallError("socket", err))
			return
		}
		tv := unix.NsecToTimeval(int64(sendTimeout))
		if err := unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
			unix.Close(s)
			n.sock, n.sockErr = -1, fmt.Errorf("sd_notify: %w", os.NewSyscallError("setsockopt", err))
			return
		}
		n.sock = s
	})
	return n.sock, n.sockErr
}

// Close closes the socket messages went out on; the Notifier must not be
// used afterwards. A nil Notifier does nothing.
func (n *Notifier) Close() error {
	if n == nil {
		return nil
	}
	n.sockOnce.Do(func() { n.sock, n.sockErr = -1, net.ErrClosed })
	if n.sock < 0 {
		return nil
	}
	err := unix.Close(n.sock)
	n.sock, n.sockErr = -1, net.ErrClosed
	return err
}

func (n *Notifier) send(state string, fds []int, flags int) error {
	s, err := n.socket()
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	// x/sys/unix makes a leading '@' the abstract namespace, as systemd
	// does.
	if err := unix.Sendmsg(s, []byte(state), oob, &unix.SockaddrUnix{Name: n.addr}, unix.MSG_NOSIGNAL|flags); err != nil {
		return fmt.Errorf("sd_notify: %w", os.NewSyscallError("sendmsg", err))
	}
	return nil
}

// Store puts duplicates of fds into the manager's file descriptor store
// under name (FDSTORE=1, FDNAME=); the caller keeps its descriptors.
func (n *Notifier) Store(name string, fds []int) error {
	return n.NotifyFDs("FDSTORE=1\nFDNAME="+name, fds)
}

// StoreRemove removes every descriptor named name from the store
// (FDSTOREREMOVE=1).
func (n *Notifier) StoreRemove(name string) error {
	return n.Notify("FDSTOREREMOVE=1\nFDNAME=" + name)
}

// StoreNow is Store that does not wait for room in the manager's queue:
// when it is full, the error wraps unix.EAGAIN and nothing was sent.
func (n *Notifier) StoreNow(name string, fds []int) error {
	if n == nil {
		return ErrNoManager
	}
	return n.send("FDSTORE=1\nFDNAME="+name, fds, unix.MSG_DONTWAIT)
}

// StoreRemoveNow is StoreRemove that does not wait, as StoreNow.
func (n *Notifier) StoreRemoveNow(name string) error {
	if n == nil {
		return nil
	}
	return n.send("FDSTOREREMOVE=1\nFDNAME="+name, nil, unix.MSG_DONTWAIT)
}

// Barrier waits, up to timeout, until the manager has read every message
// sent before it (sd_notify_barrier(3)): it sends BARRIER=1 with the write
// end of a pipe, which the manager closes once it got there.
func (n *Notifier) Barrier(timeout time.Duration) error {
	if n == nil {
		return nil
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return os.NewSyscallError("pipe2", err)
	}
	defer unix.Close(p[0])
	err := n.send("BARRIER=1", p[1:], 0)
	unix.Close(p[1])
	if err != nil {
		return err
	}
	fds := []unix.PollFd{{Fd: int32(p[0]), Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	for {
		k, err := unix.Poll(fds, int(max(time.Until(deadline).Milliseconds(), 0)))
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return os.NewSyscallError("poll", err)
		case k == 0:
			return fmt.Errorf("sd_notify: the service manager did not answer BARRIER=1 within %v", timeout)
		}
		return nil
	}
}

// Ready reports readiness (READY=1) with the first STATUS= line that
// status returns, and from then on, every interval, sends the status
// again when it changed, until Stopping. onErr receives send failures.
func (n *Notifier) Ready(status func() string, interval time.Duration, onErr func(error)) {
	if n == nil {
		return
	}
	last := status()
	if err := n.Notify("READY=1\nSTATUS=" + last); err != nil {
		onErr(err)
	}
	n.mu.Lock()
	if n.stop != nil {
		close(n.stop)
		<-n.done
	}
	n.stop, n.done = make(chan struct{}), make(chan struct{})
	stop, done := n.stop, n.done
	n.mu.Unlock()
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			if s := status(); s != last {
				last = s
				if err := n.Notify("STATUS=" + s); err != nil {
					onErr(err)
				}
			}
		}
	}()
}

// Stopping ends Ready's status updates and tells the manager that the
// process is shutting down (STOPPING=1).
func (n *Notifier) Stopping(onErr func(error)) {
	if n == nil {
		return
	}
	n.stopStatus()
	if err := n.Notify("STOPPING=1\nSTATUS=stopping"); err != nil {
		onErr(err)
	}
}

// Reloading ends Ready's status updates and tells the manager that the
// process is reloading (RELOADING=1), as before an exec of a new binary;
// Ready ends it.
func (n *Notifier) Reloading() error {
	if n == nil {
		return nil
	}
	n.stopStatus()
	// MONOTONIC_USEC: systemd 253 and later want it with
	// Type=notify-reload; older ones ignore it.
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return n.Notify("RELOADING=1")
	}
	return n.Notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000))
}

func (n *Notifier) stopStatus() {
	n.mu.Lock()
	stop, done := n.stop, n.done
	n.stop, n.done = nil, nil
	n.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}
