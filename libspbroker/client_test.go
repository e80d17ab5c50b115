package libspbroker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	spb "github.com/one-socket/one-socket/libspbroker"
)

// A receiver is one of the three ways to receive a SET_PAIR: the raw
// function on a blocking or a nonblocking descriptor, and Conn.
type receiver struct {
	name string
	// dial connects to path and returns a receive function, which
	// returns the peer descriptor and a function that closes it, and the
	// broker connection's descriptor (-1 for a Conn).
	dial func(t *testing.T, path string) (recv func() (int, func(), error), connFD int)
}

var receivers = []receiver{
	{"raw", func(t *testing.T, path string) (func() (int, func(), error), int) {
		return rawReceiver(t, path, false)
	}},
	{"nonblock", func(t *testing.T, path string) (func() (int, func(), error), int) {
		return rawReceiver(t, path, true)
	}},
	{"conn", func(t *testing.T, path string) (func() (int, func(), error), int) {
		c, err := spb.Dial(path)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return func() (int, func(), error) {
			f, err := c.ReceiveSetPair()
			if err != nil {
				return -1, nil, err
			}
			return int(f.Fd()), func() { f.Close() }, nil
		}, -1
	}},
}

func rawReceiver(t *testing.T, path string, nonblock bool) (func() (int, func(), error), int) {
	fd, err := spb.Connect(path, nonblock)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	return func() (int, func(), error) {
		if nonblock {
			// What an event loop does: wait until readable.
			waitReadable(fd, testTimeout)
		}
		peer, err := spb.ReceiveSetPair(fd)
		if err != nil {
			return -1, nil, err
		}
		return peer, func() { unix.Close(peer) }, nil
	}, fd
}

// setPairCase is what a fake broker sends, and what the client must make
// of it.
type setPairCase struct {
	name    string
	wire    []byte        // bytes sent
	chunk   int           // sent in pieces of this size; 0: in one piece
	fdLast  bool          // descriptors on the last piece, not the first
	pause   time.Duration // between pieces
	nfds    int           // descriptors sent: copies of one socketpair end
	open    bool          // keep the connection open afterwards (a stalled broker)
	wantErr []error       // errors.Is targets the result must all match; none: success
}

func setPairCases() []setPairCase {
	valid := setPairWire(nil)
	protoErr := func(kind error) []error { return []error{kind, spb.ErrProtocol} }
	eof := []error{io.ErrUnexpectedEOF, unix.ECONNRESET}
	return []setPairCase{
		{name: "1044 bytes", wire: valid, nfds: 1},
		{name: "1040 bytes", wire: valid[:spb.DocumentedMessageSize], nfds: 1},
		{name: "1-byte pieces", wire: valid, chunk: 1, nfds: 1},
		{name: "slow pieces fd last", wire: valid, chunk: 100, pause: 2 * time.Millisecond, fdLast: true, nfds: 1},
		{name: "1040 in slow pieces", wire: valid[:spb.DocumentedMessageSize], chunk: 520, pause: 5 * time.Millisecond, nfds: 1},
		{name: "more data after", wire: append(bytes.Clone(valid), "trailing"...), nfds: 1},
		{name: "no descriptor", wire: valid, nfds: 0, wantErr: protoErr(spb.ErrFDCount)},
		{name: "2 descriptors", wire: valid, nfds: 2, wantErr: protoErr(spb.ErrFDCount)},
		{name: "64 descriptors", wire: valid, nfds: 64, wantErr: protoErr(spb.ErrFDCount)},
		{name: "253 descriptors", wire: valid, nfds: 253, wantErr: protoErr(spb.ErrFDCount)},
		{name: "2 descriptors in pieces", wire: valid, chunk: 300, nfds: 2, wantErr: protoErr(spb.ErrFDCount)},
		{name: "request GET_PAIR", wire: getPairWire([]byte("k"), spb.ModeNone), nfds: 0, wantErr: protoErr(spb.ErrUnexpected)},
		{name: "request 3", wire: setPairWire(func(m *spb.Message) { m.Request = spb.RequestMax }), nfds: 1, wantErr: protoErr(spb.ErrRequest)},
		{name: "version 2", wire: setPairWire(func(m *spb.Message) { m.Flags = 2 }), nfds: 1, wantErr: protoErr(spb.ErrVersion)},
		{name: "flag bits", wire: setPairWire(func(m *spb.Message) { m.Flags |= 0x100 }), nfds: 1, wantErr: protoErr(spb.ErrFlags)},
		{name: "size 1028", wire: setPairWire(func(m *spb.Message) { m.Size = spb.GetPairPayloadSize }), nfds: 1, wantErr: protoErr(spb.ErrSize)},
		{name: "u64 1", wire: setPairWire(func(m *spb.Message) { m.U64 = 1 }), nfds: 1, wantErr: protoErr(spb.ErrPayload)},
		{name: "EOF at 0", wire: nil, wantErr: eof},
		{name: "EOF at 500", wire: valid[:500], nfds: 1, wantErr: eof},
		{name: "EOF at 1039", wire: valid[:1039], chunk: 13, nfds: 1, wantErr: eof},
		{name: "stall at 500", wire: valid[:500], nfds: 1, open: true, wantErr: []error{unix.ETIMEDOUT, os.ErrDeadlineExceeded}},
	}
}

