package broker_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/libspbroker"
)

func TestWaitingLists(t *testing.T) {
	e := startBroker(t, nil)
	bl := snapshot(t, e)

	first := e.park(t, "first", libspbroker.ModeServer)
	e.waitWaiting(t, 1)
	second := e.park(t, "second", libspbroker.ModeNone)
	e.waitWaiting(t, 2)

	ws, err := e.Waiting()
	require.NoError(t, err)
	require.Len(t, ws, 2)
	assert.Equal(t, "first", string(ws[0].Key), "longest-waiting first")
	assert.Equal(t, libspbroker.ModeServer, ws[0].Mode)
	assert.Equal(t, "second", string(ws[1].Key))
	assert.Equal(t, libspbroker.ModeNone, ws[1].Mode)
	assert.GreaterOrEqual(t, ws[0].Waited, ws[1].Waited)
	for _, w := range ws {
		assert.True(t, w.Cred)
		assert.Equal(t, int32(os.Getpid()), w.PID)
		assert.Equal(t, uint32(os.Getuid()), w.UID)
		assert.Equal(t, uint32(os.Getgid()), w.GID)
	}

	pairBoth(t, first, e.request(t, "first", libspbroker.ModeClient))
	pairBoth(t, second, e.request(t, "second", libspbroker.ModeNone))
	ws, err = e.Waiting()
	require.NoError(t, err)
	assert.Empty(t, ws)
	bl.verify(t)
}

func TestDropWaiting(t *testing.T) {
	e := startBroker(t, nil)
	bl := snapshot(t, e)

	a := e.park(t, "victim", libspbroker.ModeServer)
	b := e.park(t, "victim", libspbroker.ModeNone)
	other := e.park(t, "bystander", libspbroker.ModeClient)
	e.waitWaiting(t, 3)

	n, err := e.Drop([]byte("victim"))
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	a.expectClosed()
	b.expectClosed()
	a.close()
	b.close()
	assert.Equal(t, 1, e.Stats().Waiting)

	n, err = e.Drop([]byte("nobody"))
	require.NoError(t, err)
	assert.Zero(t, n)

	// The bystander is undisturbed and still pairs.
	require.True(t, other.quiet(quietFor))
	pairBoth(t, other, e.request(t, "bystander", libspbroker.ModeServer))
	bl.verify(t)
}

func TestControlAfterShutdown(t *testing.T) {
	b, err := broker.New(nil)
	require.NoError(t, err)
	b.Shutdown()
	_, err = b.Waiting()
	assert.ErrorIs(t, err, broker.ErrClosed)
	_, err = b.Drop([]byte("k"))
	assert.ErrorIs(t, err, broker.ErrClosed)
}
