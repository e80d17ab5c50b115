package relay

import (
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// connPair returns two connected *net.UnixConn.
func connPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	a, b := socketPair(t)
	x, y := unixConn(t, a, "x"), unixConn(t, b, "y")
	t.Cleanup(func() { x.Close(); y.Close() })
	return x, y
}

// roundTrip checks that what is written on a arrives on b and back.
func roundTrip(t *testing.T, a, b *net.UnixConn) {
	t.Helper()
	_, err := a.Write([]byte("ping"))
	require.NoError(t, err)
	buf := make([]byte, 4)
	_, err = b.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "ping", string(buf))
	_, err = b.Write([]byte("pong"))
	require.NoError(t, err)
	_, err = a.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "pong", string(buf))
}

type handoffEnd struct {
	role Role
	own  *net.UnixConn // Holds: this end's connection to its program
	prog *net.UnixConn // Holds: the program's side of own
	res  HandoffResult
	err  error
}

// runHandoff runs both ends on a fresh brokered pair.
func runHandoff(t *testing.T, x, y *handoffEnd) {
	t.Helper()
	for _, e := range []*handoffEnd{x, y} {
		if e.role == Holds {
			e.own, e.prog = connPair(t)
		}
	}
	bx, by := connPair(t)
	done := make(chan struct{})
	go func() { x.res, x.err = Handoff(bx, x.role, x.own); close(done) }()
	y.res, y.err = Handoff(by, y.role, y.own)
	<-done
	require.NoError(t, x.err)
	require.NoError(t, y.err)
}

func TestHandoffHoldsToTakes(t *testing.T) {
	h, k := &handoffEnd{role: Holds}, &handoffEnd{role: Takes}
	runHandoff(t, h, k)
	assert.True(t, h.res.Gave)
	require.NotNil(t, k.res.Conn)
	defer k.res.Conn.Close()
	h.own.Close() // the giver's copy: the program's peer is now in k
	roundTrip(t, h.prog, k.res.Conn)
}

func TestHandoffBothTake(t *testing.T) {
	x, y := &handoffEnd{role: Takes}, &handoffEnd{role: Takes}
	runHandoff(t, x, y)
	require.NotNil(t, x.res.Conn)
	require.NotNil(t, y.res.Conn)
	roundTrip(t, x.res.Conn, y.res.Conn)
}

func TestHandoffBothHold(t *testing.T) {
	x, y := &handoffEnd{role: Holds}, &handoffEnd{role: Holds}
	runHandoff(t, x, y)
	require.NotEqual(t, x.res.Gave, y.res.Gave, "exactly one end gives")
	giver, taker := x, y
	if y.res.Gave {
		giver, taker = y, x
	}
	giver.own.Close()
	require.NotNil(t, taker.res.Conn)
	// The taker relays its own connection with the one it received.
	done := make(chan error, 1)
	go func() { done <- Relay(End{taker.own, "own"}, End{taker.res.Conn, "received"}) }()
	roundTrip(t, giver.prog, taker.prog)
	giver.prog.Close()
	taker.prog.Close()
	assert.NoError(t, <-done)
}

// Whatever a program sends right after the hello stays queued for it.
func TestHandoffLeavesProgramBytesQueued(t *testing.T) {
	bx, by := connPair(t)
	done := make(chan HandoffResult, 1)
	go func() {
		res, err := Handoff(bx, Takes, nil)
		assert.NoError(t, err)
		res.Conn.Write([]byte("early"))
		done <- res
	}()
	res, err := Handoff(by, Takes, nil)
	require.NoError(t, err)
	other := <-done
	buf := make([]byte, 5)
	_, err = res.Conn.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "early", string(buf))
	other.Conn.Close()
}

// A peer that is not one-socketctl --handoff is refused, not trusted.
func TestHandoffRefusesAStranger(t *testing.T) {
	bx, by := connPair(t)
	go func() {
		by.Write([]byte("{\"QMP\": {\"version\": 7}}\r\n"))
	}()
	_, err := Handoff(bx, Takes, nil)
	assert.ErrorContains(t, err, "not one-socketctl --handoff")

	cx, cy := connPair(t)
	cy.Close()
	_, err = Handoff(cx, Takes, nil)
	assert.ErrorContains(t, err, "closed before its hello")
}

// A hello with descriptors, or a hand-over of something else, is refused
// and what came with it closed.
func TestHandoffRefusesBadHandOver(t *testing.T) {
	bx, by := connPair(t)
	fds := memfds(t, 1, "not a socket") // here: require may not stop the test from a goroutine
	go func() {
		hello := make([]byte, helloSize)
		copy(hello, helloMagic)
		hello[4], hello[5] = helloVersion, byte(Holds)
		by.Write(hello)
		by.Read(make([]byte, helloSize))
		by.WriteMsgUnix([]byte{giveByte}, unix.UnixRights(fds...), nil)
		closeAll(fds)
	}()
	_, err := Handoff(bx, Takes, nil)
	assert.ErrorContains(t, err, "not a stream socket")
}

func TestHandoffKey(t *testing.T) {
	k := []byte("vm1/disk")
	assert.Equal(t, "vm1/disk#handoff", string(HandoffKey(k)))
	assert.Equal(t, "vm1/disk", string(k), "the caller's key is left alone")
}
