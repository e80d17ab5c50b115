package broker_test

// Pairing: which clients pair, in which order, and what happens to waiters
// that leave.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/libspbroker"
)

// bytewiseTimeout is the handshake deadline of the engines that receive
// requests one byte per write: long enough for 1044 writes on a loaded
// machine, short enough that a request the engine cannot finish fails the
// test quickly.
const bytewiseTimeout = time.Second

// A GET_PAIR is complete at 1040 bytes and may carry up to 4 bytes of
// padding: every length from 1040 to 1044 is accepted and paired, however
// it arrives, whichever side waits.
func TestGetPairLengthsAndFragments(t *testing.T) {
	for _, size := range []int{libspbroker.DocumentedMessageSize, libspbroker.DocumentedMessageSize + 2, msgSize} {
		for _, bytewise := range []bool{false, true} {
			for _, waits := range []bool{true, false} {
				how := "one_write"
				if bytewise {
					how = "1-byte_writes"
				}
				role := "as_newcomer"
				if waits {
					role = "as_waiter"
				}
				t.Run(fmt.Sprintf("%d_bytes/%s/%s", size, how, role), func(t *testing.T) {
					e := startBroker(t, &broker.Config{HandshakeTimeout: bytewiseTimeout})
					bl := snapshot(t, e)
					key := newKey()
					var peer *client
					if !waits {
						peer = e.park(t, key, libspbroker.ModeServer)
					}
					c := dial(t, e.path)
					msg := getPair(key, libspbroker.ModeClient)[:size]
					if bytewise {
						n, err := c.sendBytewise(msg)
						if err != nil {
							// Paired and closed by the broker as soon as the
							// first 1040 bytes were in: only padding may fail.
							require.False(t, waits, "write %d of %d failed while nobody could pair: %v (stats %+v)", n, size, err, e.Stats())
							require.GreaterOrEqual(t, n, libspbroker.DocumentedMessageSize, "write %d of %d failed: %v (stats %+v)", n, size, err, e.Stats())
						}
					} else {
						c.send(msg)
					}
					if waits {
						e.waitWaiting(t, 1)
						peer = e.request(t, key, libspbroker.ModeServer)
					}
					pairBoth(t, c, peer)
					s := e.waitStats(t, "Paired == 1", func(s broker.Stats) bool { return s.Paired == 1 })
					assert.Equal(t, [len(s.ProtocolErrors)]uint64{}, s.ProtocolErrors)
					assert.Zero(t, s.TimedOut)
					bl.verify(t)
				})
			}
		}
	}
}

// A request sent in two parts with a pause, well within the deadline.
func TestSlowSenderWithinDeadline(t *testing.T) {
	const deadline = 500 * time.Millisecond
	e := startBroker(t, &broker.Config{HandshakeTimeout: deadline})
	bl := snapshot(t, e)
	key := newKey()
	c := dial(t, e.path)
	msg := getPair(key, libspbroker.ModeNone)
	c.send(msg[:600])
	time.Sleep(deadline / 10)
	c.send(msg[600:])
	e.waitWaiting(t, 1)
	// Waiting clients have no deadline.
	time.Sleep(deadline * 3 / 2)
	require.True(t, c.quiet(quietFor), "a waiting client must not be closed by the handshake deadline")
	assert.Equal(t, 1, e.Stats().Waiting)
	assert.Zero(t, e.Stats().TimedOut)
	pairBoth(t, c, e.request(t, key, libspbroker.ModeNone))
	bl.verify(t)
}

// Which modes pair: NONE with NONE, CLIENT with SERVER; nothing else. When
// two clients must not pair, both wait, and each then pairs with a proper
// partner (first come, first served for the first partner).
func TestModes(t *testing.T) {
	const (
		none   = libspbroker.ModeNone
		client = libspbroker.ModeClient
		server = libspbroker.ModeServer
	)
	cases := []struct {
		a, b  libspbroker.Mode
		pairs bool
	}{
		{none, none, true},
		{client, server, true},
		{server, client, true},
		{client, client, false},
		{server, server, false},
		{none, client, false},
		{none, server, false},
		{client, none, false},
		{server, none, false},
	}
	e := startBroker(t, nil)
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%v_then_%v", tc.a, tc.b), func(t *testing.T) {
			bl := snapshot(t, e)
			before := e.Stats()
			key := newKey()
			a := e.park(t, key, tc.a)
			b := e.request(t, key, tc.b)
			if tc.pairs {
				pairBoth(t, a, b)
				e.waitStats(t, "Paired+1", func(s broker.Stats) bool { return s.Paired == before.Paired+1 })
				bl.verify(t)
				return
			}
			e.waitWaiting(t, 2)
			require.True(t, a.quiet(quietFor), "%v must not pair with %v", tc.a, tc.b)
			require.True(t, b.quiet(0), "%v must not pair with %v", tc.b, tc.a)
			assert.Equal(t, before.Paired, e.Stats().Paired)
			pairBoth(t, a, e.request(t, key, tc.a.Peer()))
			pairBoth(t, b, e.request(t, key, tc.b.Peer()))
			bl.verify(t)
		})
	}
}

