package relay

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// An End is one of the connections Relay joins, named for its errors.
type End struct {
	Conn *net.UnixConn
	Name string // such as "the broker's socket" or "qemu-storage-daemon"
}

// An Error says which way and which step of a relay failed.
type Error struct {
	Op  string // "read" or "write"
	End string // the End's name
	Err error
}

func (e *Error) Error() string {
	prep := "from"
	if e.Op == "write" {
		prep = "to"
	}
	return fmt.Sprintf("relay: %s %s %s: %v", e.Op, prep, e.End, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// PeerGone reports whether err only says that a program closed its end
// while data was still on its way to or from it (EPIPE, ECONNRESET): what
// a direct connection would have shown its peer, not a fault of the relay.
func PeerGone(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// Relay forwards a to b and b to a, descriptors included, until both
// directions have ended, and returns the errors that ended them (nil when
// both saw the end of their stream). It shuts down each connection's
// sending side when the other's data ends, so half-closes carry over; once
// a connection's peer has closed it altogether, nothing can reach that
// peer any more and Relay stops reading the other. The caller still owns
// and closes a and b; Relay closes each descriptor it received once it has
// forwarded it, or failed to.
func Relay(a, b End) error {
	stop, err := watchHangUps(a.Conn, b.Conn)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	var errAB, errBA error
	wg.Add(2)
	go func() { defer wg.Done(); errAB = pump(a, b) }()
	go func() { defer wg.Done(); errBA = pump(b, a) }()
	wg.Wait()
	stop()
	return errors.Join(errAB, errBA)
}

// pump forwards src to dst until src's data ends or dst stops taking it.
func pump(src, dst End) error {
	r, err := newReader(src.Conn)
	if err != nil {
		return &Error{Op: "read", End: src.Name, Err: err}
	}
	defer r.close()
	wc, err := dst.Conn.SyscallConn()
	if err != nil {
		return &Error{Op: "write", End: dst.Name, Err: err}
	}
	for {
		c, err := r.read()
		if err != nil {
			dst.Conn.CloseWrite()
			if err == io.EOF {
				return nil
			}
			return &Error{Op: "read", End: src.Name, Err: err}
		}
		err = send(wc, c)
		closeAll(c.fds)
		if err != nil {
			// Whoever sends into src would only fill a queue nobody
			// reads: make their sends fail, as dst's peer's did.
			src.Conn.CloseRead()
			return &Error{Op: "write", End: dst.Name, Err: err}
		}
	}
}

// send writes all of c, its descriptors with its first byte. It keeps
// ownership of nothing: the caller closes c's descriptors.
func send(rc syscall.RawConn, c chunk) error {
	if c.piped > 0 {
		return sendPiped(rc, c)
	}
	data := c.data
	var oob []byte
	if len(c.fds) > 0 {
		oob = unix.UnixRights(c.fds...)
	}
	var serr error
	err := rc.Write(func(fd uintptr) bool {
		for len(data) > 0 {
			n, err := unix.SendmsgN(int(fd), data, oob, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
			switch {
			case err == unix.EAGAIN:
				return false
			case err == unix.EINTR:
				continue
			case err != nil:
				serr = os.NewSyscallError("sendmsg", err)
				return true
			}
			// A short send has taken the descriptors with its first
			// byte; the rest goes without them.
			data, oob = data[n:], nil
		}
		return true
	})
	if err != nil {
		return err
	}
	return serr
}

// sendPiped splices the c.piped bytes waiting in c.pipe to the socket.
func sendPiped(rc syscall.RawConn, c chunk) error {
	left := c.piped
	var serr error
	err := rc.Write(func(fd uintptr) bool {
		for left > 0 {
			n, err := unix.Splice(c.pipe, nil, int(fd), nil, left, unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
			switch {
			case err == unix.EAGAIN:
				return false // the pipe holds them: the socket is full
			case err == unix.EINTR:
				continue
			case err != nil:
				serr = os.NewSyscallError("splice", err)
				return true
			}
			left -= int(n)
		}
		return true
	})
	if err != nil {
		return err
	}
	return serr
}
