package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/libspbroker"
)

// Both ends use blocking descriptors and plain system calls, as a C
// program would: no poller between the socket and the clock, so that what
// differs between configurations is the path, not the endpoints.

// brokerPair asks the broker at sock for key's peer and returns a blocking
// descriptor of the pair's end.
func brokerPair(sock, key string, mode libspbroker.Mode, wait time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	f, err := libspbroker.GetPair(ctx, sock, []byte(key), mode)
	if err != nil {
		return -1, err
	}
	defer f.Close()
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("fcntl", err)
	}
	return fd, prepare(fd)
}

// prepare makes fd blocking, with send and receive timeouts so that a
// stuck peer fails a run instead of hanging it.
func prepare(fd int) error {
	if err := unix.SetNonblock(fd, false); err != nil {
		return err
	}
	tv := unix.NsecToTimeval(int64(ioTimeout))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
}

// ioTimeout bounds every blocking send and receive.
const ioTimeout = 20 * time.Second

// listenPath listens on path, replacing whatever socket file was there.
func listenPath(path string) (int, error) {
	os.Remove(path)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind %s: %w", path, err)
	}
	if err := unix.Listen(fd, 1); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("listen", err)
	}
	return fd, nil
}

// acceptOne accepts one connection on the listening lfd within wait, then
// closes lfd and removes path.
func acceptOne(lfd int, path string, wait time.Duration) (int, error) {
	defer os.Remove(path)
	defer unix.Close(lfd)
	pfd := []unix.PollFd{{Fd: int32(lfd), Events: unix.POLLIN}}
	deadline := time.Now().Add(wait)
	for {
		n, err := unix.Poll(pfd, int(time.Until(deadline)/time.Millisecond)+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, os.NewSyscallError("poll", err)
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("nobody connected to %s within %v", path, wait)
		}
	}
	fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	if err != nil {
		return -1, os.NewSyscallError("accept4", err)
	}
	return fd, prepare(fd)
}

// dialPath connects to path, trying again until something listens there
// or wait has passed.
func dialPath(path string, wait time.Duration) (int, error) {
	deadline := time.Now().Add(wait)
	for {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, os.NewSyscallError("socket", err)
		}
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if err == nil {
			return fd, prepare(fd)
		}
		unix.Close(fd)
		if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ECONNREFUSED) && err != unix.EINTR {
			return -1, fmt.Errorf("connect %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("nothing listens on %s after %v", path, wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sendAll writes all of p, fds with its first byte.
func sendAll(fd int, p []byte, oob []byte) error {
	for len(p) > 0 {
		n, err := unix.SendmsgN(fd, p, oob, nil, unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("sendmsg", err)
		}
		p, oob = p[n:], nil
	}
	return nil
}

// receiver reads a stream with its descriptors through one preallocated
// message header: unix.Recvmsg allocates the sender's address whenever the
// sender's socket has one (the accepting side of a path), and a garbage
// collection in the middle of a latency run is noise.
type receiver struct {
	fd  int
	oob []byte
	iov unix.Iovec
	hdr unix.Msghdr
}

func newReceiver(fd int) *receiver {
	return &receiver{fd: fd, oob: make([]byte, unix.CmsgSpace(8*4))}
}

// recv reads what is queued into p, up to len(p) bytes, and appends the
// descriptors that came with it to fds. n is 0 at the end of the stream.
func (r *receiver) recv(p []byte, fds []int) (int, []int, error) {
	r.iov = unix.Iovec{Base: &p[0]}
	r.iov.SetLen(len(p))
	r.hdr = unix.Msghdr{Iov: &r.iov, Iovlen: 1, Control: &r.oob[0]}
	r.hdr.SetControllen(len(r.oob))
	for {
		n, _, errno := unix.Syscall(unix.SYS_RECVMSG, uintptr(r.fd), uintptr(unsafe.Pointer(&r.hdr)), unix.MSG_CMSG_CLOEXEC)
		switch errno {
		case 0:
		case unix.EINTR:
			continue
		default:
			return 0, fds, os.NewSyscallError("recvmsg", errno)
		}
		if r.hdr.Flags&unix.MSG_CTRUNC != 0 {
			return int(n), fds, errors.New("recvmsg: control data truncated")
		}
		if r.hdr.Controllen == 0 {
			return int(n), fds, nil
		}
		msgs, err := unix.ParseSocketControlMessage(r.oob[:r.hdr.Controllen])
		if err != nil {
			return int(n), fds, err
		}
		for i := range msgs {
			got, err := unix.ParseUnixRights(&msgs[i])
			if err != nil {
				return int(n), fds, err
			}
			fds = append(fds, got...)
		}
		return int(n), fds, nil
	}
}

// recvFull reads exactly len(p) bytes, or none at the end of the stream.
func (r *receiver) recvFull(p []byte, fds []int) (bool, []int, error) {
	for got := 0; got < len(p); {
		n, more, err := r.recv(p[got:], fds)
		fds = more
		if err != nil {
			return false, fds, err
		}
		if n == 0 {
			if got == 0 {
				return false, fds, nil
			}
			return false, fds, fmt.Errorf("end of stream after %d of %d bytes", got, len(p))
		}
		got += n
	}
	return true, fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