// Keys match only if they have the same length and the same bytes; the key
// bytes past key_len do not count.
func TestKeys(t *testing.T) {
	e := startBroker(t, nil)
	req := func(key string, keyLen int, mode libspbroker.Mode) []byte {
		return rawMsg(uint32(libspbroker.RequestGetPair), libspbroker.ProtocolVersion,
			libspbroker.GetPairPayloadSize, uint16(mode), uint16(keyLen), key)
	}
	long := strings.Repeat("k", libspbroker.MaxKeyLength)
	noPair := []struct {
		name     string
		aKey     string
		aLen     int
		bKey     string
		bLen     int
		peerAKey string // a key equal to a's, for a's proper partner
		peerBKey string
	}{
		// The same 1024 key bytes on the wire; only key_len differs.
		{"same_bytes_different_length", "abc", 3, "abc", 4, "abc", "abc\x00"},
		{"prefix", "abc", 3, "abcd", 4, "abc", "abcd"},
		{"same_length_different_bytes", "abc", 3, "abd", 3, "abc", "abd"},
		{"1024_bytes_differing_in_the_last", long, 1024, long[:1023] + "K", 1024, long, long[:1023] + "K"},
		{"case", "Key", 3, "key", 3, "Key", "key"},
	}
	for _, tc := range noPair {
		t.Run(tc.name, func(t *testing.T) {
			bl := snapshot(t, e)
			a := dial(t, e.path)
			a.send(req(tc.aKey, tc.aLen, libspbroker.ModeServer))
			e.waitWaiting(t, 1)
			b := dial(t, e.path)
			b.send(req(tc.bKey, tc.bLen, libspbroker.ModeClient))
			e.waitWaiting(t, 2)
			require.True(t, a.quiet(quietFor), "keys %q/%d and %q/%d must not pair", tc.aKey, tc.aLen, tc.bKey, tc.bLen)
			require.True(t, b.quiet(0))

			pa := dial(t, e.path)
			pa.send(getPair(tc.peerAKey, libspbroker.ModeClient))
			pairBoth(t, a, pa)
			pb := dial(t, e.path)
			pb.send(getPair(tc.peerBKey, libspbroker.ModeServer))
			pairBoth(t, b, pb)
			bl.verify(t)
		})
	}
	// Junk past key_len is ignored: it pairs with a clean key.
	t.Run("bytes_past_key_len_ignored", func(t *testing.T) {
		bl := snapshot(t, e)
		key := newKey()
		a := dial(t, e.path)
		a.send(req(key+"JUNK\xff", len(key), libspbroker.ModeServer))
		e.waitWaiting(t, 1)
		pairBoth(t, a, e.request(t, key, libspbroker.ModeClient))
		bl.verify(t)
	})
	t.Run("1024_bytes", func(t *testing.T) {
		bl := snapshot(t, e)
		key := (newKey() + long)[:libspbroker.MaxKeyLength]
		pairBoth(t, e.park(t, key, libspbroker.ModeNone), e.request(t, key, libspbroker.ModeNone))
		bl.verify(t)
	})
	t.Run("1_byte", func(t *testing.T) {
		bl := snapshot(t, e)
		pairBoth(t, e.park(t, "\x00", libspbroker.ModeServer), e.request(t, "\x00", libspbroker.ModeClient))
		bl.verify(t)
	})
}

// Several waiters with the same key and mode are served in arrival order.
func TestFirstComeFirstServed(t *testing.T) {
	e := startBroker(t, nil)
	bl := snapshot(t, e)
	key := newKey()
	const n = 6
	waiters := make([]*client, n)
	for i := range waiters {
		waiters[i] = e.park(t, key, libspbroker.ModeServer)
	}
	// A waiter with the same key in an incompatible mode is not disturbed.
	other := e.park(t, key, libspbroker.ModeNone)
	for i, w := range waiters {
		c := e.request(t, key, libspbroker.ModeClient)
		fc := c.recvSetPair()
		// The oldest waiter has the other end; the younger ones still wait.
		fw := w.recvSetPair()
		assertConnected(t, fc.fd, fw.fd)
		for _, later := range waiters[i+1:] {
			require.True(t, later.quiet(0), "waiter %d was served out of turn", i)
		}
		fc.close()
		fw.close()
		c.close()
		w.close()
	}
	e.waitStats(t, "Paired == n", func(s broker.Stats) bool { return s.Paired == n })
	require.True(t, other.quiet(0))
	pairBoth(t, other, e.request(t, key, libspbroker.ModeNone))
	bl.verify(t)
}
