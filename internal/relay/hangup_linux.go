package relay

import (
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/scm"
)

// watchHangUps watches a and b until the returned stop is called. When
// one's peer has closed its socket altogether (POLLHUP: both directions
// shut), the other connection's receiving side is shut down, which ends
// the pump that would carry its data to nobody and makes its peer's sends
// fail, as they would on a direct connection. The Go poller reports
// readiness, not hang-ups, so a thread of its own polls duplicates of
// the two descriptors and an eventfd that stop signals.
func watchHangUps(a, b *net.UnixConn) (stop func(), err error) {
	fa, err := scm.Dup(a)
	if err != nil {
		return nil, err
	}
	fb, err := scm.Dup(b)
	if err != nil {
		unix.Close(fa)
		return nil, err
	}
	ev, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(fa)
		unix.Close(fb)
		return nil, os.NewSyscallError("eventfd", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer unix.Close(fa)
		defer unix.Close(fb)
		conns := [2]*net.UnixConn{a, b}
		// Events 0: poll reports only POLLHUP and POLLERR for a socket.
		pfd := []unix.PollFd{{Fd: int32(fa)}, {Fd: int32(fb)}, {Fd: int32(ev), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(pfd, -1); err != nil {
				if err == unix.EINTR {
					continue
				}
				return
			}
			if pfd[2].Revents != 0 {
				return
			}
			for i := 0; i < 2; i++ {
				if pfd[i].Revents&unix.POLLHUP != 0 {
					conns[1-i].CloseRead()
					pfd[i].Fd = -1 // reported once; poll skips it now
				}
			}
		}
	}()
	return func() {
		unix.Write(ev, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		<-done
		unix.Close(ev)
	}, nil
}
