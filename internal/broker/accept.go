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
			l.refused(-1, "cannot read a client's credentials", "err", err)
			return
		}
		uid = p.UID
		// Root is trusted with more: it could stop the broker anyway, and
		// hosts whose clients all run as root need the whole limit.
		if uid != 0 && int(l.byUID[uid]) >= l.b.maxUIDConns {
			l.refused(fd, "a user holds its whole share of connections", "limit", l.b.maxUIDConns)
			return
		}
	}
	if l.nconns >= l.b.maxConns && !l.shed(uid) {
		l.drain(fd)
		l.refused(fd, "connection limit reached", "limit", l.b.maxConns)
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
	for fd := l.reading.tail(l.conns); fd != noFD; fd = l.reading.prev(l.conns, fd) {
		if l.conns[fd].uid == top {
			l.b.stats.shed.Add(1)
			if ok, suppressed := l.shedLog.allow(l.now); ok {
				args := append(l.peerArgs(int(fd)), "for_uid", uid, "limit", l.b.maxConns)
				l.b.log.Warn("shedding a user's newest unfinished connection to make room", suppressedArg(args, suppressed)...)
			}
			l.drop(fd)
			return true
		}
	}
	return false
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
			l.refused(-1, "out of descriptors", "err", os.NewSyscallError("accept4", e))
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
		// The spare is gone if the table filled up again before
		// refuseNoRoom could reopen it: without it, every later shortage
		// would pause the listener instead of refusing one client.
		if l.spareFD < 0 {
			l.spareFD = openSpare()
		}
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

// refused closes the refused connection fd (unless it is -1, already
// closed), counts it and warns at most every limitLogEvery, naming the
// client (its pid, uid and gid) when it has fd. It closes fd before
// counting, so that whoever sees the count finds the connection closed.
func (l *loop) refused(fd int, why string, args ...any) {
	logNow := l.lastLog == 0 || l.now-l.lastLog >= int64(limitLogEvery)
	if fd >= 0 {
		if logNow {
			args = append(l.peerArgs(fd), args...)
		}
		unix.Close(fd)
	}
	l.b.stats.refused.Add(1)
	l.refusals++
	if logNow {
		l.b.log.Warn("refusing connections: "+why, append(args, "refused_since_last_warning", l.refusals)...)
		l.lastLog = max(l.now, 1)
		l.refusals = 0
	}
}

// peerArgs names the client on fd in a log line: pid, uid and gid, or
// the error that kept them unknown. Only for lines that are logged: it
// costs a system call.
func (l *loop) peerArgs(fd int) []any {
	p, err := l.peer(fd)
	if err != nil {
		return []any{"peer_err", err}
	}
	return []any{"pid", p.PID, "uid", p.UID, "gid", p.GID}
}

// Lines that a flood of clients could repeat: at most logBurst of each
// kind every limitLogEvery, the next one after a pause saying how many
// were left out.
const logBurst = 10

// logLimit rate-limits one kind of line.
type logLimit struct {
	start      int64 // when the current period began, 0 for none yet
	n          int   // lines logged in it
	suppressed uint64
}

// allow reports whether a line may be logged now and, if so, how many
// were left out since the last one.
func (r *logLimit) allow(now int64) (bool, uint64) {
	if r.start == 0 || now-r.start >= int64(limitLogEvery) {
		r.start, r.n = max(now, 1), 0
	}
	if r.n >= logBurst {
		r.suppressed++
		return false, 0
	}
	r.n++
	s := r.suppressed
	r.suppressed = 0
	return true, s
}

// suppressedArg adds the number of lines left out to args, when there
// were any.
func suppressedArg(args []any, suppressed uint64) []any {
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	return args
}
