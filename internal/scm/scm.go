// Package scm is what every part of One Socket needs to pass descriptors
// over Unix sockets with SCM_RIGHTS: the kernel's limit, the control
// buffer that holds it, and reading descriptors out of control data.
package scm

import (
	"errors"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// MaxFD is the kernel's limit on descriptors in one message (SCM_MAX_FD):
// a send with more fails with EINVAL, and one read returns no more.
const MaxFD = 253

// OOBSize is the control buffer that holds MaxFD descriptors,
// unix.CmsgSpace(MaxFD*4) as a constant: a receive with room for them all
// gets every descriptor sent instead of having the kernel drop some.
const OOBSize = unix.SizeofCmsghdr + (MaxFD*4+7)&^7

// ErrNotRights reports control data other than SCM_RIGHTS, which nothing
// here asks for.
var ErrNotRights = errors.New("control data other than SCM_RIGHTS")

// Rights returns the descriptors in the control data oob, which the caller
// then owns. It also returns every descriptor it could read when the data
// holds something else (ErrNotRights) or cannot be parsed, so that the
// caller can close them.
func Rights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, os.NewSyscallError("parsing control data", err)
	}
	var fds []int
	var bad error
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			bad = ErrNotRights
			continue
		}
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			bad = os.NewSyscallError("parsing SCM_RIGHTS", err)
			continue
		}
		fds = append(fds, got...)
	}
	return fds, bad
}

// CloseAll closes every descriptor in fds.
func CloseAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// Dup returns a close-on-exec duplicate of c's descriptor, which the
// caller owns: to pass it on, to hand it to code outside the Go poller,
// or to poll it for hang-ups.
func Dup(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", derr)
	}
	return fd, nil
}

// ErrNotUnix reports a descriptor that was to be a Unix socket and is
// something else.
var ErrNotUnix = errors.New("the descriptor is not a Unix socket")

// UnixConn makes the received descriptor in f a *net.UnixConn, which the
// caller owns; it closes f either way (the connection holds a duplicate).
func UnixConn(f *os.File) (*net.UnixConn, error) {
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, ErrNotUnix
	}
	return uc, nil
}
