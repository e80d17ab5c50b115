package broker

import (
	"hash/maphash"

	"github.com/one-socket/one-socket/libspbroker"
)

// The waiting index maps a 64-bit hash of (key, mode) to the FIFO queue of
// the waiters with that hash, an fdList threaded through their queueLink,
// oldest first. A request is
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
	q, ok := l.index[s]
	if !ok {
		return noFD
	}
	for w := q.head; w != noFD; w = q.next(l.conns, w) {
		if l.conns[w].key == string(key) {
			return w
		}
	}
	return noFD
}

// enqueue appends fd, whose slot is set, to the tail of its queue.
func (l *loop) enqueue(fd int32) {
	s := l.conns[fd].slot
	q, ok := l.index[s]
	if !ok {
		q = newList(queueLink)
	}
	q.push(l.conns, fd)
	if !ok {
		l.index[s] = q // a push to a queue keeps its head
	}
}

// unqueue removes fd from its queue.
func (l *loop) unqueue(fd int32) {
	s := l.conns[fd].slot
	q := l.index[s]
	wasHead := q.head == fd
	q.remove(l.conns, fd)
	switch {
	case q.head == noFD:
		delete(l.index, s)
	case wasHead:
		l.index[s] = q
	}
}
