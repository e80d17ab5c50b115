package broker_test

// Waiters that leave: a dead waiter must never be paired, must stop being
// counted, and must leave its place to the next client.

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/libspbroker"
)

// A waiter that closes stops waiting; a later client with its key waits
// for a live peer instead of receiving an end whose peer is gone.
func TestWaiterHangsUp(t *testing.T) {
	for _, tc := range []struct {
		name string
		wait time.Duration
	}{
		{"before_the_engine_watches_it", 0},
		{"while_watched_by_epoll", 4 * broker.PollDelay},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startBroker(t, nil)
			bl := snapshot(t, e)
			key := newKey()
			w := e.park(t, key, libspbroker.ModeServer)
			time.Sleep(tc.wait)
			w.close()
			s := e.waitStats(t, "waiter gone", func(s broker.Stats) bool { return s.Waiting == 0 && s.Conns == 0 })
			assert.Equal(t, uint64(1), s.Vanished)

			c := e.park(t, key, libspbroker.ModeClient)
			require.True(t, c.quiet(quietFor), "the newcomer must wait, not pair with the waiter that left")
			assert.Zero(t, e.Stats().Paired)
			pairBoth(t, c, e.request(t, key, libspbroker.ModeServer))
			bl.verify(t)
		})
	}
}

// A waiter closes in the same instant a compatible newcomer arrives. The
// waiter's close returns before the newcomer's GET_PAIR is even sent, so
// the broker can only reach the waiter after it is gone: its SET_PAIR to
// the waiter fails (EPIPE) or it has seen the hang-up already. Either way
// the newcomer must not receive anything; it must wait, and then pair with
// the next live partner. (What is not guaranteed, and not asserted: a
// waiter closing after the broker's send to it succeeded leaves the
// newcomer with an end whose peer is gone; no broker can prevent that.)
func TestWaiterHangsUpAsPeerArrives(t *testing.T) {
	const rounds = 300
	e := startBroker(t, nil)
	bl := snapshot(t, e)
	for i := range rounds {
		key := newKey()
		var n *client
		switch i % 3 {
		case 0:
			// Close and request back to back, whether or not the engine
			// already watches the waiter.
			w := e.park(t, key, libspbroker.ModeServer)
			w.close()
			n = e.request(t, key, libspbroker.ModeClient)
		case 1:
			// The waiter is watched by epoll; its hang-up and the
			// newcomer's connection reach the engine in one batch.
			w := e.park(t, key, libspbroker.ModeServer)
			time.Sleep(2 * broker.PollDelay)
			release := e.stall(t)
			w.close()
			n = e.request(t, key, libspbroker.ModeClient)
			release()
		case 2:
			// The waiter sends its request and leaves before the engine
			// accepts it; the newcomer follows at once. The engine parks
			// the waiter unwatched, and only its failed send can tell.
			release := e.stall(t)
			w := e.request(t, key, libspbroker.ModeServer)
			w.close()
			n = e.request(t, key, libspbroker.ModeClient)
			release()
		}
		s := e.waitStats(t, "the waiter is counted as vanished and the newcomer waits", func(s broker.Stats) bool {
			return s.Vanished == uint64(i+1) && s.Waiting == 1
		})
		require.Equal(t, uint64(i), s.Paired, "round %d: the newcomer was paired with the waiter that had left", i)
		require.True(t, n.quiet(0), "round %d: the newcomer heard from the broker before any live partner came", i)

		p := e.request(t, key, libspbroker.ModeServer)
		pairBoth(t, n, p)
	}
	s := e.waitStats(t, "all paired", func(s broker.Stats) bool { return s.Paired == rounds })
	assert.Equal(t, uint64(rounds), s.Vanished)
	bl.verify(t)
}

// A client whose request becomes complete in the same instant it hangs up
// is gone. It must not be paired: that would hand a live waiter an end
// whose peer is known to be closed, and cost it its place. Nor parked: it
// would hold a descriptor and a place in Waiting until a peer came, and
// count against MaxConns. A client that only half-closes can still
// receive, and pairs.
func TestHangUpRightAfterRequest(t *testing.T) {
	cases := []struct {
		name string
		// send makes the client's request complete and hangs it up (or
		// half-closes it) so that the engine sees both in one batch.
		send     func(t *testing.T, e *engine, key string) *client
		halfOpen bool
	}{
		{"rest_of_request_and_close_in_one_batch", func(t *testing.T, e *engine, key string) *client {
			msg := getPair(key, libspbroker.ModeServer)
			c := dial(t, e.path)
			c.send(msg[:500])
			// Accepted and, its request incomplete, watched by epoll.
			e.waitStats(t, "accepted", func(s broker.Stats) bool { return s.Conns == s.Waiting+1 })
			release := e.stall(t)
			c.send(msg[500:])
			c.close()
			release()
			return c
		}, false},
		{"request_and_close_before_accept", func(t *testing.T, e *engine, key string) *client {
			release := e.stall(t)
			c := e.request(t, key, libspbroker.ModeServer)
			c.close()
			release()
			return c
		}, false},
		{"rest_of_request_and_half-close_in_one_batch", func(t *testing.T, e *engine, key string) *client {
			msg := getPair(key, libspbroker.ModeServer)
			c := dial(t, e.path)
			c.send(msg[:500])
			e.waitStats(t, "accepted", func(s broker.Stats) bool { return s.Conns == s.Waiting+1 })
			release := e.stall(t)
			c.send(msg[500:])
			c.shutWrite()
			release()
			return c
		}, true},
	}
	for _, tc := range cases {
		for _, peerWaits := range []bool{false, true} {
			name := tc.name + "/nobody_waiting"
			if peerWaits {
				name = tc.name + "/peer_waiting"
			}
			t.Run(name, func(t *testing.T) {
				e := startBroker(t, nil)
				bl := snapshot(t, e)
				key := newKey()
				var peer *client
				if peerWaits {
					peer = e.park(t, key, libspbroker.ModeClient)
				}
				c := tc.send(t, e, key)
				if tc.halfOpen {
					if peer == nil {
						e.waitWaiting(t, 1)
						peer = e.request(t, key, libspbroker.ModeClient)
					}
					pairBoth(t, c, peer)
					bl.verify(t)
					return
				}
				waiting := 0
				if peerWaits {
					waiting = 1
				}
				s := e.waitStats(t, "the client that hung up is handled", func(s broker.Stats) bool {
					return s.Accepted == uint64(waiting+1) && s.Conns <= waiting
				})
				require.Equal(t, waiting, s.Waiting, "the waiting peer was handed the end of a client that had already hung up")
				require.Equal(t, waiting, s.Conns)
				assert.Zero(t, s.Paired)
				assert.Equal(t, [len(s.ProtocolErrors)]uint64{}, s.ProtocolErrors, "a complete request is no protocol error")
				if peer == nil {
					peer = e.park(t, key, libspbroker.ModeClient)
				}
				require.True(t, peer.quiet(quietFor), "the peer must still be waiting")
				pairBoth(t, peer, e.request(t, key, libspbroker.ModeServer))
				bl.verify(t)
			})
		}
	}
}