func getPairWire(key []byte, mode spb.Mode) []byte {
	b := make([]byte, spb.MessageSize)
	spb.NewGetPair(key, mode).Encode(b)
	return b
}

// sendCase plays the fake broker's part of tc on p, passing copies of pass.
func sendCase(tc setPairCase, p *fakePeer, pass int) error {
	fds := make([]int, tc.nfds)
	for i := range fds {
		fds[i] = pass
	}
	pieces := [][]byte{tc.wire}
	if tc.chunk > 0 {
		pieces = nil
		for b := tc.wire; len(b) > 0; {
			n := min(tc.chunk, len(b))
			pieces = append(pieces, b[:n])
			b = b[n:]
		}
	}
	for i, piece := range pieces {
		var withFDs []int
		if (i == 0 && !tc.fdLast) || (i == len(pieces)-1 && tc.fdLast) {
			withFDs = fds
		}
		if i > 0 && tc.pause > 0 {
			time.Sleep(tc.pause)
		}
		if len(piece) == 0 {
			continue
		}
		if err := p.send(piece, withFDs); err != nil {
			return err
		}
	}
	if tc.open {
		return nil
	}
	return p.shutdown()
}

func TestReceiveSetPair(t *testing.T) {
	defer spb.SetRestTimeout(200 * time.Millisecond)()
	for _, rc := range receivers {
		t.Run(rc.name, func(t *testing.T) {
			for _, tc := range setPairCases() {
				t.Run(tc.name, func(t *testing.T) {
					testReceiveSetPair(t, rc, tc)
				})
			}
		})
	}
}

func testReceiveSetPair(t *testing.T, rc receiver, tc setPairCase) {
	b := newFakeBroker(t)
	recv, connFD := rc.dial(t, b.path)
	p := b.accept()

	before := countFDs(t)
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	sent := make(chan error, 1)
	go func() {
		err := sendCase(tc, p, pair[0])
		unix.Close(pair[0]) // as the broker does: the copy in flight remains
		sent <- err
	}()
	peer, closePeer, err := recv()
	require.NoError(t, <-sent)

	if len(tc.wantErr) == 0 {
		require.NoError(t, err)
		requireCloexec(t, peer)
		requireConnected(t, peer, pair[1])
		closePeer()
	} else {
		require.Error(t, err)
		for _, want := range tc.wantErr {
			require.ErrorIs(t, err, want)
		}
		requireOpError(t, err, "receive")
		if errors.Is(err, spb.ErrProtocol) {
			require.NotErrorIs(t, err, io.ErrUnexpectedEOF)
		}
	}
	unix.Close(pair[1])
	require.Equal(t, before, countFDs(t), "descriptors leaked or closed")
	if connFD >= 0 {
		require.True(t, isOpen(connFD), "ReceiveSetPair closed the broker connection")
	}
}

