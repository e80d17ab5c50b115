package broker

import (
	"context"
	"hash/maphash"
	"log/slog"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/libspbroker"
)

// The engine is one goroutine around one epoll instance. Measured designs
// (doc/performance.md) showed that a goroutine per connection costs ~6 KB
// per waiting client and half the throughput; this loop keeps a few dozen
// bytes per client plus its key, and does the following per pairing:
//
//   - one accept4 per listener event (a second call would only fail);
//   - peek at the GET_PAIR right after accept, so a client whose peer is
//     already waiting is paired without ever entering epoll;
//   - park a waiting client in the index and register it with epoll only
//     after pollDelay, since most waits are shorter than that;
//   - pair by sending SET_PAIR to the waiter first: if it has gone, the
//     newcomer is matched again and never receives a dead end.

// pollDelay is how long a parked client waits before the engine registers
// it with epoll to notice hang-ups. A waiter that left earlier is caught by
// the failed send.
const pollDelay = 500 * time.Microsecond

// yieldEvery is how often the loop passes through the scheduler. A loop
// that never yields is preempted by signal every 10 ms, and when that lands
// during a system call the runtime hands the P away: that cost more than
// the yield.
const yieldEvery = 2 * time.Millisecond

// listenPause is how long the listener is ignored when even the spare
// descriptor cannot make room to refuse a connection.
const listenPause = 100 * time.Millisecond

// limitLogEvery rate-limits the warning about refused connections.
const limitLogEvery = 10 * time.Second

const noFD int32 = -1

type connState uint8

const (
	stFree    connState = iota
	stReading           // accepted; GET_PAIR not complete yet
	stWaiting           // GET_PAIR valid; in the index
)

type listID uint8

const (
	onNoList  listID = iota
	onReading        // handshake deadline list, in accept order
	onPending        // parked but not yet in epoll, in park order
)

// conn is a client connection, stored at its descriptor's index in
// loop.conns. Links are descriptor numbers.
type conn struct {
	key      string         // the key, while waiting
	slot     uint64         // index slot, while waiting
	since    int64          // ns since loop start: accepted, or parked
	partial  *reqBuf        // a request arriving in pieces, consumed so far
	gen      uint32         // bumped per accept; tags epoll events
	uid      uint32         // peer's uid, read only when a policy or quota needs it
	links    [numLinks]link // on the lists of list.go
	got      uint16         // bytes in partial
	consumed uint16         // bytes of the stream the request took, if consumed
	mode     libspbroker.Mode
	state    connState
	polled   bool   // registered with epoll
	list     listID // which deadline list holds it
}

// reqBuf holds a request that arrives in pieces: the longest message and
// one byte more, to notice trailing data.
type reqBuf [libspbroker.MessageSize + 1]byte

// maxFreeBufs bounds the reqBufs kept for reuse.
const maxFreeBufs = 64

type loop struct {
	b        *Broker
	epfd     int
	lfd      int
	wakeFD   int
	spareFD  int // /dev/null, closed to make room when accept hits EMFILE
	stopping bool
	// handedOver: the listener and clients went to a State; closing the
	// loop must leave them open.
	handedOver bool

	start  time.Time
	now    int64
	conns  []conn
	index  map[uint64]fdList // slot of (key, mode) -> its waiters; see index.go
	nconns int

	reading, pending fdList
	waiting          fdList         // parked clients in park order, when MaxWait is set
	perUID           map[uint32]int // waiting clients per uid, when MaxWaitingPerUID is set

	events   []unix.EpollEvent
	ev       unix.EpollEvent
	peek     peeker
	send     sender
	msg      libspbroker.Message
	seed     maphash.Seed
	pair     [2]int // a socketpair made but not yet handed out, or -1s
	debug    bool
	lastLog  int64 // last limit warning
	refusals uint64
	pausedAt int64 // listener paused since, or 0
	pollFD   [1]unix.PollFd
	freeBufs []*reqBuf
}