// Within one epoll_wait batch a connection can be closed and its
// descriptor number reused by a connection accepted later in the batch; an
// event of the old connection later in the same batch must not be applied
// to the new one. Here A (waiting, watched) pairs with N and is closed, B
// is accepted on A's old number, and A's own event (its half-close) comes
// last: B must not be treated as having hung up. Which number the kernel
// hands B is checked, and the scenario repeated until B got A's (a
// transient descriptor elsewhere in the process can spoil an attempt).
func TestStaleEventAfterDescriptorReuse(t *testing.T) {
	e := startBroker(t, nil)
	bl := snapshot(t, e)
	reused := false
	for attempt := 0; attempt < 20 && !reused; attempt++ {
		// The kernel hands out the lowest free descriptor number: with the
		// holes in the table filled, A's number is the lowest one freed.
		fillers := fillDescriptorHoles(t)

		key := newKey()
		a := e.park(t, key, libspbroker.ModeServer)
		time.Sleep(4 * broker.PollDelay) // now watched by epoll
		n := dial(t, e.path)
		msg := getPair(key, libspbroker.ModeClient)
		n.send(msg[:500])
		e.waitStats(t, "N accepted", func(s broker.Stats) bool { return s.Conns == 2 })
		before := e.connFDs(t)
		require.Len(t, before, 2)

		release := e.stall(t)
		n.send(msg[500:])    // completes N's request: it pairs with A, and A's connection closes
		b := dial(t, e.path) // accepted next, on A's old descriptor number
		a.shutWrite()        // A's event, queued behind B's connection
		release()

		pairBoth(t, a, n)
		after := e.connFDs(t)
		t.Logf("attempt %d: A and N on %v, B on %v", attempt, before, after)
		require.Len(t, after, 1, "B's connection was closed: was an event meant for A applied to it?")
		reused = after[0] == before[0]
		if reused {
			require.True(t, b.quiet(quietFor), "B was disconnected by an event meant for A")
			assert.Equal(t, 1, e.Stats().Conns)
		}
		key2 := newKey()
		b.send(getPair(key2, libspbroker.ModeServer))
		pairBoth(t, b, e.request(t, key2, libspbroker.ModeClient))
		for _, f := range fillers {
			f.close()
		}
	}
	require.True(t, reused, "B's connection never took A's old descriptor number")
	bl.verify(t)
}

// fillDescriptorHoles opens /dev/null until every descriptor number below
// the highest one open is taken; the fillers are closed on cleanup.
func fillDescriptorHoles(t *testing.T) []*ownedFD {
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	highest := 0
	for _, ent := range ents {
		if fd, err := strconv.Atoi(ent.Name()); err == nil && fd > highest {
			highest = fd
		}
	}
	var fillers []*ownedFD
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		fillers = append(fillers, own(t, fd))
		if fd >= highest {
			return fillers
		}
	}
}

// When the only waiter turns out to be gone (its SET_PAIR fails), the
// newcomer waits; if the newcomer then leaves too, nothing may remain
// open: the socketpair made for the failed hand-over must not outlive it.
func TestFailedHandOverLeavesNothingOpen(t *testing.T) {
	e := startBroker(t, nil)
	bl := snapshot(t, e)
	key := newKey()
	// The waiter sends its request and leaves before the engine accepts
	// it; the engine parks it unwatched and learns it left from the
	// failed send to it when the newcomer arrives.
	release := e.stall(t)
	w := e.request(t, key, libspbroker.ModeServer)
	w.close()
	n := e.request(t, key, libspbroker.ModeClient)
	release()
	e.waitStats(t, "the waiter vanished, the newcomer waits", func(s broker.Stats) bool {
		return s.Vanished == 1 && s.Waiting == 1 && s.Conns == 1
	})
	require.True(t, n.quiet(0))
	n.close()
	bl.verify(t)
	assertPairs(t, e.path)
	bl.verify(t)
}