// A nonblocking receive before the reply fails with EAGAIN and changes
// nothing; after the reply it succeeds.
func TestReceiveSetPairNonblockingEmpty(t *testing.T) {
	b := newFakeBroker(t)
	fd, err := spb.Connect(b.path, true)
	require.NoError(t, err)
	defer unix.Close(fd)
	p := b.accept()

	before := countFDs(t)
	for range 3 {
		_, err := spb.ReceiveSetPair(fd)
		require.ErrorIs(t, err, unix.EAGAIN)
		require.ErrorIs(t, err, unix.EWOULDBLOCK)
		requireOpError(t, err, "receive")
	}
	require.Equal(t, before, countFDs(t))

	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(pair[1])
	require.NoError(t, p.send(setPairWire(nil), pair[:1]))
	unix.Close(pair[0])
	require.True(t, waitReadable(fd, testTimeout))
	peer, err := spb.ReceiveSetPair(fd)
	require.NoError(t, err)
	defer unix.Close(peer)
	requireCloexec(t, peer)
	requireConnected(t, peer, pair[1])

	// The message was taken whole: nothing is left, not even padding.
	_, err = spb.ReceiveSetPair(fd)
	require.ErrorIs(t, err, unix.EAGAIN)
}

// A nonblocking receive that finds a message started waits for the rest.
func TestReceiveSetPairNonblockingWaitsForRest(t *testing.T) {
	b := newFakeBroker(t)
	fd, err := spb.Connect(b.path, true)
	require.NoError(t, err)
	defer unix.Close(fd)
	p := b.accept()

	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(pair[1])
	wire := setPairWire(nil)
	require.NoError(t, p.send(wire[:100], pair[:1]))
	unix.Close(pair[0])
	sent := make(chan error, 1)
	go func() {
		time.Sleep(50 * time.Millisecond)
		sent <- p.send(wire[100:], nil)
	}()
	require.True(t, waitReadable(fd, testTimeout))
	peer, err := spb.ReceiveSetPair(fd)
	require.NoError(t, <-sent)
	require.NoError(t, err)
	defer unix.Close(peer)
	requireConnected(t, peer, pair[1])
}

// A broker that refuses a client closes the connection with the client's
// request unread; the kernel then reports ECONNRESET rather than EOF.
func TestReceiveSetPairReset(t *testing.T) {
	b := newFakeBroker(t)
	fd, err := spb.Connect(b.path, false)
	require.NoError(t, err)
	defer unix.Close(fd)
	require.NoError(t, spb.SendGetPair(fd, []byte("key"), spb.ModeNone))
	b.accept().close()
	_, err = spb.ReceiveSetPair(fd)
	require.ErrorIs(t, err, unix.ECONNRESET)
	requireOpError(t, err, "receive")
}

