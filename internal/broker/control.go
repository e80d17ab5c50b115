package broker

import (
	"cmp"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/libspbroker"
)

// WaitingClient describes a client waiting for its peer.
type WaitingClient struct {
	Key    []byte
	Mode   libspbroker.Mode
	Waited time.Duration // since its GET_PAIR was complete

	// The peer's credentials at connect time (SO_PEERCRED); Cred is false
	// if the kernel would not say.
	Cred     bool
	PID      int32
	UID, GID uint32
}

// call runs fn on the loop goroutine and waits for it. It returns ErrClosed
// when the broker is not serving.
func (b *Broker) call(fn func(*loop)) error {
	done := make(chan struct{})
	if !b.post(func(l *loop) {
		defer close(done)
		if !l.stopping {
			fn(l)
		}
	}) {
		return ErrClosed
	}
	<-done
	return nil
}

// Waiting returns the clients waiting now, longest-waiting first.
func (b *Broker) Waiting() ([]WaitingClient, error) {
	var out []WaitingClient
	err := b.call(func(l *loop) {
		now := l.clock()
		for fd := range l.conns {
			c := &l.conns[fd]
			if c.state != stWaiting {
				continue
			}
			w := WaitingClient{Key: []byte(c.key), Mode: c.mode, Waited: time.Duration(now - c.since)}
			if cr, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
				w.Cred, w.PID, w.UID, w.GID = true, cr.Pid, cr.Uid, cr.Gid
			}
			out = append(out, w)
		}
	})
	slices.SortStableFunc(out, func(a, b WaitingClient) int { return cmp.Compare(b.Waited, a.Waited) })
	return out, err
}

// Drop disconnects every client waiting with key, in any mode, and returns
// how many there were.
func (b *Broker) Drop(key []byte) (int, error) {
	n := 0
	err := b.call(func(l *loop) {
		for fd := range l.conns {
			c := &l.conns[fd]
			if c.state == stWaiting && c.key == string(key) {
				if l.debug {
					l.b.log.Debug("dropping waiting client on request", "fd", fd)
				}
				l.drop(int32(fd))
				n++
			}
		}
	})
	return n, err
}
