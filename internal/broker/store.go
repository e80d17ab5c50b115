package broker

import (
	"errors"
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
//  1. A client is kept once it has waited pollDelay: most waits are
//     shorter, and systemd's cost per stored descriptor grows with the
//     store (doc/performance.md). A crash before that closes its
//     connection, which it sees as the broker hanging up; it was pairing
//     at once, and asks again (libspbroker's GetPair does).
//  2. Pairing consumes the newcomer's request, then the waiter's, then
//     sends the waiter its SET_PAIR, then the newcomer. A kept connection
//     whose request is gone was being paired: the next process closes it
//     (step 4), so no client is paired twice; a waiter closed so asks
//     again. A crash between the two SET_PAIRs gives the waiter an end
//     whose peer dies with the process; the newcomer gets none, never a
//     dead peer, and asks again. One system call lies in each of these
//     windows. (A newcomer left over when the waiter had gone parks with
//     its request consumed, so it is not kept.)
//  3. The copy is released after both SET_PAIRs, and when a client is
//     dropped for any other reason, after its request was consumed.
//  4. A connection taken back must hold a whole request at once; one that
//     holds nothing (or less) is closed.

// ConnStore keeps copies of waiting clients' connections outside the
// process, so that they outlive it. The engine calls it from its loop, so
// neither method may block: when the store cannot take a call now, it
// returns an error that wraps ErrStoreBusy, and the engine calls again
// later, in order.
type ConnStore interface {
	// Keep stores a copy of connection fd and returns a nonzero id for
	// it; the caller keeps fd.
	Keep(fd int) (id uint64, err error)
	// Release removes the copy stored under id.
	Release(id uint64) error
}

// ErrStoreBusy says that a ConnStore cannot take a call now (systemd has
// not read the messages before it yet).
var ErrStoreBusy = errors.New("broker: the store is busy")

const (
	// storeRetry is how long the engine waits before calling a busy
	// store again.
	storeRetry = time.Millisecond
	// storeDrainTimeout bounds the wait for a busy store to take the
	// releases due when the engine stops.
	storeDrainTimeout = 5 * time.Second
	// storeWarnEvery spaces out the warnings about a failing store.
	storeWarnEvery = 10 * time.Second
)

// storeOp is a ConnStore call not made yet: the release of id, or (id 0)
// keeping waiter fd, if it still waits in the same connection (gen).
type storeOp struct {
	id  uint64
	fd  int32
	gen uint32
}

// keep has waiter fd's connection kept, if the engine has a store and the
// request is still unread in it (a request consumed in pieces is not: a
// process started after a crash could not read it again).
func (l *loop) keep(fd int32) {
	c := &l.conns[fd]
	if l.b.store == nil || c.stored != 0 || c.consumed != 0 || c.drained {
		return
	}
	l.storeQ = append(l.storeQ, storeOp{fd: fd, gen: c.gen})
	l.flushStore()
}

// release has c's stored copy, if it has one, removed. A keep still
// queued for c is dropped by flushStore, as c no longer waits.
func (l *loop) release(c *conn) {
	if c.stored == 0 {
		return
	}
	l.storeQ = append(l.storeQ, storeOp{id: c.stored})
	c.stored = 0
	l.b.stats.kept.Add(-1)
	l.flushStore()
}

// flushStore makes the queued ConnStore calls, in order, until the store
// is busy; then it waits storeRetry (timeout and expire look at
// storeBusyAt).
func (l *loop) flushStore() {
	if l.storeBusyAt != 0 && l.clock()-l.storeBusyAt < int64(storeRetry) {
		return
	}
	l.storeBusyAt = 0
	for l.storeHead < len(l.storeQ) {
		if err := l.storeCall(l.storeQ[l.storeHead]); errors.Is(err, ErrStoreBusy) {
			l.storeBusyAt = max(l.clock(), 1)
			break
		}
		l.storeHead++
	}
	switch {
	case l.storeHead == len(l.storeQ):
		l.storeQ, l.storeHead = l.storeQ[:0], 0
	case l.storeHead > 1024 && 2*l.storeHead > len(l.storeQ):
		n := copy(l.storeQ, l.storeQ[l.storeHead:])
		l.storeQ, l.storeHead = l.storeQ[:n], 0
	}
}

// storeCall makes one queued call; only ErrStoreBusy leaves it queued.
func (l *loop) storeCall(op storeOp) error {
	var err error
	if op.id != 0 {
		err = l.b.store.Release(op.id)
	} else {
		c := &l.conns[op.fd]
		if c.gen != op.gen || c.state != stWaiting || c.stored != 0 {
			return nil // paired or gone meanwhile: nothing to keep
		}
		var id uint64
		if id, err = l.b.store.Keep(int(op.fd)); err == nil && id == 0 {
			err = errors.New("the store gave no id")
		}
		if err == nil {
			c.stored = id
			l.b.stats.kept.Add(1)
		}
	}
	if err != nil && !errors.Is(err, ErrStoreBusy) {
		l.b.stats.storeFailed.Add(1)
		l.storeFailed(err)
	}
	return err
}

// drainStore makes the releases still queued, waiting up to
// storeDrainTimeout for a busy store, before the engine stops or hands
// its clients over: the next engine would not know their ids. Keeps are
// dropped; the next engine keeps its waiters itself.
func (l *loop) drainStore() {
	deadline := time.Now().Add(storeDrainTimeout)
	for i := l.storeHead; i < len(l.storeQ); i++ {
		op := l.storeQ[i]
		if op.id == 0 {
			continue
		}
		for errors.Is(l.storeCall(op), ErrStoreBusy) && time.Now().Before(deadline) {
			time.Sleep(storeRetry)
		}
	}
	l.storeQ, l.storeHead, l.storeBusyAt = l.storeQ[:0], 0, 0
}

// storeFailed warns about a store error, at most once per storeWarnEvery.
func (l *loop) storeFailed(err error) {
	if now := l.clock(); l.lastStoreWarn == 0 || now-l.lastStoreWarn >= int64(storeWarnEvery) {
		l.lastStoreWarn = now
		l.b.log.Warn("the store of waiting clients failed; those clients would not survive a crash", "err", err, "failures", l.b.stats.storeFailed.Load())
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