// The shared assembler, driven by a scripted recv: which stages it asks
// for, that it never asks for bytes past the message, and what it does
// with descriptors on every path.
func TestReadSetPairScripted(t *testing.T) {
	type step struct {
		data  []byte
		nfds  int // fresh descriptors attached
		flags int
		err   error
	}
	type call struct{ stage, size int }
	valid := setPairWire(nil)
	cases := []struct {
		name      string
		steps     []step
		wantCalls []call
		wantErr   error
	}{
		{
			name:      "whole",
			steps:     []step{{data: valid, nfds: 1}},
			wantCalls: []call{{spb.StageFirst, 1044}},
		},
		{
			name:      "1040 then no padding",
			steps:     []step{{data: valid[:1040], nfds: 1}, {err: unix.EAGAIN}},
			wantCalls: []call{{spb.StageFirst, 1044}, {spb.StagePadding, 4}},
		},
		{
			name:      "1040 then end of file",
			steps:     []step{{data: valid[:1040], nfds: 1}, {}},
			wantCalls: []call{{spb.StageFirst, 1044}, {spb.StagePadding, 4}},
		},
		{
			name:      "1040 then reset",
			steps:     []step{{data: valid[:1040], nfds: 1}, {err: unix.ECONNRESET}},
			wantCalls: []call{{spb.StageFirst, 1044}, {spb.StagePadding, 4}},
		},
		{
			name:      "pieces then padding",
			steps:     []step{{data: valid[:10], nfds: 1}, {data: valid[10:1000]}, {data: valid[1000:1041]}, {data: valid[1041:]}},
			wantCalls: []call{{spb.StageFirst, 1044}, {spb.StageRest, 1034}, {spb.StageRest, 44}, {spb.StagePadding, 3}},
		},
		{
			name:      "descriptor with the padding",
			steps:     []step{{data: valid[:1040], nfds: 1}, {data: valid[1040:], nfds: 1}},
			wantCalls: []call{{spb.StageFirst, 1044}, {spb.StagePadding, 4}},
			wantErr:   spb.ErrFDCount,
		},
		{
			name:      "control data truncated",
			steps:     []step{{data: valid, nfds: 1, flags: unix.MSG_CTRUNC}},
			wantCalls: []call{{spb.StageFirst, 1044}},
			wantErr:   spb.ErrFDCount,
		},
		{
			name:      "truncated with no descriptor",
			steps:     []step{{data: valid, flags: unix.MSG_CTRUNC}},
			wantCalls: []call{{spb.StageFirst, 1044}},
			wantErr:   spb.ErrFDCount,
		},
		{
			name:      "error after descriptors",
			steps:     []step{{data: valid[:10], nfds: 3}, {err: unix.EIO}},
			wantCalls: []call{{spb.StageFirst, 1044}, {spb.StageRest, 1034}},
			wantErr:   unix.EIO,
		},
		{
			name:      "end of file after descriptors",
			steps:     []step{{data: valid[:10], nfds: 1}, {}},
			wantCalls: []call{{spb.StageFirst, 1044}, {spb.StageRest, 1034}},
			wantErr:   io.ErrUnexpectedEOF,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var (
				calls []call
				made  []int
			)
			fd, err := spb.ReadSetPairFrom(func(p, oob []byte, st int) (int, int, int, error) {
				calls = append(calls, call{st, len(p)})
				require.Less(t, len(calls)-1, len(tc.steps), "more reads than the script has")
				s := tc.steps[len(calls)-1]
				if s.err != nil {
					return 0, 0, 0, s.err
				}
				oobn := 0
				if s.nfds > 0 {
					fds := make([]int, s.nfds)
					for i := range fds {
						fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
						require.NoError(t, err)
						fds[i] = fd
					}
					made = append(made, fds...)
					oobn = copy(oob, unix.UnixRights(fds...))
				}
				return copy(p, s.data), oobn, s.flags, nil
			})
			require.Equal(t, tc.wantCalls, calls)
			if tc.wantErr == nil {
				require.NoError(t, err)
				require.Equal(t, made[:1], []int{fd})
				unix.Close(fd)
			} else {
				require.ErrorIs(t, err, tc.wantErr)
			}
			for _, fd := range made {
				require.False(t, isOpen(fd), "descriptor %d left open", fd)
			}
		})
	}
}

// A sender is one of the three ways to send a GET_PAIR.
type sender struct {
	name string
	// dial connects to path and returns a send function and a close.
	dial func(t *testing.T, path string) (send func([]byte, spb.Mode) error, close func())
}

var senders = []sender{
	{"raw", func(t *testing.T, path string) (func([]byte, spb.Mode) error, func()) {
		return rawSender(t, path, false)
	}},
	{"nonblock", func(t *testing.T, path string) (func([]byte, spb.Mode) error, func()) {
		return rawSender(t, path, true)
	}},
	{"conn", func(t *testing.T, path string) (func([]byte, spb.Mode) error, func()) {
		c, err := spb.Dial(path)
		require.NoError(t, err)
		return c.SendGetPair, func() { c.Close() }
	}},
}

func rawSender(t *testing.T, path string, nonblock bool) (func([]byte, spb.Mode) error, func()) {
	fd, err := spb.Connect(path, nonblock)
	require.NoError(t, err)
	return func(key []byte, mode spb.Mode) error { return spb.SendGetPair(fd, key, mode) },
		func() { unix.Close(fd) }
}

