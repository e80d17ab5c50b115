package libspbroker_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	spb "github.com/one-socket/one-socket/libspbroker"
)

var ne = binary.NativeEndian

func TestSizes(t *testing.T) {
	// The C layout: packed 12-byte header, then a union padded to 1032.
	require.Equal(t, 12, spb.HeaderSize)
	require.Equal(t, 1028, spb.GetPairPayloadSize)
	require.Equal(t, 8, spb.SetPairPayloadSize)
	require.Equal(t, 1040, spb.DocumentedMessageSize)
	require.Equal(t, 1044, spb.MessageSize)
	require.Equal(t, 1024, spb.MaxKeyLength)
	require.Equal(t, 64, spb.MaxFDs)
	require.Equal(t, 1, spb.ProtocolVersion)
	require.Equal(t, 0xf, spb.VersionMask)
}

func TestEncodeGetPair(t *testing.T) {
	m := spb.NewGetPair([]byte("abc"), spb.ModeServer)
	// Junk past KeyLen in the struct must not reach the wire.
	m.Key[3], m.Key[1023] = 'x', 'y'
	b := bytes.Repeat([]byte{0xee}, spb.MessageSize+10)
	require.Equal(t, spb.MessageSize, m.Encode(b))

	require.Equal(t, uint32(1), ne.Uint32(b[0:]), "request at 0")
	require.Equal(t, uint32(1), ne.Uint32(b[4:]), "flags at 4")
	require.Equal(t, uint32(1028), ne.Uint32(b[8:]), "size at 8")
	require.Equal(t, uint16(2), ne.Uint16(b[12:]), "mode at 12")
	require.Equal(t, uint16(3), ne.Uint16(b[14:]), "key_len at 14")
	require.Equal(t, []byte("abc"), b[16:19], "key at 16")
	require.Equal(t, make([]byte, 1021), b[19:1040], "key past key_len")
	require.Equal(t, make([]byte, 4), b[1040:1044], "padding")
	require.Equal(t, bytes.Repeat([]byte{0xee}, 10), b[1044:], "past the message")

	app := m.AppendEncode([]byte("head"))
	require.Equal(t, "head", string(app[:4]))
	require.Equal(t, b[:spb.MessageSize], app[4:])
}

func TestEncodeSetPair(t *testing.T) {
	m := spb.NewSetPair()
	m.U64 = 0x0102030405060708
	b := bytes.Repeat([]byte{0xee}, spb.MessageSize)
	m.Encode(b)
	require.Equal(t, uint32(2), ne.Uint32(b[0:]))
	require.Equal(t, uint32(1), ne.Uint32(b[4:]))
	require.Equal(t, uint32(8), ne.Uint32(b[8:]))
	require.Equal(t, m.U64, ne.Uint64(b[12:]), "u64 at 12")
	require.Equal(t, make([]byte, spb.MessageSize-20), b[20:], "rest of the payload and padding")
}

func TestRoundTrip(t *testing.T) {
	for _, want := range []*spb.Message{
		spb.NewGetPair([]byte("k"), spb.ModeNone),
		spb.NewGetPair(bytes.Repeat([]byte{0xff}, 1024), spb.ModeClient),
		spb.NewGetPair([]byte("\x00\x01"), spb.ModeServer),
		spb.NewSetPair(),
	} {
		b := want.AppendEncode(nil)
		for _, n := range []int{spb.DocumentedMessageSize, spb.MessageSize} {
			var got spb.Message
			require.NoError(t, got.Decode(b[:n]))
			if want.Request == spb.RequestSetPair {
				require.Equal(t, want.Request, got.Request)
				require.Equal(t, want.Flags, got.Flags)
				require.Equal(t, want.Size, got.Size)
				require.Equal(t, want.U64, got.U64)
			} else {
				want.U64 = got.U64 // the union's other view of the same bytes
				require.Equal(t, *want, got)
			}
		}
	}
}

