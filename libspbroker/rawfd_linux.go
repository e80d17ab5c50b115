package libspbroker

import (
	"net"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The functions in this file work on raw descriptors that the caller owns,
// for hosts with their own event loop and for the C library, which is a
// thin layer over them. They never touch the Go runtime's poller.

// Connect connects to the broker socket at path and returns the new
// descriptor, close-on-exec, which the caller owns. A path starting with
// '@' names a socket in Linux's abstract namespace.
//
// With nonblock the descriptor is O_NONBLOCK and Connect does not wait. A
// Unix socket connects at once or not at all: when the broker's backlog is
// full, a nonblocking Connect fails with EAGAIN (the socket could never
// complete its connection), where a blocking one waits for room.
func Connect(path string, nonblock bool) (int, error) {
	addr := &net.UnixAddr{Name: path, Net: "unix"}
	typ := unix.SOCK_STREAM | unix.SOCK_CLOEXEC
	if nonblock {
		typ |= unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(unix.AF_UNIX, typ, 0)
	if err != nil {
		return -1, opError(OpConnect, addr, os.NewSyscallError("socket", err))
	}
	sa := &unix.SockaddrUnix{Name: path}
	for {
		// A Unix socket's connect that returns EINTR has not connected,
		// so trying again is safe.
		err = unix.Connect(fd, sa)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil && !(nonblock && err == unix.EINPROGRESS) {
		unix.Close(fd)
		return -1, opError(OpConnect, addr, os.NewSyscallError("connect", err))
	}
	return fd, nil
}

// SendGetPair sends a GET_PAIR for key (1 to 1024 bytes) and mode on the
// broker connection fd; the caller keeps ownership of fd. An invalid key or
// mode is reported, wrapping ErrInvalidKey or ErrInvalidMode, before
// anything is sent.
//
// On a nonblocking fd with no room for the message SendGetPair returns
// EAGAIN having sent nothing. A message it has started it finishes, polling
// for up to a second, since the broker cannot use half a request; if that
// fails the caller must close fd.
func SendGetPair(fd int, key []byte, mode Mode) error {
	var buf [MessageSize]byte
	if err := encodeGetPair(&buf, key, mode); err != nil {
		return opError(OpSend, nil, err)
	}
	var deadline time.Time
	for sent := 0; sent < len(buf); {
		n, err := unix.SendmsgN(fd, buf[sent:], nil, nil, unix.MSG_NOSIGNAL)
		switch {
		case err == nil:
			sent += n // a blocking socket may still send short: go on
		case err == unix.EINTR:
		case err == unix.EAGAIN && sent > 0:
			if deadline.IsZero() {
				deadline = time.Now().Add(restTimeout)
			}
			if err := waitFD(fd, unix.POLLOUT, deadline); err != nil {
				return opError(OpSend, nil, err)
			}
		default:
			return opError(OpSend, nil, os.NewSyscallError("sendmsg", err))
		}
	}
	return nil
}

// ReceiveSetPair reads the broker's SET_PAIR from fd and returns the
// descriptor it carried, close-on-exec, which the caller owns. It does not
// close fd, which stays the caller's.
//
// The message is read whole however its bytes arrive, in 1040 or 1044
// bytes, and validated; descriptors beyond the one expected, and all of them
// on error, are closed. On a nonblocking fd where nothing has arrived yet it
// returns an error matching unix.EAGAIN and has no other effect; once a
// message has started it waits up to a second for the rest (also on a
// blocking fd) and then fails with an error matching unix.ETIMEDOUT.
//
// Errors are *net.OpError values with Op "receive". An invalid message
// matches ErrProtocol (the C library's EPROTO). A broker that closes the
// connection before a whole message gives an error matching both
// io.ErrUnexpectedEOF and unix.ECONNRESET; the kernel may also report that
// case as a plain ECONNRESET.
func ReceiveSetPair(fd int) (int, error) {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return -1, opError(OpReceive, nil, os.NewSyscallError("fcntl", err))
	}
	nonblock := fl&unix.O_NONBLOCK != 0
	if nonblock {
		// Look before taking. The peek has no control buffer, so it
		// installs no descriptors: a caller that finds nothing yet sees
		// EAGAIN and no side effect at all.
		var b [1]byte
		n, _, _, err := recvmsg(fd, b[:], nil, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err != nil {
			return -1, opError(OpReceive, nil, os.NewSyscallError("recvmsg", err))
		}
		if n == 0 {
			return -1, opError(OpReceive, nil, &closedError{})
		}
	}
	var deadline time.Time
	peer, err := readSetPair(func(p, oob []byte, st stage) (int, int, int, error) {
		flags := unix.MSG_CMSG_CLOEXEC
		if nonblock || st != stageFirst {
			flags |= unix.MSG_DONTWAIT
		}
		for {
			n, oobn, rflags, err := recvmsg(fd, p, oob, flags)
			if err == unix.EAGAIN && st == stageRest {
				if deadline.IsZero() {
					deadline = time.Now().Add(restTimeout)
				}
				if err := waitFD(fd, unix.POLLIN, deadline); err != nil {
					return 0, 0, 0, err
				}
				continue
			}
			if err != nil {
				return 0, 0, 0, os.NewSyscallError("recvmsg", err)
			}
			return n, oobn, rflags, nil
		}
	})
	if err != nil {
		return -1, opError(OpReceive, nil, err)
	}
	return peer, nil
}

// recvmsg is recvmsg(2) on one buffer, retrying EINTR. Unlike unix.Recvmsg
// it asks for no sender address, which a stream socket does not need.
func recvmsg(fd int, p, oob []byte, flags int) (n, oobn, rflags int, err error) {
	var iov unix.Iovec
	iov.Base = &p[0]
	iov.SetLen(len(p))
	var msg unix.Msghdr
	msg.Iov = &iov
	msg.SetIovlen(1)
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	for {
		r, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
		switch e {
		case 0:
			return int(r), int(msg.Controllen), int(msg.Flags), nil
		case unix.EINTR:
			continue
		}
		return 0, 0, 0, e
	}
}

// waitFD polls fd for events until deadline, which passing yields a
// stalledError.
func waitFD(fd int, events int16, deadline time.Time) error {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: events}}
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return stalledError{}
		}
		ms := int((left + time.Millisecond - 1) / time.Millisecond)
		n, err := unix.Poll(pfd, ms)
		switch {
		case err == unix.EINTR:
		case err != nil:
			return os.NewSyscallError("poll", err)
		case n > 0:
			return nil // ready, or an error or hang-up the next call reports
		}
	}
}

// opError wraps err, if any, as a *net.OpError for op on addr (nil when
// unknown, as for a caller's raw descriptor).
func opError(op string, addr *net.UnixAddr, err error) error {
	if err == nil {
		return nil
	}
	oe := &net.OpError{Op: op, Net: "unix", Err: err}
	if addr != nil {
		oe.Addr = addr // never a typed nil in the interface
	}
	return oe
}