func newLoop(b *Broker, lfd int) (*loop, error) {
	l := &loop{
		b: b, lfd: lfd, epfd: -1, wakeFD: -1, spareFD: -1,
		start:   time.Now(),
		index:   make(map[uint64]fdList),
		seed:    maphash.MakeSeed(),
		events:  make([]unix.EpollEvent, 256),
		pair:    [2]int{-1, -1},
		reading: newList(deadlineLink),
		pending: newList(deadlineLink),
		waiting: newList(maxWaitLink),
		perUID:  make(map[uint32]int),
	}
	l.peek.init()
	l.send.init()
	var err error
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if l.wakeFD, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		l.close()
		return nil, os.NewSyscallError("eventfd", err)
	}
	l.spareFD, _ = unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	// The listener is level-triggered: one accept per event, and the next
	// epoll_wait reports it again while connections are queued.
	if err := l.ctl(unix.EPOLL_CTL_ADD, lfd, unix.EPOLLIN, 0); err != nil {
		l.close()
		return nil, err
	}
	if err := l.ctl(unix.EPOLL_CTL_ADD, l.wakeFD, unix.EPOLLIN, 0); err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

func (l *loop) ctl(op, fd int, events uint32, gen uint32) error {
	l.ev.Events = events
	l.ev.Fd = int32(fd)
	l.ev.Pad = int32(gen)
	if err := unix.EpollCtl(l.epfd, op, fd, &l.ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// close releases everything the loop holds: client connections, the
// listener, and its own descriptors.
func (l *loop) close() {
	for fd := range l.conns {
		if l.conns[fd].state != stFree {
			l.drop(int32(fd))
		}
	}
	l.closePair()
	for _, fd := range []int{l.lfd, l.epfd, l.wakeFD, l.spareFD} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	l.lfd, l.epfd, l.wakeFD, l.spareFD = -1, -1, -1, -1
}

func (l *loop) clock() int64 { return int64(time.Since(l.start)) }

// run serves until Shutdown (nil) or a failure of epoll itself.
func (l *loop) run() error {
	if l.b.isClosed() {
		return nil
	}
	lastYield := l.clock()
	for !l.stopping {
		n, err := unix.EpollWait(l.epfd, l.events, l.timeout())
		if err != nil && err != unix.EINTR {
			return os.NewSyscallError("epoll_wait", err)
		}
		l.now = l.clock()
		l.debug = l.b.log.Enabled(context.Background(), slog.LevelDebug)
		for i := 0; i < n; i++ {
			ev := &l.events[i]
			fd := int(ev.Fd)
			switch {
			case fd == l.lfd && ev.Pad == 0:
				l.accept()
			case fd == l.wakeFD && ev.Pad == 0:
				l.wake()
			default:
				l.event(int32(fd), uint32(ev.Pad), ev.Events)
			}
		}
		l.expire()
		if l.now-lastYield >= int64(yieldEvery) {
			runtime.Gosched()
			lastYield = l.clock()
		}
	}
	return nil
}

// drainCalls runs calls posted while the loop was stopping, so that none
// is lost: they see l.stopping and answer accordingly. Serve calls it once
// post can no longer queue anything.
func (l *loop) drainCalls() {
	l.stopping = true
	for _, fn := range l.b.takeCalls() {
		fn(l)
	}
}

// timeout returns the epoll_wait timeout in ms: until the next deadline.
func (l *loop) timeout() int {
	next := int64(-1)
	if l.pending.head != noFD {
		next = l.conns[l.pending.head].since + int64(pollDelay)
	}
	if l.reading.head != noFD {
		d := l.conns[l.reading.head].since + int64(l.b.handshake)
		if next < 0 || d < next {
			next = d
		}
	}
	if l.b.maxWait > 0 && l.waiting.head != noFD {
		d := l.conns[l.waiting.head].since + int64(l.b.maxWait)
		if next < 0 || d < next {
			next = d
		}
	}
	if l.pausedAt != 0 {
		d := l.pausedAt + int64(listenPause)
		if next < 0 || d < next {
			next = d
		}
	}
	if next < 0 {
		return -1
	}
	wait := next - l.clock()
	if wait <= 0 {
		return 0
	}
	return int((wait + int64(time.Millisecond) - 1) / int64(time.Millisecond))
}

func (l *loop) wake() {
	var buf [8]byte
	unix.Read(l.wakeFD, buf[:])
	for _, fn := range l.b.takeCalls() {
		fn(l)
	}
	if l.b.isClosed() {
		l.stopping = true
	}
}

// accept takes one connection from the listener.
func (l *loop) accept() {
	fd, e := accept4(l.lfd)
	switch e {
	case 0:
	case unix.EAGAIN, unix.ECONNABORTED, unix.EINTR:
		return
	case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
		l.refuseNoRoom(e)
		return
	default:
		l.b.log.Warn("accept failed", "err", os.NewSyscallError("accept4", e))
		return
	}
	l.b.stats.accepted.Add(1)
	if l.nconns >= l.b.maxConns {
		unix.Close(fd)
		l.refused("connection limit reached", "limit", l.b.maxConns)
		return
	}
	c := l.connAt(fd)
	c.gen++
	c.state = stReading
	c.since = l.now
	c.polled = false
	c.links = unlinked
	c.consumed = 0
	l.nconns++
	l.b.stats.conns.Add(1)
	l.readRequest(int32(fd), false, false)
}

// refuseNoRoom handles an accept that failed for lack of descriptors or
// memory: it frees the spare descriptor to accept and close one connection,
// and if even that fails, ignores the listener for listenPause instead of
// spinning on it.
func (l *loop) refuseNoRoom(e unix.Errno) {
	if l.spareFD >= 0 {
		unix.Close(l.spareFD)
		fd, e2 := accept4(l.lfd)
		if e2 == 0 {
			unix.Close(fd)
			l.b.stats.accepted.Add(1)
		}
		l.spareFD, _ = unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if e2 == 0 {
			l.refused("out of descriptors", "err", os.NewSyscallError("accept4", e))
			return
		}
	}
	if l.ctl(unix.EPOLL_CTL_MOD, l.lfd, 0, 0) == nil {
		l.pausedAt = max(l.now, 1)
	}
	l.b.log.Warn("cannot accept; pausing the listener", "err", os.NewSyscallError("accept4", e), "pause", listenPause)
}

// refused counts a refused connection and warns at most every limitLogEvery.
func (l *loop) refused(why string, args ...any) {
	l.b.stats.refused.Add(1)
	l.refusals++
	if l.lastLog == 0 || l.now-l.lastLog >= int64(limitLogEvery) {
		l.b.log.Warn("refusing connections: "+why, append(args, "refused_since_last_warning", l.refusals)...)
		l.lastLog = max(l.now, 1)
		l.refusals = 0
	}
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

// event handles an epoll event for a client connection.
func (l *loop) event(fd int32, gen uint32, events uint32) {
	if int(fd) >= len(l.conns) {
		return
	}
	c := &l.conns[fd]
	if c.gen != gen || c.state == stFree {
		return // the descriptor was closed earlier in this batch
	}
	hup := events&(unix.EPOLLHUP|unix.EPOLLERR) != 0
	switch c.state {
	case stReading:
		l.readRequest(fd, hup || events&unix.EPOLLRDHUP != 0, hup)
	case stWaiting:
		if hup {
			l.b.stats.vanished.Add(1)
			if l.debug {
				l.b.log.Debug("waiting client hung up", "fd", fd)
			}
			l.drop(fd)
			return
		}
		// Only a second message or descriptors make a waiter readable
		// again: the GET_PAIR and its padding were seen already.
		n, nfds, trunc, e := l.peek.peek(int(fd))
		switch {
		case e == unix.EAGAIN:
		case e != 0:
			l.drop(fd)
		case nfds > 0 || trunc:
			l.protocolError(fd, ErrKindDescriptors, nil)
		case n+int(c.consumed) > libspbroker.MessageSize:
			l.protocolError(fd, ErrKindTrailing, nil)
		}
	}
}

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
	l.putBuf(c.partial)
	c.partial, c.got = nil, 0
	return true
}

// hungUp reports whether fd's client has closed its end, without waiting.
func (l *loop) hungUp(fd int32) bool {
	l.pollFD[0] = unix.PollFd{Fd: fd, Events: unix.POLLRDHUP}
	n, err := unix.Poll(l.pollFD[:], 0)
	return err == nil && n > 0 && l.pollFD[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0
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

// poll registers fd with epoll, edge-triggered: the engine peeks and never
// consumes, so a level-triggered registration would fire forever.
func (l *loop) poll(fd int32) {
	c := &l.conns[fd]
	if err := l.ctl(unix.EPOLL_CTL_ADD, int(fd), unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLET, c.gen); err != nil {
		l.b.log.Warn("cannot watch client", "err", err)
		l.drop(fd)
		return
	}
	c.polled = true
}

// match pairs fd with the oldest compatible waiter, or parks it. With
// checkHup it first makes sure fd's client is still there, at the cost of a
// system call paid only when a waiter exists.
func (l *loop) match(fd int32, mode libspbroker.Mode, key []byte, checkHup bool) {
	h := l.hashKey(key)
	peer := slot(h, mode.Peer())
	for {
		w := l.findWaiter(peer, key)
		if w == noFD {
			l.closePair() // left over if a waiter vanished
			if l.overQuota(fd) {
				l.b.stats.overQuota.Add(1)
				l.b.log.Warn("request refused: the user has too many clients waiting",
					"uid", l.conns[fd].uid, "limit", l.b.maxPerUID)
				l.drop(fd)
				return
			}
			l.park(fd, mode, key, slot(h, mode))
			return
		}
		if checkHup {
			if l.hungUp(fd) {
				l.b.stats.vanished.Add(1)
				l.drop(fd)
				return
			}
			checkHup = false
		}
		if l.pair[0] < 0 {
			p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				// The waiter keeps its place; the newcomer may try again.
				l.b.log.Warn("cannot create socketpair", "err", os.NewSyscallError("socketpair", err))
				l.drop(fd)
				return
			}
			l.pair = p
		}
		// The waiter first: if it has gone, the newcomer is still free to
		// pair with the next one.
		l.dequeue(w)
		if e := l.send.send(int(w), l.pair[0]); e != 0 {
			l.b.stats.vanished.Add(1)
			if l.debug {
				l.b.log.Debug("waiter gone before pairing", "fd", w, "err", e)
			}
			l.drop(w)
			continue
		}
		e := l.send.send(int(fd), l.pair[1])
		if e == 0 {
			l.b.stats.paired.Add(1)
		}
		l.drop(w)
		l.closePair()
		l.drop(fd)
		if e != 0 {
			if l.debug {
				l.b.log.Debug("newcomer gone before pairing", "fd", fd, "err", e)
			}
			return
		}
		if l.debug {
			l.b.log.Debug("paired", "key", string(key), "mode", mode)
		}
		return
	}
}

func (l *loop) closePair() {
	for i, fd := range l.pair {
		if fd >= 0 {
			unix.Close(fd)
			l.pair[i] = -1
		}
	}
}

// park makes fd wait in index slot s.
func (l *loop) park(fd int32, mode libspbroker.Mode, key []byte, s uint64) {
	c := &l.conns[fd]
	c.key = string(key)
	c.mode = mode
	c.slot = s
	c.state = stWaiting
	c.since = l.now
	l.enqueue(fd)
	l.b.stats.waiting.Add(1)
	if l.b.maxPerUID > 0 {
		l.perUID[c.uid]++
	}
	if l.b.maxWait > 0 {
		l.waiting.push(l.conns, fd)
	}
	if !c.polled {
		l.listOn(fd, onPending)
	}
	if l.debug {
		l.b.log.Debug("client waiting", "fd", fd, "key", string(key), "mode", mode)
	}
}

// dequeue takes waiter fd out of the index.
func (l *loop) dequeue(fd int32) {
	c := &l.conns[fd]
	l.unqueue(fd)
	if l.b.maxPerUID > 0 {
		if l.perUID[c.uid]--; l.perUID[c.uid] <= 0 {
			delete(l.perUID, c.uid)
		}
	}
	if l.b.maxWait > 0 {
		l.waiting.remove(l.conns, fd)
	}
	c.key = ""
	c.state = stReading // no longer waiting; closed right after
	l.b.stats.waiting.Add(-1)
	l.unlist(fd)
}

// drop closes a client connection, whatever its state.
func (l *loop) drop(fd int32) {
	c := &l.conns[fd]
	if c.state == stWaiting {
		l.dequeue(fd)
	}
	l.unlist(fd)
	if c.partial != nil {
		l.putBuf(c.partial)
		c.partial, c.got = nil, 0
	}
	// Closing also removes fd from epoll: the engine never duplicates it.
	unix.Close(int(fd))
	c.state = stFree
	l.nconns--
	l.b.stats.conns.Add(-1)
}

// protocolError counts a violation by fd's client and disconnects it.
func (l *loop) protocolError(fd int32, kind ProtocolErrorKind, err error) {
	l.b.stats.protocol[kind].Add(1)
	if l.debug {
		l.b.log.Debug("protocol error; disconnecting client", "fd", fd, "kind", kind, "err", err)
	}
	l.drop(fd)
}

// expire enforces the handshake deadline, registers waiters that have
// waited pollDelay, and resumes a paused listener.
func (l *loop) expire() {
	for l.reading.head != noFD {
		fd := l.reading.head
		if l.conns[fd].since+int64(l.b.handshake) > l.now {
			break
		}
		l.b.stats.timedOut.Add(1)
		if l.debug {
			l.b.log.Debug("handshake timed out", "fd", fd)
		}
		l.drop(fd)
	}
	for l.b.maxWait > 0 && l.waiting.head != noFD {
		fd := l.waiting.head
		if l.conns[fd].since+int64(l.b.maxWait) > l.now {
			break
		}
		l.b.stats.expired.Add(1)
		if l.debug {
			l.b.log.Debug("waited too long; disconnecting", "fd", fd)
		}
		l.drop(fd)
	}
	for l.pending.head != noFD {
		fd := l.pending.head
		if l.conns[fd].since+int64(pollDelay) > l.now {
			break
		}
		l.unlist(fd)
		l.poll(fd)
	}
	if l.pausedAt != 0 && l.now-l.pausedAt >= int64(listenPause) {
		if l.ctl(unix.EPOLL_CTL_MOD, l.lfd, unix.EPOLLIN, 0) == nil {
			l.pausedAt = 0
		}
	}
}

// deadlines returns the deadline list that id names, or nil.
func (l *loop) deadlines(id listID) *fdList {
	switch id {
	case onReading:
		return &l.reading
	case onPending:
		return &l.pending
	}
	return nil
}

// listOn appends fd, which is on no deadline list, to the one id names.
func (l *loop) listOn(fd int32, id listID) {
	l.deadlines(id).push(l.conns, fd)
	l.conns[fd].list = id
}

// unlist removes fd from whichever deadline list holds it.
func (l *loop) unlist(fd int32) {
	c := &l.conns[fd]
	if lst := l.deadlines(c.list); lst != nil {
		lst.remove(l.conns, fd)
		c.list = onNoList
	}
}
