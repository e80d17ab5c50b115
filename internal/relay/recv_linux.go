package relay

import (
	"errors"
	"io"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/scm"
)

// firstPeek is how much a read looks at first: more than any vhost-user
// or QMP message, and cheap to copy.
const firstPeek = 4 << 10

// bufSize is what one copied read takes at most: the bytes of a send with
// descriptors and those queued in front of it, or a short run of plain
// bytes (longer ones are spliced).
const bufSize = 64 << 10

// A chunk is what one read took from a socket: bytes, and the descriptors
// sent with the first of them (none for plain bytes).
type chunk struct {
	data []byte
	fds  []int

	// piped, instead of data, is a number of plain bytes waiting in the
	// pipe whose reading end is pipe, for send to splice on.
	piped int
	pipe  int
}

// reader reads a Unix stream socket in chunks whose descriptors belong to
// their first byte.
//
// What Linux shows of a queue's sends, measured on 6.x kernels: a MSG_PEEK
// with no room for control data sets MSG_CTRUNC when a send with
// descriptors is anywhere in the queue (the peek walks on past the bytes
// it copies), and copies at most up to the end of the first such send; a
// consuming read returns the descriptors with the first read that touches
// that send's bytes. No peek tells where the send starts.
//
// So a read first peeks at up to 4 KiB. Without MSG_CTRUNC, and with fewer
// bytes than asked, that was the whole queue, all plain, and one read
// takes it; with a full 4 KiB, SIOCINQ says how much is queued and a
// one-byte peek after it that none of it carries descriptors. With
// MSG_CTRUNC, the peek (or one of a whole buffer) found the end of the
// send with descriptors, and one recvmmsg reads the bytes up to there one
// byte per message, each with its own result: the entry that brings the
// descriptors is the send's first byte. The plain bytes before it become
// one chunk and the send's bytes, with the descriptors, the next.
//
// The byte-wise read costs one message header per byte that queued up in
// front of the send; when the relay keeps up the send is first in the
// queue, and a first one-byte read finds it.
type reader struct {
	rc   syscall.RawConn
	buf  []byte
	oob  []byte
	next *chunk // the second chunk of a split read, not yet returned
	err  error  // set by fill
	got  []chunk

	// The byte-wise read's message headers and vectors, made on first
	// use: many relays never see a queued send with descriptors.
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec

	// A pipe that runs of plain bytes are spliced through, so that they
	// are never copied into the relay; made on first use, and none if
	// the kernel will not splice this socket.
	pipe     [2]int
	noSplice bool
}

// spliceMin is the smallest run of plain bytes worth two splices rather
// than a copy.
const spliceMin = 16 << 10

// pipeSize is what the splice pipe is asked to hold: more than a socket's
// default queue, so that one splice takes all of it.
const pipeSize = 1 << 20

// maxBytewise is how many one-byte messages one recvmmsg asks for
// (UIO_MAXIOV, the kernel's own bound on its vectors).
const maxBytewise = 1024

func newReader(c syscall.Conn) (*reader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &reader{
		rc:   rc,
		buf:  make([]byte, bufSize),
		oob:  make([]byte, scm.OOBSize),
		pipe: [2]int{-1, -1},
	}
	// Peeks must start at the head of the queue; a socket handed to us
	// might have SO_PEEK_OFF set.
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = os.NewSyscallError("setsockopt SO_PEEK_OFF", unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEEK_OFF, -1))
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	return r, nil
}

// read returns the next chunk, or io.EOF at the end of the stream. The
// chunk's bytes are valid until the next read; the caller owns its
// descriptors.
func (r *reader) read() (chunk, error) {
	if r.next != nil {
		c := *r.next
		r.next = nil
		return c, nil
	}
	r.got, r.err = r.got[:0], nil
	if err := r.rc.Read(func(fd uintptr) bool { return r.fill(int(fd)) }); err != nil {
		return chunk{}, err
	}
	switch {
	case r.err != nil:
		for _, c := range r.got {
			closeAll(c.fds)
		}
		return chunk{}, r.err
	case len(r.got) == 0:
		return chunk{}, io.EOF
	case len(r.got) == 2:
		r.next = &r.got[1]
	}
	return r.got[0], nil
}