func TestDecodeLength(t *testing.T) {
	b := spb.NewGetPair([]byte("k"), spb.ModeNone).AppendEncode(nil)
	b = append(b, 0)
	for n := 0; n <= len(b); n++ {
		var m spb.Message
		err := m.Decode(b[:n])
		if n == 1040 || n == 1044 || (n > 1040 && n < 1044) {
			require.NoError(t, err, "%d bytes", n)
			continue
		}
		require.ErrorIs(t, err, spb.ErrLength, "%d bytes", n)
		require.ErrorIs(t, err, spb.ErrProtocol)
		var pe *spb.ProtocolError
		require.ErrorAs(t, err, &pe)
		require.Equal(t, "length", pe.Field)
		require.Equal(t, uint64(n), pe.Value)
		require.Contains(t, err.Error(), fmt.Sprintf("length %d", n))
	}
}

func TestDecodeKey(t *testing.T) {
	b := spb.NewGetPair([]byte("abcdef"), spb.ModeNone).AppendEncode(nil)
	// Junk past key_len on the wire is ignored and not kept.
	ne.PutUint16(b[14:], 2)
	var m spb.Message
	require.NoError(t, m.Decode(b))
	require.Equal(t, []byte("ab"), m.PairKey())
	require.Equal(t, make([]byte, 1022), m.Key[2:])

	// An out-of-range key_len decodes without panic, clipped.
	ne.PutUint16(b[14:], 0xffff)
	require.NoError(t, m.Decode(b))
	require.Len(t, m.PairKey(), spb.MaxKeyLength)
}

// input is what Validate looks at.
type input struct {
	m        spb.Message
	nfds     int
	expected []spb.Request
}

func validGetPair() input {
	return input{m: *spb.NewGetPair([]byte("key"), spb.ModeClient), expected: []spb.Request{spb.RequestGetPair}}
}

// rules breaks each of the protocol's validation rules, in the protocol's
// order, starting from a valid GET_PAIR.
var rules = []struct {
	name  string
	want  error
	field string
	text  string
	brk   func(*input)
}{
	{"version", spb.ErrVersion, "version", "version 2", func(in *input) { in.m.Flags = in.m.Flags&^0xf | 2 }},
	{"flags", spb.ErrFlags, "flags", "flags 0x11", func(in *input) { in.m.Flags |= 0x10 }},
	{"request", spb.ErrRequest, "request", "request 0x3", func(in *input) { in.m.Request = spb.RequestMax }},
	{"size", spb.ErrSize, "size", "size 8", func(in *input) { in.m.Size = spb.SetPairPayloadSize }},
	{"descriptors", spb.ErrFDCount, "descriptors", "descriptors 1", func(in *input) { in.nfds = 1 }},
	{"expected", spb.ErrUnexpected, "request", "request GET_PAIR", func(in *input) { in.expected = []spb.Request{spb.RequestSetPair} }},
	{"mode", spb.ErrMode, "mode", "mode 3", func(in *input) { in.m.Mode = spb.ModeMax }},
	{"key_len", spb.ErrKeyLength, "key_len", "key_len 0", func(in *input) { in.m.KeyLen = 0 }},
}

var kinds = []error{
	spb.ErrVersion, spb.ErrFlags, spb.ErrRequest, spb.ErrSize, spb.ErrFDCount,
	spb.ErrUnexpected, spb.ErrMode, spb.ErrKeyLength, spb.ErrPayload, spb.ErrLength,
}

// requireKind checks err is a *ProtocolError of kind want, and of no other.
func requireKind(t *testing.T, err, want error, field, text string) {
	t.Helper()
	require.ErrorIs(t, err, want)
	require.ErrorIs(t, err, spb.ErrProtocol)
	for _, k := range kinds {
		if k != want {
			require.NotErrorIs(t, err, k)
		}
	}
	var pe *spb.ProtocolError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, field, pe.Field)
	require.Contains(t, err.Error(), text)
	require.Contains(t, err.Error(), want.Error())
}

func TestValidateRules(t *testing.T) {
	in := validGetPair()
	require.NoError(t, spb.Validate(&in.m, in.nfds, in.expected...))

	for i, r := range rules {
		t.Run(r.name, func(t *testing.T) {
			in := validGetPair()
			r.brk(&in)
			requireKind(t, spb.Validate(&in.m, in.nfds, in.expected...), r.want, r.field, r.text)
		})
		// Breaking this rule and every later one reports this one.
		t.Run(r.name+"+later", func(t *testing.T) {
			in := validGetPair()
			for _, later := range rules[i:] {
				later.brk(&in)
			}
			err := spb.Validate(&in.m, in.nfds, in.expected...)
			require.ErrorIs(t, err, r.want)
			for _, later := range rules[i+1:] {
				if later.want != r.want {
					require.NotErrorIs(t, err, later.want)
				}
			}
		})
	}
}

