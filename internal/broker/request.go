package broker

import (
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/libspbroker"
)

// reqBuf holds a request that arrives in pieces: the longest message and
// one byte more, to notice trailing data.
type reqBuf [libspbroker.MessageSize + 1]byte

// maxFreeBufs bounds the reqBufs kept for reuse.
const maxFreeBufs = 64

// readRequest looks at what fd has sent so far: a whole GET_PAIR goes on to
// matching; an incomplete one waits for more, unless the client hung up.
// rdhup says the client will send nothing more; gone, that it closed.
//
// A request that arrives whole is only peeked at. One that arrives in
// pieces is consumed into a buffer instead: unread pieces stay charged to
// the client's send buffer, and a client writing a byte at a time would
// fill it long before its request was complete.
func (l *loop) readRequest(fd int32, rdhup, gone bool) {
	c := &l.conns[fd]
	if c.partial == nil {
		n, nfds, trunc, e := l.peek.peek(int(fd))
		if c.reread {
			// Taken back after a crash: a whole request, or it was being
			// paired when the crash came (store.go).
			c.reread = false
			if e != 0 || n < libspbroker.DocumentedMessageSize {
				l.drop(fd)
				return
			}
			l.b.stats.restored.Add(1)
		}
		switch {
		case e == unix.EAGAIN:
			if rdhup {
				l.drop(fd) // closed before sending anything
			} else {
				l.awaitMore(fd)
			}
			return
		case e != 0:
			l.drop(fd)
			return
		case n == 0:
			l.drop(fd) // end of file: the client gave up
			return
		case n > libspbroker.MessageSize:
			l.protocolError(fd, ErrKindTrailing, nil)
			return
		case n < libspbroker.DocumentedMessageSize && (nfds > 0 || trunc):
			l.protocolError(fd, ErrKindDescriptors, nil)
			return
		case n < libspbroker.DocumentedMessageSize:
			c.partial = l.getBuf()
		default:
			if trunc {
				nfds = max(nfds, 1)
			}
			if !l.validate(fd, l.peek.buf[:n], nfds) {
				return
			}
		}
	}
	if c.partial != nil && !l.consume(fd, rdhup) {
		return
	}
	l.unlist(fd)
	if gone {
		// A whole request from a client that has already closed: pairing
		// it would hand its peer a dead end.
		l.b.stats.vanished.Add(1)
		l.drop(fd)
		return
	}
	// A client that came through epoll would have reported a hang-up in
	// its event; one taken at accept time is asked in match.
	if !l.admit(fd, l.msg.Mode, l.msg.PairKey()) {
		return
	}
	l.match(fd, l.msg.Mode, l.msg.PairKey(), !c.polled)
}

// validate decodes a whole request into l.msg and checks it; on a
// violation it disconnects fd and reports false.
func (l *loop) validate(fd int32, data []byte, nfds int) bool {
	m := &l.msg
	m.Decode(data)
	if err := libspbroker.Validate(m, nfds, libspbroker.RequestGetPair); err != nil {
		l.protocolError(fd, kindOf(err), err)
		return false
	}
	return true
}

// consume reads what fd has sent into its partial buffer. It reports true
// once the whole request has arrived and been validated into l.msg, false
// while it is incomplete or when fd was disconnected.
func (l *loop) consume(fd int32, rdhup bool) bool {
	c := &l.conns[fd]
	buf := c.partial[:]
	eof := false
	for int(c.got) < len(buf) {
		n, nfds, e := l.peek.read(int(fd), buf[c.got:])
		if nfds > 0 {
			l.protocolError(fd, ErrKindDescriptors, nil)
			return false
		}
		if e == unix.EINTR {
			continue
		}
		if e == unix.EAGAIN {
			break
		}
		if e != 0 {
			l.drop(fd)
			return false
		}
		if n == 0 {
			eof = true
			break
		}
		c.got += uint16(n)
	}
	switch got := int(c.got); {
	case got > libspbroker.MessageSize:
		l.protocolError(fd, ErrKindTrailing, nil)
		return false
	case got < libspbroker.DocumentedMessageSize && (eof || rdhup):
		l.protocolError(fd, ErrKindTruncated, nil)
		return false
	case got < libspbroker.DocumentedMessageSize:
		l.awaitMore(fd)
		return false
	}
	if !l.validate(fd, buf[:c.got], 0) {
		return false
	}
	// The request is in l.msg now; remember how much of the stream it took
	// so that the trailing-data check of a waiter stays right.
	c.consumed = c.got
	l.dropPartial(c)
	return true
}

// dropPartial gives c's partial request buffer, if any, back for reuse.
func (l *loop) dropPartial(c *conn) {
	if c.partial != nil {
		l.putBuf(c.partial)
		c.partial, c.got = nil, 0
	}
}

// awaitMore makes sure fd is polled and under the handshake deadline.
func (l *loop) awaitMore(fd int32) {
	c := &l.conns[fd]
	if c.list != onReading {
		l.listOn(fd, onReading)
	}
	if !c.polled {
		l.poll(fd)
	}
}

// getBuf returns a buffer for a request that arrives in pieces.
func (l *loop) getBuf() *reqBuf {
	if n := len(l.freeBufs); n > 0 {
		b := l.freeBufs[n-1]
		l.freeBufs = l.freeBufs[:n-1]
		return b
	}
	return new(reqBuf)
}

// putBuf keeps a few buffers for reuse; the rest go to the collector.
func (l *loop) putBuf(b *reqBuf) {
	if len(l.freeBufs) < maxFreeBufs {
		l.freeBufs = append(l.freeBufs, b)
	}
}
