package broker

import (
	"hash/maphash"

	"github.com/one-socket/one-socket/libspbroker"
)

// The waiting index maps a 64-bit hash of (key, mode) to the oldest waiter
// with that hash; waiters with the same hash form a FIFO queue threaded
// through conn.qprev/qnext (the head's qprev is the tail). A request is
// hashed once, whatever its length, and the map holds no pointers, so the
// garbage collector never walks it however many clients wait.
//
// Two different keys can share a hash only by chance (the seed is random
// per process), and then they share a queue: a lookup walks it for the
// first waiter whose key is equal, which keeps first come, first served
// among equal waiters in every case.

// hashKey returns the hash of key that slot combines with a mode.
func (l *loop) hashKey(key []byte) uint64 {
	if testHash != nil {
		return testHash(key)
	}
	return maphash.Bytes(l.seed, key)
}

// testHash, when set by a test, replaces the hash so that collisions can
// be made at will.
var testHash func([]byte) uint64

// slot returns the index slot of (key, mode) for a key hashed by hashKey.
// Distinct modes land far apart: the multiplier is odd.
func slot(h uint64, mode libspbroker.Mode) uint64 {
	return h + uint64(mode)*0x9e3779b97f4a7c15
}

// findWaiter returns the oldest waiter in slot s whose key is key, or noFD.
func (l *loop) findWaiter(s uint64, key []byte) int32 {
	w, ok := l.index[s]
	if !ok {
		return noFD
	}
	for ; w != noFD; w = l.conns[w].qnext {
		if l.conns[w].key == string(key) {
			return w
		}
	}
	return noFD
}

// enqueue appends fd, whose slot is set, to the tail of its queue.
func (l *loop) enqueue(fd int32) {
	c := &l.conns[fd]
	c.qnext = noFD
	head, ok := l.index[c.slot]
	if !ok {
		l.index[c.slot] = fd
		c.qprev = fd
		return
	}
	h := &l.conns[head]
	l.conns[h.qprev].qnext = fd
	c.qprev = h.qprev
	h.qprev = fd
}

// unqueue removes fd from its queue.
func (l *loop) unqueue(fd int32) {
	c := &l.conns[fd]
	head := l.index[c.slot]
	switch {
	case head == fd && c.qnext == noFD:
		delete(l.index, c.slot)
	case head == fd:
		l.conns[c.qnext].qprev = c.qprev
		l.index[c.slot] = c.qnext
	default:
		l.conns[c.qprev].qnext = c.qnext
		if c.qnext != noFD {
			l.conns[c.qnext].qprev = c.qprev
		} else {
			l.conns[head].qprev = c.qprev
		}
	}
	c.qprev, c.qnext = noFD, noFD
}
