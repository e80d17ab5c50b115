package broker_test

// Bad input: every way a client can break the protocol, each against a
// fresh engine. Each case checks that the offending client is disconnected
// without a SET_PAIR, that exactly the right counter went up, that a
// compatible client waiting with the same key (the decoy) is untouched,
// that nothing leaked, and that the engine still pairs.

import (
	"errors"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/libspbroker"
)

const (
	reqGetPair = uint32(libspbroker.RequestGetPair)
	reqSetPair = uint32(libspbroker.RequestSetPair)
	version    = uint32(libspbroker.ProtocolVersion)
	getSize    = uint32(libspbroker.GetPairPayloadSize)
	setSize    = uint32(libspbroker.SetPairPayloadSize)
	modeClient = uint16(libspbroker.ModeClient)
)

// badClient is what a case does to the engine: it connects one or more
// offending clients with key and returns the ones that must see the broker
// close their connection (a client that closed itself cannot).
type badClient func(t *testing.T, e *engine, key string) []*client

// sendOnce returns a case that sends msg, with nfds copies of a pipe's
// write end, in one sendmsg, and checks that every copy is closed.
func sendOnce(msg []byte, nfds int) badClient {
	return func(t *testing.T, e *engine, _ string) []*client {
		c := dial(t, e.path)
		if nfds == 0 {
			c.send(msg)
			return []*client{c}
		}
		r, w := pipe(t)
		fds := make([]int, nfds)
		for i := range fds {
			fds[i] = w.fd
		}
		c.send(msg, fds...)
		w.close()
		c.expectClosed()
		c.close()
		assertPipeClosed(t, r)
		return nil
	}
}

// badGetPair returns a GET_PAIR for key in CLIENT mode, the decoy's peer,
// with edit applied to its fields.
func badGetPair(key string, edit func(m *libspbroker.Message)) []byte {
	m := libspbroker.NewGetPair([]byte(key), libspbroker.ModeClient)
	edit(m)
	return m.AppendEncode(nil)
}

// field returns a case that sends a GET_PAIR with one field edited.
func field(edit func(m *libspbroker.Message)) func(key string) []byte {
	return func(key string) []byte { return badGetPair(key, edit) }
}

// checkBadInput runs one case against a fresh engine: kind is the counter
// that must go up by exactly one.
func checkBadInput(t *testing.T, cfg *broker.Config, kind broker.ProtocolErrorKind, bad badClient) {
	t.Helper()
	e := startBroker(t, cfg)
	bl := snapshot(t, e)
	key := newKey()
	// The decoy would pair with the offending client if the engine took
	// its message for a valid GET_PAIR.
	decoy := e.park(t, key, libspbroker.ModeServer)
	before := e.Stats()

	for _, c := range bad(t, e, key) {
		c.expectClosed()
		c.close()
	}
	want := before.ProtocolErrors
	want[kind]++
	after := e.waitStats(t, "protocol error counted, offender dropped", func(s broker.Stats) bool {
		return s.ProtocolErrors[kind] >= want[kind] && s.Conns == 1
	})
	assert.Equal(t, want, after.ProtocolErrors, "exactly one %v error must be counted", kind)
	assert.Equal(t, before.TimedOut, after.TimedOut, "TimedOut")
	assert.Equal(t, before.Paired, after.Paired, "Paired")
	assert.Equal(t, before.Vanished, after.Vanished, "Vanished")
	assert.Equal(t, 1, after.Waiting, "the decoy must still be waiting")
	assert.Equal(t, want[kind], after.ProtocolErrorsByName()[kind.String()], "ProtocolErrorsByName")

	// The decoy is still waiting and pairs with a proper peer.
	require.True(t, decoy.quiet(quietFor), "the decoy must not hear from the broker")
	pairBoth(t, decoy, e.request(t, key, libspbroker.ModeClient))
	bl.verify(t)

	assertPairs(t, e.path)
	bl.verify(t)
}

