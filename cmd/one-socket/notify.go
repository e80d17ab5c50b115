package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/broker"
)

// statusInterval is how often the daemon refreshes the STATUS= line that
// `systemctl status` shows, when the counters changed.
const statusInterval = 2 * time.Second

// notifier sends sd_notify(3) messages to the service manager. A nil
// *notifier, for a daemon not started by one, sends nothing.
type notifier struct {
	addr *net.UnixAddr

	mu   sync.Mutex
	stop chan struct{} // closes the status loop; nil when none runs
	done chan struct{}
}

// newNotifier reads and unsets NOTIFY_SOCKET, so that no child sends
// messages in the daemon's name, and returns a notifier for it, or nil
// when it is unset. Only Unix datagram sockets (a path or "@name") are
// supported; other kinds (vsock:) are reported as an error.
func newNotifier() (*notifier, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	os.Unsetenv("NOTIFY_SOCKET")
	if path == "" {
		return nil, nil
	}
	if !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "@") {
		return nil, fmt.Errorf("NOTIFY_SOCKET=%q: only Unix socket paths and @names are supported", path)
	}
	return &notifier{addr: &net.UnixAddr{Name: path, Net: "unixgram"}}, nil
}

// send sends one message: lines of VARIABLE=value.
func (n *notifier) send(state string) error {
	if n == nil {
		return nil
	}
	// A fresh socket per message, as sd_notify does: messages are rare and
	// nothing stays open for a manager that restarts.
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// statusLine is the STATUS= text for the broker's counters now.
func statusLine(s broker.Stats) string {
	return fmt.Sprintf("STATUS=waiting %d, paired %d, conns %d", s.Waiting, s.Paired, s.Conns)
}

// ready reports readiness with the first status line, and from then on
// refreshes the status every statusInterval while it changes, until
// stopping is called. onErr receives send failures.
func (n *notifier) ready(stats func() broker.Stats, onErr func(error)) {
	if n == nil {
		return
	}
	last := statusLine(stats())
	if err := n.send("READY=1\n" + last); err != nil {
		onErr(err)
	}
	n.mu.Lock()
	n.stop, n.done = make(chan struct{}), make(chan struct{})
	stop, done := n.stop, n.done
	n.mu.Unlock()
	go func() {
		defer close(done)
		t := time.NewTicker(statusInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			if s := statusLine(stats()); s != last {
				last = s
				if err := n.send(s); err != nil {
					onErr(err)
				}
			}
		}
	}()
}

// stopping ends the status updates and tells the manager the daemon is
// shutting down.
func (n *notifier) stopping(onErr func(error)) {
	if n == nil {
		return
	}
	n.mu.Lock()
	stop, done := n.stop, n.done
	n.stop = nil
	n.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	if err := n.send("STOPPING=1\nSTATUS=stopping"); err != nil {
		onErr(err)
	}
}

// sendFDs sends one message with fds attached (SCM_RIGHTS), for FDSTORE=1.
// The caller keeps its descriptors; the manager receives duplicates.
func (n *notifier) sendFDs(state string, fds []int) error {
	if n == nil {
		return errors.New("sd_notify: no NOTIFY_SOCKET")
	}
	// Raw calls: the net package refuses WriteMsgUnix on a connected
	// datagram socket, and sendto needs none.
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", os.NewSyscallError("socket", err))
	}
	defer unix.Close(s)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	// x/sys/unix makes a leading '@' the abstract namespace, as systemd does.
	if err := unix.Sendmsg(s, []byte(state), oob, &unix.SockaddrUnix{Name: n.addr.Name}, unix.MSG_NOSIGNAL); err != nil {
		return fmt.Errorf("sd_notify: %w", os.NewSyscallError("sendmsg", err))
	}
	return nil
}

// barrier waits, up to timeout, until the manager has read every message
// sent before it (sd_notify_barrier(3)): it sends BARRIER=1 with the write
// end of a pipe, which the manager closes once it got there.
func (n *notifier) barrier(timeout time.Duration) error {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return os.NewSyscallError("pipe2", err)
	}
	defer unix.Close(p[0])
	err := n.sendFDs("BARRIER=1", p[1:])
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
