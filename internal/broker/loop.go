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
// per waiting client and half the throughput; this loop keeps an 88-byte
// record per client plus its key (about 350 bytes a waiting client in all,
// with 32-byte keys, by bench/run.sh), and does the following per pairing:
//
//   - one accept4 per listener event (a second call would only fail);
//   - peek at the GET_PAIR right after accept, so a client whose peer is
//     already waiting is paired without ever entering epoll;
//   - park a waiting client in the index, and register it with epoll (and
//     keep it in the ConnStore) only after pollDelay, since most waits are
//     shorter than that;
//   - pair by sending SET_PAIR to the waiter first: if it has gone, the
//     newcomer is matched again and never receives a dead end.

// This file holds the loop itself and its timers; the rest of the engine
// is split by concern: accept.go takes connections and sheds them when out
// of descriptors, request.go reads each client's GET_PAIR, match.go pairs
// or parks it (with index.go for finding a waiter), conn.go keeps the
// connection table, and list.go is the one list type all of them thread
// through it.

// pollDelay is how long a parked client waits before the engine registers
// it with epoll to notice hang-ups, and keeps it in the ConnStore. A
// waiter that left earlier is caught by the failed send; one lost in a
// crash earlier was asking and pairing at once, and asks again.
const pollDelay = 500 * time.Microsecond

// yieldEvery is how often the loop passes through the scheduler. A loop
// that never yields is preempted by signal every 10 ms, and when that lands
// during a system call the runtime hands the P away: that cost more than
// the yield.
const yieldEvery = 2 * time.Millisecond

// listID names the deadline list a conn is on: a conn is on at most one.
type listID uint8

const (
	onNoList  listID = iota
	onReading        // handshake deadline list, in accept order
	onPending        // parked for less than pollDelay, in park order
)

// loop is the engine's state. Only the loop goroutine touches it; other
// goroutines reach it through Broker.post.
type loop struct {
	b        *Broker
	epfd     int
	lfd      int // the listener, owned by the loop unless handed over
	wakeFD   int // eventfd that Broker.post writes to
	spareFD  int // /dev/null, closed to make room when accept hits EMFILE
	stopping bool
	// handedOver: the listener and clients went to a State; closing the
	// loop must leave them open.
	handedOver bool

	start  time.Time
	now    int64 // ns since start, as of the last epoll_wait
	conns  []conn
	index  map[uint64]fdList // slot of (key, mode) -> its waiters; see index.go
	nconns int

	reading, pending fdList
	waiting          fdList           // parked clients in park order, when MaxWait is set
	perUID           map[uint32]int   // waiting clients per uid, when MaxWaitingPerUID is set
	byUID            map[uint32]int32 // connections per uid, when users are told apart
	cred             unix.Ucred       // peer's buffer
	drainBuf         [libspbroker.MessageSize]byte

	events  []unix.EpollEvent
	ev      unix.EpollEvent
	peek    peeker
	send    sender
	msg     libspbroker.Message // the request being handled
	seed    maphash.Seed
	pair    [2]int // a socketpair made but not yet handed out, or -1s
	debug   bool
	lastLog int64 // last limit warning
	// The lines a flood could repeat: denials, quota refusals, sheds,
	// and the waiters a new policy disconnects.
	denyLog, quotaLog, shedLog, revokeLog logLimit
	// The ConnStore's calls not made yet (store.go), from storeHead on;
	// storeBusyAt is when the store last said it was busy, or 0.
	storeQ        []storeOp
	storeHead     int
	storeBusyAt   int64
	lastStoreWarn int64 // the last warning about the ConnStore
	refusals      uint64
	pausedAt      int64 // listener paused since, or 0
	pollFD        [1]unix.PollFd
	freeBufs      []*reqBuf
}

// newLoop makes the loop's epoll instance, eventfd and spare descriptor,
// all its own, and registers listener lfd and the eventfd with epoll. The
// loop owns lfd from then on; on error it does not, and closes nothing of
// the caller's.
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
		byUID:   make(map[uint32]int32),
	}
	l.peek.init()
	l.send.init()
	// On failure lfd stays the caller's, who closes it.
	fail := func(err error) (*loop, error) {
		l.lfd = -1
		l.close()
		return nil, err
	}
	var err error
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fail(os.NewSyscallError("epoll_create1", err))
	}
	if l.wakeFD, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fail(os.NewSyscallError("eventfd", err))
	}
	l.spareFD = openSpare()
	// The listener is level-triggered: one accept per event, and the next
	// epoll_wait reports it again while connections are queued.
	if err := l.ctl(unix.EPOLL_CTL_ADD, lfd, unix.EPOLLIN, 0); err != nil {
		return fail(err)
	}
	if err := l.ctl(unix.EPOLL_CTL_ADD, l.wakeFD, unix.EPOLLIN, 0); err != nil {
		return fail(err)
	}
	return l, nil
}

// ctl applies epoll_ctl op to fd, tagging its events with gen so that an
// event for a closed and reused descriptor is recognised as stale.
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
	l.drainStore()
	l.closePair()
	for _, fd := range []int{l.lfd, l.epfd, l.wakeFD, l.spareFD} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	l.lfd, l.epfd, l.wakeFD, l.spareFD = -1, -1, -1, -1
}

// clock returns the ns since the loop started.
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

// wake empties the eventfd and runs the calls other goroutines posted.
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
		l.waiterEvent(fd, hup)
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

// timeout returns the epoll_wait timeout in ms: until the next deadline,
// or -1 for none. A deadline may be negative, before the loop started, for
// a client adopted after a hand-over: it is due now, not absent.
func (l *loop) timeout() int {
	next, have := int64(0), false
	earliest := func(d int64) {
		if !have || d < next {
			next, have = d, true
		}
	}
	if l.pending.head != noFD {
		earliest(l.conns[l.pending.head].since + int64(pollDelay))
	}
	if l.reading.head != noFD {
		earliest(l.conns[l.reading.head].since + int64(l.b.handshake))
	}
	if l.b.maxWait > 0 && l.waiting.head != noFD {
		earliest(l.conns[l.waiting.head].since + int64(l.b.maxWait))
	}
	if l.pausedAt != 0 {
		earliest(l.pausedAt + int64(listenPause))
	}
	if l.storeBusyAt != 0 {
		earliest(l.storeBusyAt + int64(storeRetry))
	}
	if !have {
		return -1
	}
	wait := next - l.clock()
	if wait <= 0 {
		return 0
	}
	return int((wait + int64(time.Millisecond) - 1) / int64(time.Millisecond))
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
		c := &l.conns[fd]
		if !c.polled {
			if l.poll(fd); c.state != stWaiting {
				continue // dropped: epoll refused it
			}
		}
		l.keep(fd)
	}
	if l.storeBusyAt != 0 {
		l.flushStore()
	}
	l.resumeListener()
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
