package broker

import (
	"github.com/one-socket/one-socket/internal/logsafe"

	"github.com/one-socket/one-socket/libspbroker"
)

// Peer holds the credentials of a client's process as the kernel gave them
// at connect time (SO_PEERCRED): the primary gid only.
type Peer struct {
	PID      int32
	UID, GID uint32
}

// Authorizer decides whether a peer may ask for a pair on key in mode. It
// runs on the engine's goroutine for every request, so it must be quick and
// must not block; a non-nil error denies the request and is logged.
type Authorizer interface {
	Authorize(p Peer, key []byte, mode libspbroker.Mode) error
}

// SetAuthorizer replaces the access decision; nil allows everything. It
// applies to requests from now on and to the clients already waiting: a
// policy that no longer allows one must not let it be paired, so those are
// disconnected, counted as denied and logged. On a serving broker the
// loop puts a in force and rechecks the waiters in one turn, so that no
// request is judged by a while a waiter it refuses still waits; then
// SetAuthorizer returns. Safe from any goroutine but the loop's.
func (b *Broker) SetAuthorizer(a Authorizer) {
	var ap *Authorizer
	if a != nil {
		ap = &a
	}
	if b.call(func(l *loop) { l.setAuthorizer(ap) }) == ErrClosed {
		// Not serving: no client waits, and the loop reads it when it
		// starts.
		b.auth.Store(ap)
	}
}

// setAuthorizer puts ap in force (nil allows everything) and disconnects
// the waiting clients it no longer allows.
func (l *loop) setAuthorizer(ap *Authorizer) {
	l.b.auth.Store(ap)
	if ap != nil {
		l.recheckWaiters(*ap)
	}
}

// recheckWaiters disconnects the waiting clients that a no longer allows,
// naming each at warn level (as many as revokeLog lets through) and then
// how many there were.
func (l *loop) recheckWaiters(a Authorizer) {
	dropped := 0
	for fd := range l.conns {
		c := &l.conns[fd]
		if c.state != stWaiting {
			continue
		}
		p, err := l.peer(fd)
		args := []any{"pid", p.PID, "uid", p.UID, "gid", p.GID}
		if err != nil {
			args = []any{"peer_err", err}
		} else if err = a.Authorize(p, []byte(c.key), c.mode); err == nil {
			continue
		}
		l.b.stats.denied.Add(1)
		dropped++
		if ok, suppressed := l.revokeLog.allow(l.now); ok {
			args = append(args, "mode", c.mode.String(), "key", logsafe.Key([]byte(c.key)), "reason", err)
			l.b.log.Warn("waiting client disconnected: the new policy does not allow it", suppressedArg(args, suppressed)...)
		}
		l.drop(int32(fd))
	}
	if dropped > 0 {
		l.b.log.Warn("waiting clients disconnected: the new policy does not allow them", "dropped", dropped)
	}
}

// admit applies the access policy and reads the peer's credentials when a
// policy or a per-user quota needs them. It reports false after
// disconnecting a client that may not proceed.
func (l *loop) admit(fd int32, mode libspbroker.Mode, key []byte) bool {
	ap := l.b.auth.Load()
	if ap == nil && (l.b.maxPerUID == 0 || l.b.maxUIDConns > 0) {
		// Nothing to decide, or only the quota, whose uid accept read.
		return true
	}
	c := &l.conns[fd]
	p, err := l.peer(int(fd))
	if err != nil {
		l.b.log.Warn("cannot read client credentials; disconnecting it", "err", err)
		l.drop(fd)
		return false
	}
	c.uid = p.UID
	if ap == nil {
		return true
	}
	if err := (*ap).Authorize(p, key, mode); err != nil {
		l.b.stats.denied.Add(1)
		if ok, suppressed := l.denyLog.allow(l.now); ok {
			l.b.log.Warn("request denied", suppressedArg([]any{"pid", p.PID, "uid", p.UID, "gid", p.GID,
				"mode", mode.String(), "key", logsafe.Key(key), "reason", err}, suppressed)...)
		}
		l.drop(fd)
		return false
	}
	return true
}

// overQuota reports whether fd's user already has as many clients waiting
// as the per-user limit allows.
func (l *loop) overQuota(fd int32) bool {
	return l.b.maxPerUID > 0 && l.perUID[l.conns[fd].uid] >= l.b.maxPerUID
}
