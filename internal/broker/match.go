package broker

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/logsafe"

	"github.com/one-socket/one-socket/libspbroker"
)

// match pairs fd with the oldest compatible waiter, or parks it. With
// checkHup it first makes sure fd's client is still there, at the cost of a
// system call paid only when a waiter exists. The socketpair is the loop's:
// each client receives a copy of one end, then the loop closes both ends
// and both clients; a pair whose waiter vanished waits for the next one.
func (l *loop) match(fd int32, mode libspbroker.Mode, key []byte, checkHup bool) {
	h := l.hashKey(key)
	peer := slot(h, mode.Peer())
	for {
		w := l.findWaiter(peer, key)
		if w == noFD {
			l.closePair() // left over if a waiter vanished
			if l.overQuota(fd) {
				l.b.stats.overQuota.Add(1)
				if ok, suppressed := l.quotaLog.allow(l.now); ok {
					args := append(l.peerArgs(int(fd)), "mode", mode.String(), "key", logsafe.Key(key), "limit", l.b.maxPerUID)
					l.b.log.Warn("request refused: the user has too many clients waiting", suppressedArg(args, suppressed)...)
				}
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
		// pair with the next one. Both requests are consumed before, the
		// waiter's last, so that a crash leaves as little as it can between
		// a waiter's consumed request and its SET_PAIR, and between the two
		// SET_PAIRs: store.go says why.
		waited := l.now - l.conns[w].since
		l.dequeue(w)
		l.consumeRequest(fd)
		l.consumeRequest(w)
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
			l.b.stats.wait.observe(waited)
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
			l.b.log.Debug("paired", "key", logsafe.Key(key), "mode", mode.String())
		}
		return
	}
}

// hungUp reports whether fd's client has closed its end, without waiting.
func (l *loop) hungUp(fd int32) bool {
	l.pollFD[0] = unix.PollFd{Fd: fd, Events: unix.POLLRDHUP}
	n, err := unix.Poll(l.pollFD[:], 0)
	return err == nil && n > 0 && l.pollFD[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0
}

// closePair closes the loop's ends of a socketpair not handed out.
func (l *loop) closePair() {
	for i, fd := range l.pair {
		if fd >= 0 {
			unix.Close(fd)
			l.pair[i] = -1
		}
	}
}

// park makes fd wait in index slot s; the loop keeps fd until it is paired
// or dropped.
func (l *loop) park(fd int32, mode libspbroker.Mode, key []byte, s uint64) {
	c := &l.conns[fd]
	c.key = string(key)
	c.mode = mode
	c.slot = s
	c.state = stWaiting
	c.since = l.now
	l.enqueue(fd)
	l.b.stats.waitingByMode[mode%libspbroker.ModeMax].Add(1)
	if l.b.maxPerUID > 0 {
		l.perUID[c.uid]++
	}
	if l.b.maxWait > 0 {
		l.waiting.push(l.conns, fd)
	}
	l.listOn(fd, onPending)
	if l.debug {
		l.b.log.Debug("client waiting", "fd", fd, "key", logsafe.Key(key), "mode", mode.String())
	}
}

// waiterEvent handles an epoll event for waiter fd: a hang-up, or data
// that a waiter must not send.
func (l *loop) waiterEvent(fd int32, hup bool) {
	c := &l.conns[fd]
	if hup {
		l.b.stats.vanished.Add(1)
		if l.debug {
			l.b.log.Debug("waiting client hung up", "fd", fd)
		}
		l.drop(fd)
		return
	}
	// Only a second message or descriptors make a waiter readable again:
	// the GET_PAIR and its padding were seen already.
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
	l.b.stats.waitingByMode[c.mode%libspbroker.ModeMax].Add(-1)
	l.unlist(fd)
}