func TestSendGetPair(t *testing.T) {
	key1024 := bytes.Repeat([]byte("0123456789abcdef"), 64)
	for _, s := range senders {
		t.Run(s.name, func(t *testing.T) {
			for _, key := range [][]byte{{'k'}, key1024, []byte("\x00binary\xffkey")} {
				for _, mode := range []spb.Mode{spb.ModeNone, spb.ModeClient, spb.ModeServer} {
					t.Run(fmt.Sprintf("key%d/%v", len(key), mode), func(t *testing.T) {
						b := newFakeBroker(t)
						send, closeConn := s.dial(t, b.path)
						require.NoError(t, send(key, mode))
						closeConn()
						got := b.accept().readAll(t)
						require.Len(t, got, spb.MessageSize)

						var m spb.Message
						require.NoError(t, m.Decode(got))
						require.NoError(t, spb.Validate(&m, 0, spb.RequestGetPair))
						require.Equal(t, spb.RequestGetPair, m.Request)
						require.Equal(t, uint32(spb.ProtocolVersion), m.Flags)
						require.Equal(t, uint32(spb.GetPairPayloadSize), m.Size)
						require.Equal(t, mode, m.Mode)
						require.Equal(t, key, m.PairKey())
						require.Equal(t, make([]byte, spb.MaxKeyLength-len(key)), got[16+len(key):1040], "key bytes past key_len")
						require.Equal(t, make([]byte, 4), got[1040:], "padding")
					})
				}
			}
			invalid := []struct {
				name string
				key  []byte
				mode spb.Mode
				want error
			}{
				{"empty key", nil, spb.ModeNone, spb.ErrInvalidKey},
				{"1025-byte key", append(bytes.Clone(key1024), 'x'), spb.ModeClient, spb.ErrInvalidKey},
				{"64 KiB key", make([]byte, 65536), spb.ModeClient, spb.ErrInvalidKey},
				{"mode 3", []byte("k"), spb.ModeMax, spb.ErrInvalidMode},
				{"mode 0xffff", []byte("k"), 0xffff, spb.ErrInvalidMode},
			}
			for _, tc := range invalid {
				t.Run(tc.name, func(t *testing.T) {
					b := newFakeBroker(t)
					send, closeConn := s.dial(t, b.path)
					err := send(tc.key, tc.mode)
					require.ErrorIs(t, err, tc.want)
					require.NotErrorIs(t, err, spb.ErrProtocol)
					requireOpError(t, err, "send")
					closeConn()
					require.Empty(t, b.accept().readAll(t), "bytes sent for an invalid request")
				})
			}
		})
	}
}

// On a nonblocking socket with no room, SendGetPair sends nothing and
// reports EAGAIN.
func TestSendGetPairFull(t *testing.T) {
	b := newFakeBroker(t)
	fd, err := spb.Connect(b.path, true)
	require.NoError(t, err)
	junk := 0
	chunk := make([]byte, 65536)
	for {
		n, err := unix.SendmsgN(fd, chunk, nil, nil, unix.MSG_NOSIGNAL)
		if err == unix.EAGAIN {
			break
		}
		require.NoError(t, err)
		junk += n
	}
	err = spb.SendGetPair(fd, []byte("key"), spb.ModeServer)
	require.ErrorIs(t, err, unix.EAGAIN)
	requireOpError(t, err, "send")
	unix.Close(fd)
	require.Len(t, b.accept().readAll(t), junk)
}

// SendGetPair on a connection the broker has closed fails with EPIPE and
// no SIGPIPE (which would kill the test binary).
func TestSendGetPairBrokerGone(t *testing.T) {
	b := newFakeBroker(t)
	fd, err := spb.Connect(b.path, false)
	require.NoError(t, err)
	defer unix.Close(fd)
	b.accept().close()
	err = spb.SendGetPair(fd, []byte("key"), spb.ModeServer)
	require.ErrorIs(t, err, unix.EPIPE)
	requireOpError(t, err, "send")
}