func TestValidateTable(t *testing.T) {
	getPair := func(edit func(*spb.Message)) spb.Message {
		m := *spb.NewGetPair([]byte("key"), spb.ModeNone)
		if edit != nil {
			edit(&m)
		}
		return m
	}
	setPair := func(edit func(*spb.Message)) spb.Message {
		m := *spb.NewSetPair()
		if edit != nil {
			edit(&m)
		}
		return m
	}
	for _, tc := range []struct {
		name     string
		m        spb.Message
		nfds     int
		expected []spb.Request
		want     error
		text     string
	}{
		{name: "GET_PAIR", m: getPair(nil)},
		{name: "GET_PAIR key_len 1", m: getPair(func(m *spb.Message) { m.KeyLen = 1 })},
		{name: "GET_PAIR key_len 1024", m: getPair(func(m *spb.Message) { m.KeyLen = 1024 })},
		{name: "GET_PAIR mode server", m: getPair(func(m *spb.Message) { m.Mode = spb.ModeServer })},
		{name: "SET_PAIR", m: setPair(nil), nfds: 1, expected: []spb.Request{spb.RequestSetPair}},
		{name: "either expected", m: setPair(nil), nfds: 1, expected: []spb.Request{spb.RequestGetPair, spb.RequestSetPair}},
		{name: "SET_PAIR ignores GET_PAIR fields", m: setPair(func(m *spb.Message) { m.Mode, m.KeyLen = 7, 0 }), nfds: 1},
		{name: "version 0", m: getPair(func(m *spb.Message) { m.Flags = 0 }), want: spb.ErrVersion, text: "version 0"},
		{name: "version 15", m: setPair(func(m *spb.Message) { m.Flags = 0xf }), nfds: 1, want: spb.ErrVersion, text: "version 15"},
		{name: "high flag bit", m: getPair(func(m *spb.Message) { m.Flags |= 1 << 31 }), want: spb.ErrFlags, text: "flags 0x80000001"},
		{name: "request NONE", m: getPair(func(m *spb.Message) { m.Request = spb.RequestNone }), want: spb.ErrRequest, text: "request 0x0"},
		{name: "request 99", m: setPair(func(m *spb.Message) { m.Request = 99 }), nfds: 1, want: spb.ErrRequest, text: "request 0x63"},
		{name: "GET_PAIR size 1032", m: getPair(func(m *spb.Message) { m.Size = 1032 }), want: spb.ErrSize, text: "size 1032"},
		{name: "SET_PAIR size 1028", m: setPair(func(m *spb.Message) { m.Size = 1028 }), nfds: 1, want: spb.ErrSize, text: "size 1028"},
		{name: "SET_PAIR no fd", m: setPair(nil), want: spb.ErrFDCount, text: "descriptors 0"},
		{name: "SET_PAIR 2 fds", m: setPair(nil), nfds: 2, want: spb.ErrFDCount, text: "descriptors 2"},
		{name: "GET_PAIR 64 fds", m: getPair(nil), nfds: 64, want: spb.ErrFDCount, text: "descriptors 64"},
		{name: "SET_PAIR unexpected", m: setPair(nil), nfds: 1, expected: []spb.Request{spb.RequestGetPair}, want: spb.ErrUnexpected, text: "request SET_PAIR"},
		{name: "mode 0xffff", m: getPair(func(m *spb.Message) { m.Mode = 0xffff }), want: spb.ErrMode, text: "mode 65535"},
		{name: "key_len 1025", m: getPair(func(m *spb.Message) { m.KeyLen = 1025 }), want: spb.ErrKeyLength, text: "key_len 1025"},
		{name: "key_len 0xffff", m: getPair(func(m *spb.Message) { m.KeyLen = 0xffff }), want: spb.ErrKeyLength, text: "key_len 65535"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := spb.Validate(&tc.m, tc.nfds, tc.expected...)
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			var pe *spb.ProtocolError
			require.ErrorAs(t, err, &pe)
			requireKind(t, err, tc.want, pe.Field, tc.text)
		})
	}
}