// table runs each message of msgs as a subtest expecting kind.
func table(t *testing.T, kind broker.ProtocolErrorKind, msgs map[string]func(key string) []byte) {
	for name, msg := range msgs {
		t.Run(name, func(t *testing.T) {
			checkBadInput(t, nil, kind, func(t *testing.T, e *engine, key string) []*client {
				return sendOnce(msg(key), 0)(t, e, key)
			})
		})
	}
}

// The version nibble of flags must be 1.
func TestBadInput_WrongVersion(t *testing.T) {
	table(t, broker.ErrKindVersion, map[string]func(string) []byte{
		"flags=0":   field(func(m *libspbroker.Message) { m.Flags = 0 }),
		"flags=2":   field(func(m *libspbroker.Message) { m.Flags = 2 }),
		"flags=0xf": field(func(m *libspbroker.Message) { m.Flags = 0xf }),
		// Version is checked before the other flag bits.
		"flags=0x10": field(func(m *libspbroker.Message) { m.Flags = 0x10 }),
	})
}

// Flag bits 4-31 must be zero.
func TestBadInput_FlagBits(t *testing.T) {
	table(t, broker.ErrKindFlags, map[string]func(string) []byte{
		"flags=0x11":       field(func(m *libspbroker.Message) { m.Flags = 0x11 }),
		"flags=0x80000001": field(func(m *libspbroker.Message) { m.Flags = 0x80000001 }),
	})
}

// Only GET_PAIR and SET_PAIR are requests on the wire.
func TestBadInput_Request(t *testing.T) {
	msg := func(req uint32) func(string) []byte {
		return func(key string) []byte {
			return rawMsg(req, version, getSize, modeClient, uint16(len(key)), key)
		}
	}
	table(t, broker.ErrKindRequest, map[string]func(string) []byte{
		"request=0":          msg(0),
		"request=3":          msg(3),
		"request=0xffffffff": msg(0xffffffff),
	})
}

// A SET_PAIR from a client passes the request check: which rule it breaks
// next follows the protocol's order (size, descriptors, expected type).
func TestBadInput_RequestSetPair(t *testing.T) {
	t.Run("size=1028", func(t *testing.T) {
		checkBadInput(t, nil, broker.ErrKindSize, func(t *testing.T, e *engine, key string) []*client {
			return sendOnce(rawMsg(reqSetPair, version, getSize, modeClient, uint16(len(key)), key), 0)(t, e, key)
		})
	})
	t.Run("size=8,no_fd", func(t *testing.T) {
		checkBadInput(t, nil, broker.ErrKindDescriptors, func(t *testing.T, e *engine, key string) []*client {
			return sendOnce(libspbroker.NewSetPair().AppendEncode(nil), 0)(t, e, key)
		})
	})
	t.Run("size=8,one_fd", func(t *testing.T) {
		checkBadInput(t, nil, broker.ErrKindUnexpected, func(t *testing.T, e *engine, key string) []*client {
			return sendOnce(libspbroker.NewSetPair().AppendEncode(nil), 1)(t, e, key)
		})
	})
}

// A GET_PAIR's size field must be 1028.
func TestBadInput_Size(t *testing.T) {
	table(t, broker.ErrKindSize, map[string]func(string) []byte{
		"size=0":    field(func(m *libspbroker.Message) { m.Size = 0 }),
		"size=1027": field(func(m *libspbroker.Message) { m.Size = 1027 }),
		"size=8":    field(func(m *libspbroker.Message) { m.Size = setSize }),
		"size=1044": field(func(m *libspbroker.Message) { m.Size = 1044 }),
	})
}

// The mode must be NONE, CLIENT or SERVER.
func TestBadInput_Mode(t *testing.T) {
	table(t, broker.ErrKindMode, map[string]func(string) []byte{
		"mode=3":     field(func(m *libspbroker.Message) { m.Mode = libspbroker.ModeMax }),
		"mode=65535": field(func(m *libspbroker.Message) { m.Mode = 65535 }),
	})
}

