package broker

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// listenPause is how long the listener is ignored when even the spare
// descriptor cannot make room to refuse a connection.
const listenPause = 100 * time.Millisecond

// limitLogEvery rate-limits the warning about refused connections.
const limitLogEvery = 10 * time.Second

// accept takes one connection from the listener. The loop owns the new
// descriptor until drop closes it or a hand-over passes it on.
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
	var uid uint32
	if l.b.maxUIDConns > 0 {
		p, err := l.peer(fd)
		if err != nil {
			unix.Close(fd)
			l.refused("cannot read a client's credentials", "err", err)
			return
		}
		uid = p.UID
		// Root is trusted with more: it could stop the broker anyway, and
		// hosts whose clients all run as root need the whole limit.
		if uid != 0 && int(l.byUID[uid]) >= l.b.maxUIDConns {
			unix.Close(fd)
			l.refused("a user holds its whole share of connections", "uid", uid, "limit", l.b.maxUIDConns)
			return
		}
	}
	if l.nconns >= l.b.maxConns && !l.shed(uid) {
		l.drain(fd)
		unix.Close(fd)
		l.refused("connection limit reached", "limit", l.b.maxConns)
		return
	}
	l.track(fd, l.now, uid)
	l.readRequest(int32(fd), false, false)
}

// shed makes room for a connection of user uid when the broker is full:
// it closes the newest handshake of the user holding the most
// connections, unless that is uid itself or holds no more than uid. It
// reports whether it made room. A flood of connections that never finish
// their request thus costs the flooder its own newest ones, and another
// user still gets in.
func (l *loop) shed(uid uint32) bool {
	if l.b.maxUIDConns == 0 {
		return false
	}
	top, most := uid, l.byUID[uid]
	for u, n := range l.byUID {
		if n > most {
			top, most = u, n
		}
	}
	if top == uid {
		return false
	}
	// Newest first: the handshake list is in accept order.
	if l.reading.head == noFD {
		return false
	}
	tail := l.conns[l.reading.head].links[deadlineLink].prev
	for fd := tail; ; fd = l.conns[fd].links[deadlineLink].prev {
		if l.conns[fd].uid == top {
			l.b.stats.shed.Add(1)
			if l.debug {
				l.b.log.Debug("shedding a handshake to make room", "fd", fd, "uid", top, "for_uid", uid)
			}
			l.drop(fd)
			return true
		}
		if fd == l.reading.head {
			return false
		}
	}
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
		l.spareFD = openSpare()
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

// resumeListener listens again once listenPause has passed since
// refuseNoRoom paused the listener.
func (l *loop) resumeListener() {
	if l.pausedAt != 0 && l.now-l.pausedAt >= int64(listenPause) {
		if l.ctl(unix.EPOLL_CTL_MOD, l.lfd, unix.EPOLLIN, 0) == nil {
			l.pausedAt = 0
		}
	}
}

// openSpare opens the descriptor that refuseNoRoom closes to make room, or
// returns -1: the loop owns it and runs without one if it cannot open it.
func openSpare() int {
	fd, _ := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	return fd
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
