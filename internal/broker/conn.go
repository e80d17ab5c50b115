package broker

import (
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/libspbroker"
)

// noFD is no descriptor: the end of a list, or no waiter.
const noFD int32 = -1

type connState uint8

const (
	stFree    connState = iota
	stReading           // accepted; GET_PAIR not complete yet
	stWaiting           // GET_PAIR valid; in the index
)

// conn is a client connection, stored at its descriptor's index in
// loop.conns. Links are descriptor numbers.
type conn struct {
	key      string         // the key, while waiting
	stored   uint64         // the ConnStore's id for its copy, or 0
	slot     uint64         // index slot, while waiting
	since    int64          // ns since loop start: accepted, or parked
	partial  *reqBuf        // a request arriving in pieces, consumed so far
	gen      uint32         // bumped per accept; tags epoll events
	uid      uint32         // peer's uid, read at accept unless users are not told apart
	links    [numLinks]link // on the lists of list.go
	got      uint16         // bytes in partial
	consumed uint16         // bytes of the stream the request took, if consumed
	mode     libspbroker.Mode
	state    connState
	polled   bool   // registered with epoll
	reread   bool   // taken back after a crash: its request must be whole in the socket
	drained  bool   // what was only peeked at has been consumed
	list     listID // which deadline list holds it
}

// connAt returns the conn slot for fd, growing the table as needed.
func (l *loop) connAt(fd int) *conn {
	if fd >= len(l.conns) {
		n := max(2*len(l.conns), fd+1, 64)
		grown := make([]conn, n)
		copy(grown, l.conns)
		l.conns = grown
	}
	return &l.conns[fd]
}

// track makes fd, just accepted or adopted, a client of user uid still
// sending its request and counts it. The loop owns fd from then on.
func (l *loop) track(fd int, since int64, uid uint32) *conn {
	c := l.connAt(fd)
	c.gen++
	c.state = stReading
	c.since = since
	c.polled = false
	c.links = unlinked
	c.consumed = 0
	c.stored, c.reread, c.drained = 0, false, false
	c.uid = uid
	l.nconns++
	l.b.stats.conns.Add(1)
	if l.b.maxUIDConns > 0 {
		l.byUID[uid]++
	}
	return c
}

// forget stops tracking c and uncounts it, leaving its descriptor to
// whoever closes or keeps it.
func (l *loop) forget(c *conn) {
	c.state = stFree
	l.nconns--
	l.b.stats.conns.Add(-1)
	if l.b.maxUIDConns > 0 {
		if l.byUID[c.uid]--; l.byUID[c.uid] <= 0 {
			delete(l.byUID, c.uid)
		}
	}
}

// drop closes client connection fd, whatever its state.
func (l *loop) drop(fd int32) {
	c := &l.conns[fd]
	if c.state == stWaiting {
		l.dequeue(fd)
	}
	l.unlist(fd)
	l.dropPartial(c)
	l.consumeRequest(fd)
	l.release(c)
	// Closing also removes fd from epoll: the engine never duplicates it.
	unix.Close(int(fd))
	l.forget(c)
}

// protocolError counts a violation by fd's client and disconnects it.
func (l *loop) protocolError(fd int32, kind ProtocolErrorKind, err error) {
	l.b.stats.protocol[kind].Add(1)
	if l.debug {
		l.b.log.Debug("protocol error; disconnecting client", "fd", fd, "kind", kind, "err", err)
	}
	l.drop(fd)
}
