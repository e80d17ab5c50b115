package broker

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/scm"

	"github.com/one-socket/one-socket/libspbroker"
)

// The pairing path calls the kernel directly with preallocated message
// headers: the x/sys helpers allocate a sockaddr per accept and the
// control buffers per message, and that allocation showed in profiles.

// accept4 accepts one connection without asking for the peer's address.
func accept4(lfd int) (int, unix.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(lfd), 0, 0,
		unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), 0
}

// peer returns the credentials of fd's peer (SO_PEERCRED), read into the
// loop's own buffer: unix.GetsockoptUcred allocates one per call, and the
// engine asks at every accept when it tells users apart.
func (l *loop) peer(fd int) (Peer, error) {
	n := uint32(unsafe.Sizeof(l.cred))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERCRED,
		uintptr(unsafe.Pointer(&l.cred)), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return Peer{}, os.NewSyscallError("getsockopt", e)
	}
	return Peer{PID: l.cred.Pid, UID: l.cred.Uid, GID: l.cred.Gid}, nil
}

// drain consumes what fd's client sent and the engine only peeked at (its
// request, usually), without waiting: Linux reports a close with unread
// data to the peer as a reset, and the original broker, which reads each
// request, gives its clients end of file. Descriptors sent along are
// discarded by the kernel, which closes them.
func (l *loop) drain(fd int) {
	unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&l.drainBuf[0])), uintptr(len(l.drainBuf)),
		unix.MSG_DONTWAIT, 0, 0)
}

// peeker reads a client's pending bytes without consuming them.
//
// Peeking instead of reading matters: consuming data from a client's socket
// signals write space to the client, waking it in its recv for nothing.
type peeker struct {
	hdr unix.Msghdr
	iov unix.Iovec
	// One byte more than the longest message, to see trailing data.
	buf [libspbroker.MessageSize + 1]byte
	// Room for SCM_MAX_FD descriptors, so that every one a client sends
	// is received and closed.
	oob [scm.OOBSize]byte
}

func (p *peeker) init() {
	p.iov.Base = &p.buf[0]
	p.iov.SetLen(len(p.buf))
	p.hdr.Iov = &p.iov
	p.hdr.SetIovlen(1)
	p.hdr.Control = &p.oob[0]
}

// peek returns the number of bytes waiting on fd (at most len(p.buf)) and
// the number of descriptors that came with them, which it has closed.
// truncated reports that the kernel dropped descriptors for lack of room.
func (p *peeker) peek(fd int) (n, nfds int, truncated bool, err unix.Errno) {
	p.hdr.SetControllen(len(p.oob))
	p.hdr.Flags = 0
	r, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&p.hdr)),
		unix.MSG_PEEK|unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	if e != 0 {
		return 0, 0, false, e
	}
	if p.hdr.Controllen > 0 {
		nfds = closeRights(p.oob[:p.hdr.Controllen])
	}
	return int(r), nfds, p.hdr.Flags&unix.MSG_CTRUNC != 0, 0
}

// read consumes up to len(b) bytes from fd into b without blocking. It
// returns the number of descriptors that came along, which it has closed.
func (p *peeker) read(fd int, b []byte) (n, nfds int, err unix.Errno) {
	iov := unix.Iovec{Base: &b[0]}
	iov.SetLen(len(b))
	h := unix.Msghdr{Iov: &iov, Control: &p.oob[0]}
	h.SetIovlen(1)
	h.SetControllen(len(p.oob))
	r, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&h)),
		unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	if e != 0 {
		return 0, 0, e
	}
	if h.Controllen > 0 {
		nfds = closeRights(p.oob[:h.Controllen])
	}
	if h.Flags&unix.MSG_CTRUNC != 0 {
		nfds = max(nfds, 1)
	}
	return int(r), nfds, 0
}

// closeRights closes every descriptor in the SCM_RIGHTS messages of oob
// and returns how many there were.
func closeRights(oob []byte) int {
	fds, _ := scm.Rights(oob)
	scm.CloseAll(fds)
	return len(fds)
}

// sender sends SET_PAIR messages, each carrying one descriptor.
type sender struct {
	hdr unix.Msghdr
	iov unix.Iovec
	buf [libspbroker.MessageSize]byte
	oob [(unix.SizeofCmsghdr + 4 + 7) &^ 7]byte
}

func (s *sender) init() {
	// Every SET_PAIR is the same 1044 bytes, as the original sends them.
	libspbroker.NewSetPair().Encode(s.buf[:])
	s.iov.Base = &s.buf[0]
	s.iov.SetLen(len(s.buf))
	s.hdr.Iov = &s.iov
	s.hdr.SetIovlen(1)
	s.hdr.Control = &s.oob[0]
	s.hdr.SetControllen(len(s.oob))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&s.oob[0]))
	h.Level = unix.SOL_SOCKET
	h.Type = unix.SCM_RIGHTS
	h.SetLen(unix.CmsgLen(4))
}

// send sends SET_PAIR with a copy of pass to fd without blocking.
func (s *sender) send(fd, pass int) unix.Errno {
	*(*int32)(unsafe.Pointer(&s.oob[unix.SizeofCmsghdr])) = int32(pass)
	r, _, e := unix.Syscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&s.hdr)),
		unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
	if e != 0 {
		return e
	}
	if int(r) != len(s.buf) {
		// A fresh connection's send buffer always holds one message; a short
		// send means something is badly wrong with this client.
		return unix.EPIPE
	}
	return 0
}
