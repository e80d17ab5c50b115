package broker_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/libspbroker"
)

// With every key hashing alike, all waiters share one queue: pairing must
// still match equal keys only, in arrival order, and leave the others be.
func TestIndexHashCollisions(t *testing.T) {
	t.Cleanup(broker.SetHash(func([]byte) uint64 { return 42 }))
	e := startBroker(t, nil)
	bl := snapshot(t, e)

	a1 := e.park(t, "alpha", libspbroker.ModeServer)
	b1 := e.park(t, "bravo", libspbroker.ModeServer)
	a2 := e.park(t, "alpha", libspbroker.ModeServer)
	n1 := e.park(t, "alpha", libspbroker.ModeNone)
	e.waitWaiting(t, 4)

	// The first "alpha" server is the oldest match, though "bravo" and a
	// NONE "alpha" sit in the same queue.
	pairBoth(t, a1, e.request(t, "alpha", libspbroker.ModeClient))
	pairBoth(t, b1, e.request(t, "bravo", libspbroker.ModeClient))
	pairBoth(t, n1, e.request(t, "alpha", libspbroker.ModeNone))
	pairBoth(t, a2, e.request(t, "alpha", libspbroker.ModeClient))
	require.Zero(t, e.Stats().Waiting)

	// A key that collides with a waiter but differs must wait.
	c := e.park(t, "charlie", libspbroker.ModeClient)
	d := e.park(t, "delta", libspbroker.ModeServer)
	e.waitWaiting(t, 2)
	require.True(t, c.quiet(quietFor))
	require.True(t, d.quiet(quietFor))
	pairBoth(t, c, e.request(t, "charlie", libspbroker.ModeServer))
	pairBoth(t, d, e.request(t, "delta", libspbroker.ModeClient))
	bl.verify(t)
}