func TestConnect(t *testing.T) {
	dir := t.TempDir()

	regular := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(regular, nil, 0o600))

	unlistened := filepath.Join(dir, "bound.sock")
	bfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(bfd)
	require.NoError(t, unix.Bind(bfd, &unix.SockaddrUnix{Name: unlistened}))

	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	require.NoError(t, err)
	ln.SetUnlinkOnClose(false)
	ln.Close()

	for _, tc := range []struct {
		name string
		path string
		want []error
	}{
		{"missing", filepath.Join(dir, "missing.sock"), []error{unix.ENOENT, fs.ErrNotExist}},
		{"regular file", regular, []error{unix.ECONNREFUSED}},
		{"not listening", unlistened, []error{unix.ECONNREFUSED}},
		{"stale socket file", stale, []error{unix.ECONNREFUSED}},
		{"path too long", "/" + strings.Repeat("x", 200), []error{unix.EINVAL}},
		{"empty path", "", []error{unix.EINVAL}},
	} {
		for _, nonblock := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/nonblock=%v", tc.name, nonblock), func(t *testing.T) {
				before := countFDs(t)
				fd, err := spb.Connect(tc.path, nonblock)
				require.Equal(t, -1, fd)
				for _, want := range tc.want {
					require.ErrorIs(t, err, want)
				}
				oe := requireOpError(t, err, "connect")
				require.Equal(t, tc.path, oe.Addr.String())
				require.Contains(t, err.Error(), tc.path)
				require.Equal(t, before, countFDs(t), "socket leaked")
			})
		}
	}

	t.Run("Dial missing", func(t *testing.T) {
		_, err := spb.Dial(filepath.Join(dir, "missing.sock"))
		require.ErrorIs(t, err, unix.ENOENT)
		requireOpError(t, err, "dial")
	})

	abstract := fmt.Sprintf("@one-socket-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	for _, path := range []string{filepath.Join(dir, "b.sock"), abstract} {
		kind := "path"
		if path[0] == '@' {
			kind = "abstract"
		}
		b := newFakeBrokerAt(t, path)
		for _, nonblock := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/nonblock=%v", kind, nonblock), func(t *testing.T) {
				fd, err := spb.Connect(path, nonblock)
				require.NoError(t, err)
				defer unix.Close(fd)
				requireCloexec(t, fd)
				requireNonblock(t, fd, nonblock)
				require.NoError(t, spb.SendGetPair(fd, []byte("key"), spb.ModeClient))
				got, err := b.accept().readN(spb.MessageSize)
				require.NoError(t, err)
				require.Equal(t, getPairWire([]byte("key"), spb.ModeClient), got)
			})
		}
		t.Run(kind+"/Dial", func(t *testing.T) {
			c, err := spb.Dial(path)
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.SendGetPair([]byte("key"), spb.ModeServer))
			got, err := b.accept().readN(spb.MessageSize)
			require.NoError(t, err)
			require.Equal(t, getPairWire([]byte("key"), spb.ModeServer), got)
		})
	}
}