func TestCallerErrors(t *testing.T) {
	for _, n := range []int{1, 1024} {
		require.NoError(t, spb.CheckKey(make([]byte, n)))
	}
	for _, n := range []int{0, 1025} {
		err := spb.CheckKey(make([]byte, n))
		require.ErrorIs(t, err, spb.ErrInvalidKey)
		require.NotErrorIs(t, err, spb.ErrProtocol)
		require.Contains(t, err.Error(), fmt.Sprintf("key of %d bytes", n))
	}
	for _, m := range []spb.Mode{spb.ModeNone, spb.ModeClient, spb.ModeServer} {
		require.NoError(t, spb.CheckMode(m))
	}
	err := spb.CheckMode(spb.ModeMax)
	require.ErrorIs(t, err, spb.ErrInvalidMode)
	require.NotErrorIs(t, err, spb.ErrProtocol)
	require.Contains(t, err.Error(), "Mode(3)")
}

func TestSentinels(t *testing.T) {
	for _, k := range kinds {
		require.ErrorIs(t, k, spb.ErrProtocol, "%v", k)
	}
	require.False(t, errors.Is(spb.ErrProtocol, spb.ErrVersion))
	pe := &spb.ProtocolError{Field: "u64", Value: 7, Err: spb.ErrPayload}
	require.ErrorIs(t, pe, spb.ErrPayload)
	require.ErrorIs(t, pe, spb.ErrProtocol)
	require.Contains(t, pe.Error(), "u64 7")
}

func TestStrings(t *testing.T) {
	require.Equal(t, "GET_PAIR", spb.RequestGetPair.String())
	require.Equal(t, "SET_PAIR", spb.RequestSetPair.String())
	require.Equal(t, "NONE", spb.RequestNone.String())
	require.Equal(t, "Request(3)", spb.RequestMax.String())
	require.Equal(t, "server", spb.ModeServer.String())
	require.Equal(t, spb.ModeServer, spb.ModeClient.Peer())
	require.Equal(t, spb.ModeClient, spb.ModeServer.Peer())
	require.Equal(t, spb.ModeNone, spb.ModeNone.Peer())
}

// The codec must not allocate: the broker runs it per client.
func TestCodecAllocs(t *testing.T) {
	m := spb.NewGetPair([]byte("key"), spb.ModeClient)
	b := make([]byte, spb.MessageSize)
	var d spb.Message
	require.Zero(t, testing.AllocsPerRun(100, func() { m.Encode(b) }), "Encode")
	require.Zero(t, testing.AllocsPerRun(100, func() { d.Decode(b) }), "Decode")
	require.Zero(t, testing.AllocsPerRun(100, func() { spb.Validate(&d, 0, spb.RequestGetPair) }), "Validate")
	s := spb.NewSetPair()
	require.Zero(t, testing.AllocsPerRun(100, func() { spb.Validate(s, 1, spb.RequestSetPair) }), "Validate SET_PAIR")
}

func BenchmarkEncode(b *testing.B) {
	m := spb.NewGetPair([]byte("a typical vhost-user key"), spb.ModeClient)
	buf := make([]byte, spb.MessageSize)
	b.ReportAllocs()
	b.SetBytes(spb.MessageSize)
	for b.Loop() {
		m.Encode(buf)
	}
}

func BenchmarkDecode(b *testing.B) {
	buf := spb.NewGetPair([]byte("a typical vhost-user key"), spb.ModeClient).AppendEncode(nil)
	var m spb.Message
	b.ReportAllocs()
	b.SetBytes(spb.MessageSize)
	for b.Loop() {
		if err := m.Decode(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidate(b *testing.B) {
	m := spb.NewGetPair([]byte("a typical vhost-user key"), spb.ModeClient)
	b.ReportAllocs()
	for b.Loop() {
		if err := spb.Validate(m, 0, spb.RequestGetPair); err != nil {
			b.Fatal(err)
		}
	}
}
