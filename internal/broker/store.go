package broker

import (
	"time"

	"github.com/one-socket/one-socket/libspbroker"
)

// Crash survival. With a ConnStore, every client that starts waiting and
// whose GET_PAIR was only peeked at, so that it is still unread in its
// socket, is kept outside the process (the daemon uses systemd's file
// descriptor store); a process started after a crash gets the copies back
// and reads each request again (HandedConn.Reread). The order of the steps
// makes a crash at any instant safe:
//
//  1. A client is kept only once it waits. A crash before that closes its
//     connection, which it sees as the broker hanging up.
//  2. Pairing consumes both requests, then sends the waiter its SET_PAIR,
//     then the newcomer. A kept connection whose request is gone was being
//     paired: the next process closes it (step 4), so no client is paired
//     twice. A crash between the two SET_PAIRs gives the waiter an end
//     whose peer dies with the process; the newcomer gets none, never a
//     dead peer, and asks again. Nothing but the one sendmsg lies between
//     them, to keep that window small. (A newcomer left over when the
//     waiter had gone parks with its request consumed, so it is not kept.)
//  3. The copy is released after both SET_PAIRs, and when a client is
//     dropped for any other reason, after its request was consumed.
//  4. A connection taken back must hold a whole request at once; one that
//     holds nothing (or less) is closed.

// ConnStore keeps copies of waiting clients' connections outside the
// process, so that they outlive it. The engine calls it from its loop, so
// both methods should be quick.
type ConnStore interface {
	// Keep stores a copy of connection fd and returns a nonzero id for
	// it; the caller keeps fd.
	Keep(fd int) (id uint64, err error)
	// Release removes the copy stored under id.
	Release(id uint64) error
}

// storeWarnEvery spaces out the warnings about a failing store.
const storeWarnEvery = 10 * time.Second

// keep stores waiter fd's connection, if the engine has a store and the
// request is still unread in it (a request consumed in pieces is not: a
// process started after a crash could not read it again).
func (l *loop) keep(fd int32) {
	c := &l.conns[fd]
	if l.b.store == nil || c.stored != 0 || c.consumed != 0 || c.drained {
		return
	}
	id, err := l.b.store.Keep(int(fd))
	if err != nil || id == 0 {
		l.b.stats.storeFailed.Add(1)
		l.storeFailed("cannot keep a waiting client for a crash", err)
		return
	}
	c.stored = id
}

// release removes c's stored copy, if it has one.
func (l *loop) release(c *conn) {
	if c.stored == 0 {
		return
	}
	id := c.stored
	c.stored = 0
	if err := l.b.store.Release(id); err != nil {
		l.b.stats.storeFailed.Add(1)
		l.storeFailed("cannot release a stored client", err)
	}
}

// storeFailed warns about a store error, at most once per storeWarnEvery.
func (l *loop) storeFailed(msg string, err error) {
	if now := l.clock(); l.lastStoreWarn == 0 || now-l.lastStoreWarn >= int64(storeWarnEvery) {
		l.lastStoreWarn = now
		l.b.log.Warn(msg, "err", err, "failures", l.b.stats.storeFailed.Load())
	}
}

// consumeRequest reads fd's request out of its socket, if only peeked at,
// before anything is sent to it: the client then sees end of file after
// the engine's reply, and a kept copy no longer reads as a request.
func (l *loop) consumeRequest(fd int32) {
	c := &l.conns[fd]
	if !c.drained && c.consumed < libspbroker.MessageSize {
		l.drain(int(fd))
	}
	c.drained = true
}