// fill does one read on fd, leaving its chunks in r.got (none at the end
// of the stream) or its failure in r.err. It returns false to wait for the
// socket to be readable.
func (r *reader) fill(fd int) bool {
	for {
		// A first look at up to firstPeek bytes settles most reads: a
		// message that is all there is, with or without descriptors.
		n, rights, err := peek(fd, r.buf[:firstPeek])
		switch {
		case err == unix.EAGAIN:
			return false
		case err != nil:
			r.err = os.NewSyscallError("recvmsg", err)
			return true
		case n == 0:
			return true
		case rights && n < firstPeek:
			// The peek stopped at the end of the send with descriptors.
			r.err = r.bytewise(fd, n)
			return true
		case rights:
			end, _, err := peek(fd, r.buf)
			if err != nil {
				r.err = os.NewSyscallError("recvmsg", err)
				return true
			}
			r.err = r.bytewise(fd, end)
			return true
		case n < firstPeek:
			// Less than asked for: that was the whole queue, all plain.
			r.err = r.take(fd, 0, n, false)
			return true
		}
		// More is queued, none of it with descriptors so far. Asked before
		// a second look, SIOCINQ counts only bytes that look covers.
		queued, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
		if err != nil {
			r.err = os.NewSyscallError("ioctl SIOCINQ", err)
			return true
		}
		if _, rights, err = peek(fd, r.buf[:1]); err != nil {
			r.err = os.NewSyscallError("recvmsg", err)
			return true
		}
		if rights {
			continue // a send with descriptors came meanwhile
		}
		if queued >= spliceMin && r.splice(fd, queued) {
			return true
		}
		r.err = r.take(fd, 0, min(queued, len(r.buf)), false)
		return true
	}
}

// splice moves up to n plain bytes from fd into the reader's pipe, as a
// chunk for send to splice on. It returns false, having done nothing, if
// splicing is not to be had here.
func (r *reader) splice(fd, n int) bool {
	if r.noSplice {
		return false
	}
	if r.pipe[0] < 0 {
		if err := unix.Pipe2(r.pipe[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
			r.noSplice = true
			return false
		}
		// A smaller pipe only means more splices.
		unix.FcntlInt(uintptr(r.pipe[1]), unix.F_SETPIPE_SZ, pipeSize)
	}
	for {
		m, err := unix.Splice(fd, nil, r.pipe[1], nil, n, unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EINVAL || err == unix.ENOSYS || err == unix.EOPNOTSUPP:
			r.noSplice = true
			return false
		case err != nil:
			r.err = os.NewSyscallError("splice", err)
		case m == 0:
			r.err = errQueueShrank
		default:
			r.got = append(r.got, chunk{piped: int(m), pipe: r.pipe[0]})
		}
		return true
	}
}

// close releases the reader's pipe.
func (r *reader) close() {
	if r.pipe[0] >= 0 {
		unix.Close(r.pipe[0])
		unix.Close(r.pipe[1])
		r.pipe = [2]int{-1, -1}
	}
}

// peek looks at the head of the queue without taking it, and reports
// whether a send with descriptors is queued.
func peek(fd int, buf []byte) (n int, rights bool, err error) {
	n, _, flags, err := recvmsg(fd, buf, nil, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	return n, flags&unix.MSG_CTRUNC != 0, err
}

// recvmsg is recvmsg(2) without a source address, which a connected
// stream socket has no use for: unix.Recvmsg allocates room for one on
// every call, and the relay calls it several times a message. It tries
// again on EINTR, and returns the raw errno.
func recvmsg(fd int, p, oob []byte, flags int) (n, oobn, recvflags int, err error) {
	var iov unix.Iovec
	var msg unix.Msghdr
	if len(p) > 0 {
		iov.Base = &p[0]
		iov.SetLen(len(p))
		msg.Iov, msg.Iovlen = &iov, 1
	}
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	for {
		r, _, errno := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, 0, 0, errno
		}
		return int(r), int(msg.Controllen), int(msg.Flags), nil
	}
}

// bytewise reads buf[:end] one byte per message, where end is no further
// than the end of the first queued send with descriptors, and splits it
// where the descriptors come.
func (r *reader) bytewise(fd, end int) error {
	if r.hdrs == nil {
		r.hdrs = make([]unix.Mmsghdr, maxBytewise)
		r.iovs = make([]unix.Iovec, maxBytewise)
	}
	for off := 0; off < end; {
		k := min(end-off, maxBytewise)
		if off == 0 {
			// Most often the send is first in the queue: one byte tells,
			// and one read takes the rest of it.
			k = 1
		}
		for j := 0; j < k; j++ {
			r.iovs[j] = unix.Iovec{Base: &r.buf[off+j], Len: 1}
			// One control buffer serves all: only the entry that
			// touches the send with descriptors writes to it.
			r.hdrs[j] = unix.Mmsghdr{Hdr: unix.Msghdr{Iov: &r.iovs[j], Iovlen: 1, Control: &r.oob[0]}}
			r.hdrs[j].Hdr.SetControllen(len(r.oob))
		}
		got, err := recvmmsg(fd, r.hdrs[:k], unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
		if err != nil {
			return err
		}
		for j := 0; j < got; j++ {
			h := &r.hdrs[j]
			if h.Len != 1 {
				return errQueueShrank
			}
			if h.Hdr.Controllen == 0 {
				continue
			}
			fds, err := parseRights(r.oob[:h.Hdr.Controllen])
			if err == nil && h.Hdr.Flags&unix.MSG_CTRUNC != 0 {
				err = errors.New("recvmsg: control data truncated: descriptors lost")
			}
			if err != nil {
				closeAll(fds)
				return err
			}
			start := off + j
			if start > 0 {
				r.got = append(r.got, chunk{data: r.buf[:start]})
			}
			// The rest of the send, up to end, carries no more.
			if rest := off + got; rest < end {
				err := r.take(fd, rest, end, false)
				if err == nil && len(r.got[len(r.got)-1].data) != end-rest {
					err = errQueueShrank
				}
				if err != nil {
					closeAll(fds)
					return err
				}
				r.got = r.got[:len(r.got)-1] // its bytes are in place in buf
			}
			r.got = append(r.got, chunk{data: r.buf[start:end], fds: fds})
			return nil
		}
		if got < k {
			return errQueueShrank
		}
		off += k
	}
	// The send starts at end or later: these bytes are all plain.
	r.got = append(r.got, chunk{data: r.buf[:end]})
	return nil
}

// recvmmsg receives into hdrs and returns how many entries were filled.
func recvmmsg(fd int, hdrs []unix.Mmsghdr, flags int) (int, error) {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), uintptr(flags), 0, 0)
		switch errno {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		}
		return 0, os.NewSyscallError("recvmmsg", errno)
	}
}