// key_len must be within 1..1024.
func TestBadInput_KeyLength(t *testing.T) {
	msg := func(keyLen uint16) func(string) []byte {
		return func(key string) []byte { return rawMsg(reqGetPair, version, getSize, modeClient, keyLen, key) }
	}
	table(t, broker.ErrKindKeyLength, map[string]func(string) []byte{
		"key_len=0":     msg(0),
		"key_len=1025":  msg(1025),
		"key_len=65535": msg(65535),
	})
}

// Descriptors sent with a GET_PAIR are refused, and the engine closes
// every copy it received: the pipe's read end sees end of file.
func TestBadInput_Descriptors(t *testing.T) {
	for _, n := range []int{1, 64, 253} {
		t.Run(strconv.Itoa(n)+"_fds", func(t *testing.T) {
			checkBadInput(t, nil, broker.ErrKindDescriptors, func(t *testing.T, e *engine, key string) []*client {
				return sendOnce(getPair(key, libspbroker.ModeClient), n)(t, e, key)
			})
		})
	}
	// Descriptors riding on the first bytes of a request that is not
	// complete yet.
	t.Run("with_partial_request", func(t *testing.T) {
		checkBadInput(t, nil, broker.ErrKindDescriptors, func(t *testing.T, e *engine, key string) []*client {
			return sendOnce(getPair(key, libspbroker.ModeClient)[:100], 1)(t, e, key)
		})
	})
}

// A request cut short by the client's hang-up is counted as truncated.
func TestBadInput_Truncated(t *testing.T) {
	for _, n := range []int{1, 500, libspbroker.DocumentedMessageSize - 1} {
		t.Run("close_after_"+strconv.Itoa(n), func(t *testing.T) {
			checkBadInput(t, nil, broker.ErrKindTruncated, func(t *testing.T, e *engine, key string) []*client {
				c := dial(t, e.path)
				c.send(getPair(key, libspbroker.ModeClient)[:n])
				c.close()
				return nil
			})
		})
	}
	// Half-closed: the client still listens, so it sees the broker close.
	t.Run("shutdown_write_after_500", func(t *testing.T) {
		checkBadInput(t, nil, broker.ErrKindTruncated, func(t *testing.T, e *engine, key string) []*client {
			c := dial(t, e.path)
			c.send(getPair(key, libspbroker.ModeClient)[:500])
			c.shutWrite()
			return []*client{c}
		})
	})
}

// A connection that closes before sending anything is no protocol error.
func TestBadInput_CloseWithoutSending(t *testing.T) {
	e := startBroker(t, nil)
	bl := snapshot(t, e)
	before := e.Stats()
	c := dial(t, e.path)
	c.close()
	after := e.waitStats(t, "connection accepted", func(s broker.Stats) bool { return s.Accepted == before.Accepted+1 })
	bl.verify(t)
	after = e.Stats()
	assert.Equal(t, before.ProtocolErrors, after.ProtocolErrors)
	assert.Equal(t, before.TimedOut, after.TimedOut)
	assertPairs(t, e.path)
	bl.verify(t)
}

// A client that sends part of a request and then nothing is closed once
// the handshake deadline has passed, and counted as timed out.
func TestBadInput_HandshakeDeadline(t *testing.T) {
	for _, n := range []int{0, 500, libspbroker.DocumentedMessageSize - 1} {
		t.Run("silent_after_"+strconv.Itoa(n), func(t *testing.T) {
			e := startBroker(t, &broker.Config{HandshakeTimeout: deadlineTimeout})
			bl := snapshot(t, e)
			key := newKey()
			decoy := e.park(t, key, libspbroker.ModeServer)
			before := e.Stats()

			start := time.Now()
			c := dial(t, e.path)
			if n > 0 {
				c.sendUnlessClosed(getPair(key, libspbroker.ModeClient)[:n])
			}
			c.expectClosed()
			elapsed := time.Since(start)
			t.Logf("closed %v after connecting (deadline %v)", elapsed, deadlineTimeout)
			// The deadline runs from accept, which follows connect.
			assert.GreaterOrEqual(t, elapsed, deadlineTimeout, "closed before the handshake deadline")
			c.close()

			after := e.waitStats(t, "timed out", func(s broker.Stats) bool { return s.TimedOut == before.TimedOut+1 && s.Conns == 1 })
			assert.Equal(t, before.ProtocolErrors, after.ProtocolErrors, "a timeout is no protocol error")
			assert.Equal(t, 1, after.Waiting)

			// The deadline is for the handshake: the decoy has waited longer
			// than it and still waits.
			require.True(t, decoy.quiet(quietFor))
			pairBoth(t, decoy, e.request(t, key, libspbroker.ModeClient))
			bl.verify(t)
			assertPairs(t, e.path)
			bl.verify(t)
		})
	}
}

