package libspbroker_test

// The Go runner of the shared test vectors (testdata/vectors, made by
// vectors_gen_test.go): every message through Decode and Validate, every
// socket scenario through Connect, SendGetPair, ReceiveSetPair and GetPair.
// test/vectors_test.go runs the same files through both C archives and
// python/tests/test_vectors.py through the Python package.

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	spb "github.com/one-socket/one-socket/libspbroker"
)

// vectorsLittleEndian skips t on a host the vectors' byte order does not
// fit.
func vectorsLittleEndian(t *testing.T) {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], 1)
	if b[0] != 1 {
		t.Skip("the vectors are little-endian")
	}
}

func loadVectors(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectorsDir, name))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, v))
}

// vectorTargets are the errors.Is targets the vectors name.
var vectorTargets = map[string]error{
	"ErrProtocol":            spb.ErrProtocol,
	"ErrVersion":             spb.ErrVersion,
	"ErrFlags":               spb.ErrFlags,
	"ErrRequest":             spb.ErrRequest,
	"ErrSize":                spb.ErrSize,
	"ErrFDCount":             spb.ErrFDCount,
	"ErrUnexpected":          spb.ErrUnexpected,
	"ErrMode":                spb.ErrMode,
	"ErrKeyLength":           spb.ErrKeyLength,
	"ErrPayload":             spb.ErrPayload,
	"ErrLength":              spb.ErrLength,
	"ErrInvalidKey":          spb.ErrInvalidKey,
	"ErrInvalidMode":         spb.ErrInvalidMode,
	"io.ErrUnexpectedEOF":    io.ErrUnexpectedEOF,
	"os.ErrDeadlineExceeded": os.ErrDeadlineExceeded,
}

// errnoNames are the errno values the vectors name.
var errnoNames = map[string]unix.Errno{
	"EPROTO": unix.EPROTO, "EINVAL": unix.EINVAL, "ENOENT": unix.ENOENT,
	"ECONNREFUSED": unix.ECONNREFUSED, "ECONNRESET": unix.ECONNRESET,
	"EPIPE": unix.EPIPE, "EAGAIN": unix.EAGAIN, "ETIMEDOUT": unix.ETIMEDOUT,
	"EBADF": unix.EBADF, "ENOTSOCK": unix.ENOTSOCK,
}

// checkGoOutcome compares err with a vector's Go expectation.
func checkGoOutcome(t *testing.T, what string, want *Outcome, err error, dir string) {
	t.Helper()
	if want.OK {
		assert.NoError(t, err, what)
		return
	}
	if !assert.Error(t, err, what) {
		return
	}
	assert.Equal(t, strings.ReplaceAll(want.Message, "{dir}", dir), err.Error(), what)
	if want.Errno != "" {
		en, ok := errnoNames[want.Errno]
		require.True(t, ok, "unknown errno %s", want.Errno)
		assert.ErrorIs(t, err, en, what)
	}
	for _, name := range want.Is {
		target, ok := vectorTargets[name]
		require.True(t, ok, "unknown target %s", name)
		assert.ErrorIs(t, err, target, what)
	}
}

func TestMessageVectors(t *testing.T) {
	vectorsLittleEndian(t)
	var file struct{ Messages []MessageVector }
	loadVectors(t, "messages.json", &file)
	require.NotEmpty(t, file.Messages)
	for _, v := range file.Messages {
		b, err := hex.DecodeString(v.Hex)
		require.NoError(t, err, v.Name)
		require.LessOrEqual(t, len(b), v.Length, v.Name)
		b = append(b, make([]byte, v.Length-len(b))...)
		var m spb.Message
		err = m.Decode(b)
		if v.Decoded == nil {
			checkGoOutcome(t, v.Name+": Decode", v.DecodeGo, err, "")
			continue
		}
		require.NoError(t, err, v.Name)
		got := Decoded{
			Request: uint32(m.Request), Flags: m.Flags, Size: m.Size,
			Mode: uint16(m.Mode), KeyLen: m.KeyLen, Key: hex.EncodeToString(m.PairKey()), U64: m.U64,
		}
		assert.Equal(t, *v.Decoded, got, "%s: Decode", v.Name)
		var expected []spb.Request
		if v.Expected != nil {
			expected = []spb.Request{}
			for _, r := range v.Expected {
				expected = append(expected, spb.Request(r))
			}
		}
		checkGoOutcome(t, v.Name+": Validate", v.Go, spb.Validate(&m, v.NFDs, expected...), "")
	}
}