// A Conn's deadline ends a wait and, reset, lets the connection go on.
func TestConnDeadline(t *testing.T) {
	defer spb.SetRestTimeout(100 * time.Millisecond)()
	b := newFakeBroker(t)
	c, err := spb.Dial(b.path)
	require.NoError(t, err)
	defer c.Close()
	p := b.accept()

	require.NoError(t, c.SetDeadline(time.Now().Add(50*time.Millisecond)))
	_, err = c.ReceiveSetPair()
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	requireOpError(t, err, "receive")

	// With no deadline the bounded wait for the rest of a message must not
	// leave one behind: a receive after a slow (but in time) message works.
	require.NoError(t, c.SetDeadline(time.Time{}))
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(pair[1])
	wire := setPairWire(nil)
	sent := make(chan error, 1)
	go func() {
		err := p.send(wire[:10], pair[:1])
		unix.Close(pair[0])
		time.Sleep(20 * time.Millisecond)
		sent <- errors.Join(err, p.send(wire[10:], nil))
	}()
	f, err := c.ReceiveSetPair()
	require.NoError(t, <-sent)
	require.NoError(t, err)
	defer f.Close()

	// The caller's deadline (none) is back in force: this wait outlives
	// the rest bound, and ends only with Close.
	done := make(chan error, 1)
	go func() {
		_, err := c.ReceiveSetPair()
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("ReceiveSetPair returned early: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	c.Close()
	select {
	case err := <-done:
		require.ErrorIs(t, err, net.ErrClosed)
	case <-time.After(testTimeout):
		t.Fatal("Close did not end ReceiveSetPair")
	}
}

func TestGetPairContext(t *testing.T) {
	t.Run("canceled before", func(t *testing.T) {
		b := newFakeBroker(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		f, err := spb.GetPair(ctx, b.path, []byte("key"), spb.ModeClient)
		require.Nil(t, f)
		require.ErrorIs(t, err, context.Canceled)
		if b.pending(50 * time.Millisecond) {
			require.True(t, b.accept().sawEOF(testTimeout))
		}
	})

	for _, tc := range []struct {
		name string
		want error
	}{
		{"deadline", context.DeadlineExceeded},
		{"cancel", context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newFakeBroker(t)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			if tc.want == context.DeadlineExceeded {
				ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
			}
			defer cancel()
			done := make(chan error, 1)
			go func() {
				f, err := spb.GetPair(ctx, b.path, []byte("key"), spb.ModeServer)
				if f != nil {
					f.Close()
				}
				done <- err
			}()
			p := b.accept()
			got, err := p.readN(spb.MessageSize)
			require.NoError(t, err)
			require.Equal(t, getPairWire([]byte("key"), spb.ModeServer), got)
			start := time.Now()
			if tc.want == context.Canceled {
				cancel()
			}
			require.True(t, p.sawEOF(testTimeout), "GetPair kept its broker connection open")
			require.Less(t, time.Since(start), time.Second)
			err = <-done
			require.ErrorIs(t, err, tc.want)
			requireOpError(t, err, "receive")
		})
	}

	t.Run("invalid key", func(t *testing.T) {
		b := newFakeBroker(t)
		_, err := spb.GetPair(context.Background(), b.path, nil, spb.ModeClient)
		require.ErrorIs(t, err, spb.ErrInvalidKey)
		require.False(t, b.pending(20*time.Millisecond), "GetPair dialed for an invalid key")
	})

	t.Run("broker closes", func(t *testing.T) {
		// Without retries the first end of the connection is final.
		b := newFakeBroker(t)
		done := make(chan error, 1)
		go func() {
			_, err := (&spb.Config{NoRetry: true}).GetPair(context.Background(), b.path, []byte("key"), spb.ModeNone)
			done <- err
		}()
		p := b.accept()
		_, err := p.readN(spb.MessageSize)
		require.NoError(t, err)
		p.close()
		require.ErrorIs(t, <-done, unix.ECONNRESET)
	})

	t.Run("success", func(t *testing.T) {
		b := newFakeBroker(t)
		pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(pair[1])
		type result struct {
			f   *os.File
			err error
		}
		done := make(chan result, 1)
		go func() {
			f, err := spb.GetPair(context.Background(), b.path, []byte("key"), spb.ModeNone)
			done <- result{f, err}
		}()
		p := b.accept()
		_, err = p.readN(spb.MessageSize)
		require.NoError(t, err)
		require.NoError(t, p.send(setPairWire(nil), pair[:1]))
		unix.Close(pair[0])
		r := <-done
		require.NoError(t, r.err)
		defer r.f.Close()
		require.True(t, p.sawEOF(testTimeout), "GetPair kept its broker connection open")
		requireConnected(t, int(r.f.Fd()), pair[1])
	})
}

// Calls on a closed Conn fail with net.ErrClosed in one OpError.
func TestConnClosed(t *testing.T) {
	b := newFakeBroker(t)
	c, err := spb.Dial(b.path)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	err = c.SendGetPair([]byte("key"), spb.ModeNone)
	require.ErrorIs(t, err, net.ErrClosed)
	requireOpError(t, err, "send")
	require.NotContains(t, err.Error(), "raw-")
	_, err = c.ReceiveSetPair()
	require.ErrorIs(t, err, net.ErrClosed)
	requireOpError(t, err, "receive")
	require.NotContains(t, err.Error(), "raw-")
	require.True(t, b.accept().sawEOF(testTimeout))
}
