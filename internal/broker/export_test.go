package broker

import (
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// PollDelay exports pollDelay: how long a parked client waits before the
// engine watches it for hang-ups.
const PollDelay = pollDelay

// Stall blocks the engine's loop goroutine until release is called, so that
// a test can make several things happen "at once" from the engine's point of
// view: everything the clients do while the loop is stalled reaches it in
// one epoll_wait batch. Stall returns once the loop is blocked. It reports
// ok == false if the broker is not serving (or the loop did not take the
// call within a few seconds).
func (b *Broker) Stall() (release func(), ok bool) {
	entered := make(chan struct{})
	rel := make(chan struct{})
	if !b.post(func(*loop) {
		close(entered)
		<-rel
	}) {
		return nil, false
	}
	var once sync.Once
	release = func() { once.Do(func() { close(rel) }) }
	select {
	case <-entered:
		return release, true
	case <-time.After(5 * time.Second):
		release()
		return nil, false
	}
}

// ConnFDs returns the descriptor numbers of the engine's open client
// connections, in increasing order, as the loop goroutine sees them.
func (b *Broker) ConnFDs() (fds []int, ok bool) {
	ch := make(chan []int, 1)
	if !b.post(func(l *loop) {
		var fds []int
		for fd := range l.conns {
			if l.conns[fd].state != stFree {
				fds = append(fds, fd)
			}
		}
		ch <- fds
	}) {
		return nil, false
	}
	select {
	case fds = <-ch:
		return fds, true
	case <-time.After(5 * time.Second):
		return nil, false
	}
}

// SetHash replaces the waiting index's key hash until the returned function
// restores it; engines started meanwhile use it.
func SetHash(h func([]byte) uint64) (restore func()) {
	testHash = h
	return func() { testHash = nil }
}

// PendingCalls returns how many posted calls wait for the loop goroutine.
func (b *Broker) PendingCalls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.calls)
}

// DropSpare closes the loop's spare descriptor, as if it could not be
// reopened after the last shortage; it reports false if the broker is not
// serving.
func (b *Broker) DropSpare() bool {
	done := make(chan struct{})
	if !b.post(func(l *loop) {
		if l.spareFD >= 0 {
			unix.Close(l.spareFD)
			l.spareFD = -1
		}
		close(done)
	}) {
		return false
	}
	<-done
	return true
}