// vecScenario is one socket scenario being run: the client's end and the
// broker's end of a socketpair, and the kept ends of the descriptors
// passed.
type vecScenario struct {
	t      *testing.T
	dir    string
	client int
	broker int
	kept   []int
	others []int // descriptors to close at the end
	// keptPipe: the descriptors passed were the write ends of pipes.
	keptPipe bool

	// A serve step's broker, until joinServer: what it read, and the
	// kept ends of the descriptors it passed.
	server chan served
	served []byte
}

type served struct {
	read []byte
	kept []int
	err  error
}

// serve listens at st.Path and, in a goroutine, plays the broker for one
// connection as st says.
func (s *vecScenario) serve(st Step) {
	t := s.t
	lfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	s.others = append(s.others, lfd)
	require.NoError(t, unix.Bind(lfd, &unix.SockaddrUnix{Name: s.path(st.Path)}))
	require.NoError(t, unix.Listen(lfd, 4))
	reply, err := hex.DecodeString(st.Hex)
	require.NoError(t, err)
	done := make(chan served, 1)
	s.server = done
	go func() {
		var res served
		defer func() { done <- res }()
		wait := func(fd int) bool {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(pfd, 10000)
			return err == nil && n == 1
		}
		if !wait(lfd) {
			res.err = errors.New("no connection")
			return
		}
		cfd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		if err != nil {
			res.err = err
			return
		}
		defer unix.Close(cfd)
		if !wait(cfd) {
			res.err = errors.New("no request")
			return
		}
		if st.Read {
			buf := make([]byte, spb.MessageSize)
			n := 0
			for n < len(buf) && wait(cfd) {
				m, err := unix.Read(cfd, buf[n:])
				if err != nil || m == 0 {
					break
				}
				n += m
			}
			res.read = buf[:n]
		}
		if len(reply) > 0 {
			var fds []int
			for range st.FDs {
				pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					res.err = err
					return
				}
				res.kept = append(res.kept, pair[0])
				fds = append(fds, pair[1])
			}
			var oob []byte
			if len(fds) > 0 {
				oob = unix.UnixRights(fds...)
			}
			_, res.err = unix.SendmsgN(cfd, reply, oob, nil, unix.MSG_NOSIGNAL)
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}()
}

// joinServer waits for the serve step's broker to finish, if there is one.
func (s *vecScenario) joinServer() {
	if s.server == nil {
		return
	}
	res := <-s.server
	s.server = nil
	s.kept = append(s.kept, res.kept...)
	s.served = res.read
	require.NoError(s.t, res.err, "the broker played by the test")
}

func (s *vecScenario) path(p string) string { return strings.ReplaceAll(p, "{dir}", s.dir) }

func vecMode(t *testing.T, name string) spb.Mode {
	switch name {
	case "none":
		return spb.ModeNone
	case "client":
		return spb.ModeClient
	case "server":
		return spb.ModeServer
	case "max":
		return spb.ModeMax
	}
	t.Fatalf("unknown mode %q", name)
	return 0
}

// vecReadAll reads, without waiting, whatever is queued on fd (up to 4000
// bytes), for broker_read and the remaining check.
func vecReadAll(fd int) ([]byte, error) {
	var out []byte
	buf := make([]byte, 4000)
	oob := make([]byte, unix.CmsgSpace(253*4))
	for len(out) < 4000 {
		n, oobn, _, _, err := unix.Recvmsg(fd, buf[:4000-len(out)], oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
		if oobn > 0 {
			if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
				for _, cm := range msgs {
					if fds, err := unix.ParseUnixRights(&cm); err == nil {
						for _, fd := range fds {
							unix.Close(fd)
						}
					}
				}
			}
		}
		if err == unix.EAGAIN || (err == nil && n == 0) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, buf[:n]...)
	}
	return out, nil
}

// vecConnected reports whether a and b are the two ends of one connection.
func vecConnected(a, b int) bool {
	if _, err := unix.Write(a, []byte{'x'}); err != nil {
		return false
	}
	pfd := []unix.PollFd{{Fd: int32(b), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, 5000); err != nil || n != 1 {
		return false
	}
	var c [1]byte
	n, err := unix.Read(b, c[:])
	return err == nil && n == 1 && c[0] == 'x'
}

// vecClosed reports whether the other end of fd is closed: fd reads end
// of file.
func vecClosed(fd int) bool {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, 5000); err != nil || n != 1 {
		return false
	}
	var c [1]byte
	n, err := unix.Read(fd, c[:])
	return err == nil && n == 0
}