// Random bytes: 1040 of them break some validation rule (which one is
// computed with libspbroker.Validate); 5000 of them are more than one
// message.
func TestBadInput_Garbage(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{libspbroker.DocumentedMessageSize, 5000} {
		junk := make([]byte, n)
		for i := range junk {
			junk[i] = byte(rng.Uint32())
		}
		kind := broker.ErrKindTrailing
		if n <= msgSize {
			var m libspbroker.Message
			require.NoError(t, m.Decode(junk))
			err := libspbroker.Validate(&m, 0, libspbroker.RequestGetPair)
			require.Error(t, err, "the random bytes happen to be a valid GET_PAIR; pick another seed")
			kind = kindOf(t, err)
		}
		t.Run(strconv.Itoa(n)+"_bytes_"+kind.String(), func(t *testing.T) {
			checkBadInput(t, nil, kind, sendOnce(junk, 0))
		})
	}
}

// Anything after the GET_PAIR and its up to 4 padding bytes is a second
// message, which the protocol does not allow.
func TestBadInput_SecondMessage(t *testing.T) {
	two := func(key string) []byte {
		return append(getPair(key, libspbroker.ModeClient), getPair(key, libspbroker.ModeClient)...)
	}
	t.Run("same_write", func(t *testing.T) {
		checkBadInput(t, nil, broker.ErrKindTrailing, func(t *testing.T, e *engine, key string) []*client {
			return sendOnce(two(key), 0)(t, e, key)
		})
	})
	t.Run("1040_bytes_then_5", func(t *testing.T) {
		checkBadInput(t, nil, broker.ErrKindTrailing, func(t *testing.T, e *engine, key string) []*client {
			return sendOnce(getPair(key, libspbroker.ModeClient)[:libspbroker.DocumentedMessageSize+5], 0)(t, e, key)
		})
	})
	t.Run("next_write", func(t *testing.T) {
		checkBadInput(t, nil, broker.ErrKindTrailing, func(t *testing.T, e *engine, _ string) []*client {
			// Another key than the decoy's: the first message alone is a
			// valid GET_PAIR and may be parked before the second arrives.
			c := dial(t, e.path)
			m := two(newKey())
			c.send(m[:msgSize])
			c.send(m[msgSize:])
			return []*client{c}
		})
	})
}

