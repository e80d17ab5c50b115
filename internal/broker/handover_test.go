package broker_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/libspbroker"
)

// An engine hands its listener and every client to a successor: waiters
// keep their order and pair after the change, a client half-way through
// its request finishes it with the successor, and a client that connects
// while no engine runs is served by the successor. Nothing is left open.
func TestHandover(t *testing.T) {
	before := countFDs(t)
	e := startBroker(t, &broker.Config{HandshakeTimeout: 2 * time.Second})

	first := e.park(t, "shared", libspbroker.ModeServer)
	e.waitWaiting(t, 1)
	second := e.park(t, "shared", libspbroker.ModeServer)
	none := e.park(t, "none", libspbroker.ModeNone)
	e.waitWaiting(t, 3)
	half := dial(t, e.path)
	msg := getPair("half", libspbroker.ModeClient)
	half.send(msg[:600])
	e.waitStats(t, "4 connections", func(s broker.Stats) bool { return s.Conns == 4 })

	st, err := e.Handover()
	require.NoError(t, err)
	require.Len(t, st.Conns, 4)
	assert.Zero(t, e.Stats().Conns)

	// Between engines, a newcomer waits in the listener's queue.
	early := dial(t, e.path)
	early.send(getPair("none", libspbroker.ModeNone))

	next, err := broker.New(&broker.Config{HandshakeTimeout: 2 * time.Second})
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- next.ServeState(st) }()
	t.Cleanup(func() {
		next.Shutdown()
		assert.ErrorIs(t, <-served, broker.ErrClosed)
		assert.Equal(t, before, countFDs(t), "descriptors after both engines stopped")
	})

	// The early newcomer pairs with the NONE waiter handed over.
	pairBoth(t, none, early)
	// First come, first served survives the change.
	pairBoth(t, first, requestTo(t, e.path, "shared", libspbroker.ModeClient))
	pairBoth(t, second, requestTo(t, e.path, "shared", libspbroker.ModeClient))
	// The half-sent request completes with the new engine.
	half.send(msg[600:])
	peer := requestTo(t, e.path, "half", libspbroker.ModeServer)
	pairBoth(t, half, peer)

	s := next.Stats()
	assert.Equal(t, uint64(4), s.Paired, "pairs made by the new engine")
	assert.Zero(t, s.TimedOut)
	assert.Zero(t, s.Vanished)
}

// requestTo connects to path and sends a GET_PAIR.
func requestTo(t *testing.T, path, key string, mode libspbroker.Mode) *client {
	t.Helper()
	c := dial(t, path)
	c.send(getPair(key, mode))
	return c
}

// TestHandedWaiterHangUp checks that a waiter handed over after a long
// wait, whose deadlines fall before the new engine started, is watched:
// its hang-up is seen at once, and no newcomer is paired with it.
func TestHandedWaiterHangUp(t *testing.T) {
	e := startBroker(t, nil)
	w := e.park(t, "gone", libspbroker.ModeServer)
	e.waitWaiting(t, 1)
	st, err := e.Handover()
	require.NoError(t, err)
	require.Len(t, st.Conns, 1)
	st.Conns[0].Since = time.Hour // waited long before the hand-over

	next, err := broker.New(nil)
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- next.ServeState(st) }()
	t.Cleanup(func() {
		next.Shutdown()
		<-served
	})
	require.Eventually(t, func() bool { return next.Stats().Waiting == 1 }, time.Minute, time.Millisecond)
	w.close()
	require.Eventually(t, func() bool { s := next.Stats(); return s.Vanished == 1 && s.Waiting == 0 },
		time.Minute, time.Millisecond, "the hang-up of a handed-over waiter went unseen")
}
