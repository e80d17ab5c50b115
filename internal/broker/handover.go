package broker

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/libspbroker"
)

// A restart must lose no client: the listening socket keeps queueing new
// connections while no engine runs, and every connection the old engine
// held, with what it knew about it, passes to the new one. Handover stops
// an engine without closing anything and describes it in a State;
// ServeState starts an engine from one, in this process or, with the
// descriptors inherited across exec, in the next.

// ErrHandedOver is returned by Serve and ServeState after Handover. It
// matches ErrClosed: the engine is closed, though its clients are not.
var ErrHandedOver = fmt.Errorf("%w: handed over", ErrClosed)

// HandedConn is a client connection passed from one engine to the next.
type HandedConn struct {
	FD int // the connection; owned by whoever holds the State

	// Waiting says a whole GET_PAIR was received and the client waits for
	// its peer; otherwise it is still sending its request.
	Waiting bool
	Key     []byte
	Mode    libspbroker.Mode
	UID     uint32 // meaningful when the engine needed credentials
	// Since is how long ago the client started waiting (or connected, if
	// it is still sending): deadlines and first-come-first-served order
	// carry over.
	Since time.Duration
	// Partial holds request bytes already consumed from a client still
	// sending in pieces; Consumed, the bytes a waiter's request took from
	// its stream when it was consumed rather than peeked.
	Partial  []byte
	Consumed int

	// Stored is the ConnStore's id for the connection's copy, 0 for none:
	// the engine that serves it releases the copy when done with it.
	Stored uint64
	// Reread says that nothing is known of the client but that its
	// request, if it has one, is whole and unread in its socket: the
	// engine reads it again, and closes a connection that holds none
	// (store.go). Waiting, Key, Mode, Partial and Consumed are ignored.
	Reread bool
}

// State is an engine's listener and clients, as Handover returns them.
type State struct {
	Listener int
	Conns    []HandedConn
}

// Close closes every descriptor in s, for a State nobody will serve.
func (s *State) Close() {
	if s.Listener >= 0 {
		unix.Close(s.Listener)
		s.Listener = -1
	}
	for _, c := range s.Conns {
		unix.Close(c.FD)
	}
	s.Conns = nil
}

// Handover stops the engine without closing its listener or its clients
// and returns them; the caller owns every descriptor in the State. Serve
// then returns ErrHandedOver. Connections that arrive meanwhile wait in the
// listener's queue for the engine that serves the State.
func (b *Broker) Handover() (*State, error) {
	var st *State
	err := b.call(func(l *loop) {
		st = l.handOver()
	})
	if err != nil {
		return nil, err
	}
	<-b.done
	return st, nil
}

// handOver describes the loop's listener and clients in a State and
// detaches them from the loop, so that closing it leaves them open.
func (l *loop) handOver() *State {
	l.drainStore()
	now := l.clock()
	st := &State{Listener: l.lfd}
	for fd := range l.conns {
		c := &l.conns[fd]
		if c.state == stFree {
			continue
		}
		h := HandedConn{FD: fd, Since: time.Duration(now - c.since), UID: c.uid, Consumed: int(c.consumed), Stored: c.stored}
		if c.state == stWaiting {
			h.Waiting, h.Key, h.Mode = true, []byte(c.key), c.mode
			l.dequeue(int32(fd))
		} else if c.partial != nil {
			h.Partial = append([]byte(nil), c.partial[:c.got]...)
			l.dropPartial(c)
		}
		if c.stored != 0 {
			l.b.stats.kept.Add(-1) // its copy goes on with the State
		}
		l.unlist(int32(fd))
		// Out of this loop's epoll set: the descriptor lives on.
		if c.polled {
			unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		}
		l.forget(c)
		st.Conns = append(st.Conns, h)
	}
	l.lfd = -1 // not closed with the loop
	l.stopping = true
	l.handedOver = true
	return st
}

// ServeState runs the engine on a State from Handover, taking ownership of
// its descriptors, until Shutdown (ErrClosed) or Handover (ErrHandedOver).
func (b *Broker) ServeState(st *State) error {
	if err := unix.SetNonblock(st.Listener, true); err != nil {
		return err
	}
	return b.serve(st.Listener, func(l *loop) { l.adopt(st) })
}

// adopt takes over a State's clients: waiters and those whose request is
// to be read again first, oldest first, so that each key's queue keeps
// its order; then those still sending, which may pair at once with the
// waiters.
func (l *loop) adopt(st *State) {
	conns := slices.Clone(st.Conns)
	first := func(h HandedConn) bool { return h.Waiting || h.Reread }
	slices.SortStableFunc(conns, func(a, b HandedConn) int {
		if first(a) != first(b) {
			if first(a) {
				return -1
			}
			return 1
		}
		return cmp.Compare(b.Since, a.Since)
	})
	l.now = l.clock()
	for _, h := range conns {
		if h.FD < 0 || h.FD > 1<<30 {
			continue
		}
		fd := int32(h.FD)
		unix.CloseOnExec(h.FD)
		unix.SetNonblock(h.FD, true)
		// The uid as the kernel says: the previous engine may not have
		// needed it, and handed over whatever its table held.
		uid := h.UID
		if l.b.maxUIDConns > 0 {
			if p, err := l.peer(h.FD); err == nil {
				uid = p.UID
			}
		}
		since := l.now - int64(h.Since)
		c := l.track(h.FD, since, uid)
		if l.b.store != nil && h.Stored != 0 {
			c.stored = h.Stored
			l.b.stats.kept.Add(1)
		}
		if h.Reread {
			c.reread = true
			l.readRequest(fd, false, false)
			if c.state == stWaiting {
				c.since = since // park stamped it with now
			}
			continue
		}
		c.consumed = uint16(min(max(h.Consumed, 0), libspbroker.MessageSize))
		if h.Waiting {
			if err := libspbroker.CheckKey(h.Key); err != nil || libspbroker.CheckMode(h.Mode) != nil {
				l.drop(fd)
				continue
			}
			l.park(fd, h.Mode, h.Key, slot(l.hashKey(h.Key), h.Mode))
			c.since = l.now - int64(h.Since) // park stamped it with now
			continue
		}
		if len(h.Partial) > 0 {
			c.partial = l.getBuf()
			c.got = uint16(copy(c.partial[:], h.Partial))
		}
		l.readRequest(fd, false, false)
	}
	st.Listener = -1
	st.Conns = nil
}