// A waiting client that sends anything more is disconnected, whether it has
// waited long enough for the engine to watch it with epoll or not.
func TestBadInput_SecondMessageWhileWaiting(t *testing.T) {
	inTwoParts := func(t *testing.T, e *engine, c *client, msg []byte) {
		c.send(msg[:500])
		time.Sleep(4 * broker.PollDelay) // let the engine see the first part alone
		c.send(msg[500:])
	}
	bytewise := func(t *testing.T, e *engine, c *client, msg []byte) {
		n, err := c.sendBytewise(msg)
		require.NoError(t, err, "write %d of %d (stats %+v)", n, len(msg), e.Stats())
	}
	cases := []struct {
		name string
		// request sends the GET_PAIR (in one write when nil).
		request func(t *testing.T, e *engine, c *client, msg []byte)
		wait    time.Duration
		extra   func(t *testing.T, c *client) (r *ownedFD)
		kind    broker.ProtocolErrorKind
	}{
		{"at_once", nil, 0, func(t *testing.T, c *client) *ownedFD {
			c.send(getPair(newKey(), libspbroker.ModeClient))
			return nil
		}, broker.ErrKindTrailing},
		{"after_2ms", nil, 4 * broker.PollDelay, func(t *testing.T, c *client) *ownedFD {
			c.send(getPair(newKey(), libspbroker.ModeClient))
			return nil
		}, broker.ErrKindTrailing},
		{"5_bytes_after_2ms", nil, 4 * broker.PollDelay, func(t *testing.T, c *client) *ownedFD {
			c.send([]byte{0, 0, 0, 0, 0})
			return nil
		}, broker.ErrKindTrailing},
		{"descriptor_after_2ms", nil, 4 * broker.PollDelay, func(t *testing.T, c *client) *ownedFD {
			r, w := pipe(t)
			c.send([]byte{0}, w.fd)
			w.close()
			return r
		}, broker.ErrKindDescriptors},
		// However the request came, anything past it is counted: an
		// engine that consumes a fragmented request must still see it.
		{"5_bytes_after_request_in_two_parts", inTwoParts, 4 * broker.PollDelay, func(t *testing.T, c *client) *ownedFD {
			c.send([]byte{0, 0, 0, 0, 0})
			return nil
		}, broker.ErrKindTrailing},
		{"5_bytes_after_request_in_1-byte_writes", bytewise, 4 * broker.PollDelay, func(t *testing.T, c *client) *ownedFD {
			c.send([]byte{0, 0, 0, 0, 0})
			return nil
		}, broker.ErrKindTrailing},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := startBroker(t, &broker.Config{HandshakeTimeout: bytewiseTimeout})
			bl := snapshot(t, e)
			key := newKey()
			var c *client
			if tc.request == nil {
				c = e.park(t, key, libspbroker.ModeServer)
			} else {
				c = dial(t, e.path)
				tc.request(t, e, c, getPair(key, libspbroker.ModeServer))
				e.waitWaiting(t, 1)
			}
			time.Sleep(tc.wait)
			before := e.Stats()
			r := tc.extra(t, c)
			c.expectClosed()
			if r != nil {
				assertPipeClosed(t, r)
			}
			want := before.ProtocolErrors
			want[tc.kind]++
			after := e.waitStats(t, "offender dropped", func(s broker.Stats) bool { return s.Conns == 0 })
			assert.Equal(t, want, after.ProtocolErrors)
			assert.Zero(t, after.Waiting)

			// The key's queue is empty again: a peer waits, it does not
			// pair with the dropped client.
			peer := e.park(t, key, libspbroker.ModeClient)
			require.True(t, peer.quiet(quietFor))
			pairBoth(t, peer, e.request(t, key, libspbroker.ModeServer))
			c.close()
			bl.verify(t)
			assertPairs(t, e.path)
			bl.verify(t)
		})
	}
}

// kindOf maps a libspbroker validation error to the engine's counter.
func kindOf(t *testing.T, err error) broker.ProtocolErrorKind {
	for kind, e := range map[broker.ProtocolErrorKind]error{
		broker.ErrKindVersion:     libspbroker.ErrVersion,
		broker.ErrKindFlags:       libspbroker.ErrFlags,
		broker.ErrKindRequest:     libspbroker.ErrRequest,
		broker.ErrKindSize:        libspbroker.ErrSize,
		broker.ErrKindDescriptors: libspbroker.ErrFDCount,
		broker.ErrKindUnexpected:  libspbroker.ErrUnexpected,
		broker.ErrKindMode:        libspbroker.ErrMode,
		broker.ErrKindKeyLength:   libspbroker.ErrKeyLength,
	} {
		if errors.Is(err, e) {
			return kind
		}
	}
	require.FailNow(t, "unknown validation error", "%v", err)
	return 0
}