func (s *vecScenario) step(name string, i int, st Step) {
	t := s.t
	what := name + ": step " + st.Do
	switch st.Do {
	case "bind":
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		s.others = append(s.others, fd)
		require.NoError(t, unix.Bind(fd, &unix.SockaddrUnix{Name: s.path(st.Path)}))
	case "listen":
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		s.others = append(s.others, fd)
		require.NoError(t, unix.Bind(fd, &unix.SockaddrUnix{Name: s.path(st.Path)}))
		require.NoError(t, unix.Listen(fd, 0))
	case "broker_write":
		b, err := hex.DecodeString(st.Hex)
		require.NoError(t, err)
		var fds []int
		for range st.FDs {
			var pair [2]int
			if st.Pipes {
				require.NoError(t, unix.Pipe2(pair[:], unix.O_CLOEXEC))
			} else {
				p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				require.NoError(t, err)
				pair = [2]int(p)
			}
			s.kept = append(s.kept, pair[0])
			s.keptPipe = st.Pipes
			fds = append(fds, pair[1])
		}
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		n, err := unix.SendmsgN(s.broker, b, oob, nil, unix.MSG_NOSIGNAL)
		for _, fd := range fds {
			unix.Close(fd)
		}
		require.NoError(t, err, what)
		require.Equal(t, len(b), n, what)
	case "broker_read":
		got, err := vecReadAll(s.broker)
		require.NoError(t, err, what)
		assert.Equal(t, st.Hex, hex.EncodeToString(got), what)
	case "broker_close":
		unix.Close(s.broker)
		s.broker = -1
	case "set_nonblock":
		require.NoError(t, unix.SetNonblock(s.client, true))
	case "connect":
		fd, err := spb.Connect(s.path(st.Path), st.Nonblock)
		if err == nil {
			s.others = append(s.others, fd)
		}
		checkGoOutcome(t, what, st.Go, err, s.dir)
	case "serve":
		s.serve(st)
	case "served":
		assert.Equal(t, st.Hex, hex.EncodeToString(s.served), what)
	case "get_pair":
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		f, err := (&spb.Config{NoRetry: true}).GetPair(ctx, s.path(st.Path), []byte(st.Key), vecMode(t, st.Mode))
		s.joinServer()
		checkGoOutcome(t, what, st.Go, err, s.dir)
		if f != nil {
			require.NotEmpty(t, s.kept, what)
			peer := int(f.Fd())
			assert.True(t, vecConnected(peer, s.kept[0]) && vecConnected(s.kept[0], peer), "%s: the descriptor received is not the one sent", what)
			f.Close()
		}
	case "send_get_pair":
		checkGoOutcome(t, what, st.Go, spb.SendGetPair(s.client, []byte(st.Key), vecMode(t, st.Mode)), s.dir)
	case "receive_set_pair":
		peer, err := spb.ReceiveSetPair(s.client)
		checkGoOutcome(t, what, st.Go, err, s.dir)
		if err == nil {
			require.NotEmpty(t, s.kept, what)
			assert.True(t, vecConnected(peer, s.kept[0]) && (s.keptPipe || vecConnected(s.kept[0], peer)), "%s: the descriptor received is not the one sent", what)
			unix.Close(peer)
		}
		left, err := vecReadAll(s.client)
		require.NoError(t, err, what)
		assert.Equal(t, st.Remaining, len(left), "%s: bytes left unread", what)
	default:
		t.Fatalf("%s: unknown step %d %q", name, i, st.Do)
	}
}

// runScenario plays sc, then closes both ends and checks that every
// descriptor passed has been closed.
func runScenario(t *testing.T, sc Scenario) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	s := &vecScenario{t: t, dir: t.TempDir(), client: fds[0], broker: fds[1]}
	defer func() {
		for _, fd := range append(s.others, s.kept...) {
			unix.Close(fd)
		}
	}()
	for i, st := range sc.Steps {
		s.step(sc.Name, i, st)
	}
	unix.Close(s.client)
	if s.broker >= 0 {
		unix.Close(s.broker)
	}
	for i, k := range s.kept {
		assert.True(t, vecClosed(k), "%s: descriptor %d passed was left open", sc.Name, i)
	}
}

func TestSocketVectors(t *testing.T) {
	vectorsLittleEndian(t)
	var file struct{ Scenarios []Scenario }
	loadVectors(t, "sockets.json", &file)
	require.NotEmpty(t, file.Scenarios)
	for _, sc := range file.Scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			if strings.Contains(sc.Name, "stalled") {
				t.Parallel() // a second's wait: let it overlap the rest
			}
			runScenario(t, sc)
		})
	}
}