// errQueueShrank means that bytes seen by a peek were gone: someone else
// reads the socket too, and no relay can be exact then.
var errQueueShrank = errors.New("bytes seen in the receive queue vanished: another process reads this socket")

// errUnforeseenRights means descriptors came where the peeks had seen none
// (or none where they had): the kernel does not behave as the reader
// relies on, and forwarding them could put them on the wrong byte.
var errUnforeseenRights = errors.New("descriptors came where the peeks said there were none: the kernel's MSG_PEEK does not behave as this relay needs (Linux 6.x does)")

// take reads buf[off:end], which the last peek saw, into a chunk. The
// descriptors come with it if and only if rights says they should.
func (r *reader) take(fd, off, end int, rights bool) error {
	n, oobn, flags, err := recvmsg(fd, r.buf[off:end], r.oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("recvmsg", err)
	}
	if n == 0 {
		return errQueueShrank
	}
	fds, perr := parseRights(r.oob[:oobn])
	switch {
	case perr != nil:
		closeAll(fds)
		return perr
	case flags&unix.MSG_CTRUNC != 0:
		// Cannot happen with room for SCM_MAX_FD descriptors; if it did,
		// the kernel has closed some, and forwarding the rest would lie.
		closeAll(fds)
		return errors.New("recvmsg: control data truncated: descriptors lost")
	case rights != (len(fds) > 0):
		closeAll(fds)
		return errUnforeseenRights
	}
	r.got = append(r.got, chunk{data: r.buf[off : off+n], fds: fds})
	return nil
}

// parseRights returns the descriptors in control data, and an error for
// any other kind of message (none is asked for).
func parseRights(oob []byte) ([]int, error) { return scm.Rights(oob) }

func closeAll(fds []int) { scm.CloseAll(fds) }
