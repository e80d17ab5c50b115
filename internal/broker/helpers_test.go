package broker_test

// Test harness: a real engine on a real socket, raw clients built on
// golang.org/x/sys/unix (deliberately not on libspbroker's client), and a
// leak checker.

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/libspbroker"
)

// ioTimeout bounds every blocking call a client makes, so that a broken
// engine fails a test instead of hanging it. It is a liveness bound, not a
// performance expectation.
const ioTimeout = 5 * time.Second

// quietFor is how long a client that must still be waiting is watched for
// an unexpected reply or hang-up. Waiting clients are then paired, which
// proves they were still waiting whatever this window shows.
const quietFor = 30 * time.Millisecond

// deadlineTimeout is the handshake timeout of the engines that test it.
const deadlineTimeout = 300 * time.Millisecond

const msgSize = libspbroker.MessageSize // 1044, what the original sends

// ---------------------------------------------------------------------------
// The engine.

// engine is a Broker serving on a socket in a test's temporary directory.
type engine struct {
	*broker.Broker
	path string
}

var warmOnce sync.Once

// warmUp makes the Go runtime open its long-lived descriptors (the network
// poller's) before the first descriptor baseline is taken.
func warmUp(t testing.TB) {
	warmOnce.Do(func() {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "w.sock"), Net: "unix"})
		require.NoError(t, err)
		require.NoError(t, ln.Close())
	})
}

// startBroker runs a Broker configured by cfg (nil for defaults) on a fresh
// socket. On cleanup it shuts the broker down, checks that Serve returned
// ErrClosed, and that every descriptor the engine opened is closed again.
func startBroker(t testing.TB, cfg *broker.Config) *engine {
	t.Helper()
	warmUp(t)
	before := countFDs(t)
	path := filepath.Join(t.TempDir(), "b.sock")
	require.Less(t, len(path), 108, "socket path too long for sun_path")
	b, err := broker.New(cfg)
	require.NoError(t, err)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- b.Serve(ln) }()
	t.Cleanup(func() {
		b.Shutdown()
		select {
		case err := <-served:
			assert.ErrorIs(t, err, broker.ErrClosed, "Serve's result after Shutdown")
		case <-time.After(ioTimeout):
			t.Error("Serve did not return after Shutdown")
			return
		}
		s := b.Stats()
		assert.Zero(t, s.Conns, "Stats.Conns after Shutdown")
		assert.Zero(t, s.Waiting, "Stats.Waiting after Shutdown")
		assert.Equal(t, before, countFDs(t), "descriptors open after Shutdown vs. before the broker started")
	})
	e := &engine{Broker: b, path: path}
	// Serve sets the engine up on its own goroutine; once the loop runs a
	// call, every descriptor it keeps for itself is open.
	e.stall(t)()
	return e
}

// stall blocks the engine's loop until the returned function is called.
func (e *engine) stall(t testing.TB) (release func()) {
	t.Helper()
	end := time.Now().Add(ioTimeout)
	for {
		release, ok := e.Stall()
		if ok {
			t.Cleanup(release)
			return release
		}
		// Not serving yet (Serve starts on its own goroutine).
		require.True(t, time.Now().Before(end), "the engine's loop never took the stall call")
		time.Sleep(time.Millisecond)
	}
}

// connFDs returns the descriptor numbers of the engine's client connections.
func (e *engine) connFDs(t testing.TB) []int {
	t.Helper()
	fds, ok := e.ConnFDs()
	require.True(t, ok, "the engine's loop did not answer")
	return fds
}

// waitStats waits until cond holds for the broker's counters and returns
// them; it fails the test with the last counters seen if cond never holds.
func (e *engine) waitStats(t testing.TB, what string, cond func(s broker.Stats) bool) broker.Stats {
	t.Helper()
	end := time.Now().Add(ioTimeout)
	for {
		s := e.Stats()
		if cond(s) {
			return s
		}
		if time.Now().After(end) {
			require.FailNowf(t, "broker stats never satisfied the condition", "%s; last stats: %+v", what, s)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// waitWaiting waits until exactly n clients are waiting.
func (e *engine) waitWaiting(t testing.TB, n int) {
	t.Helper()
	e.waitStats(t, fmt.Sprintf("Waiting == %d", n), func(s broker.Stats) bool { return s.Waiting == n })
}

// ---------------------------------------------------------------------------
// Leak checking.

// countFDs returns the number of descriptors open in this process.
func countFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

// baseline is what a case must come back to: open descriptors, goroutines,
// and no connection left in the engine.
type baseline struct {
	e          *engine
	fds        int
	goroutines int
}

// snapshot records the baseline before a case.
func snapshot(t testing.TB, e *engine) *baseline {
	t.Helper()
	return &baseline{e: e, fds: countFDs(t), goroutines: runtime.NumGoroutine()}
}

// verify waits until the process and the engine are back at the baseline:
// once the case's clients are closed, the engine must have closed its end
// of each one and every descriptor they passed it.
func (bl *baseline) verify(t testing.TB) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		s := bl.e.Stats()
		assert.Zero(c, s.Conns, "Stats.Conns")
		assert.Zero(c, s.Waiting, "Stats.Waiting")
		ents, err := os.ReadDir("/proc/self/fd")
		if assert.NoError(c, err) {
			assert.Equal(c, bl.fds, len(ents), "open descriptors vs. baseline")
		}
		// +1: testify runs this condition on a goroutine of its own.
		assert.LessOrEqual(c, runtime.NumGoroutine(), bl.goroutines+1, "goroutines vs. baseline")
	}, ioTimeout, 5*time.Millisecond, "leak check")
}

// ---------------------------------------------------------------------------
// Messages.

// getPair is a well-formed 1044-byte GET_PAIR, as the original client sends.
func getPair(key string, mode libspbroker.Mode) []byte {
	return libspbroker.NewGetPair([]byte(key), mode).AppendEncode(nil)
}

// rawMsg hand-builds a 1044-byte message with any field values: the key
// bytes are copied as given, whatever keyLen says.
func rawMsg(request, flags, size uint32, mode, keyLen uint16, key string) []byte {
	b := make([]byte, msgSize)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], request)
	ne.PutUint32(b[4:], flags)
	ne.PutUint32(b[8:], size)
	ne.PutUint16(b[12:], mode)
	ne.PutUint16(b[14:], keyLen)
	copy(b[16:16+libspbroker.MaxKeyLength], key)
	return b
}

// newKey returns a random key, so that tests never pair by accident.
func newKey() string {
	var b [12]byte
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return hex.EncodeToString(b[:])
}

// ---------------------------------------------------------------------------
// Raw clients.

// client is one connection to the broker, driven by raw system calls on a
// blocking socket whose send and receive timeouts are ioTimeout.
type client struct {
	t  testing.TB
	fd int
}

// retry repeats a system call interrupted by a signal: with SO_RCVTIMEO
// set, the kernel does not restart socket calls, and the Go runtime
// signals its threads for preemption.
func retry(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}

// tryDial connects to the broker socket at path.
func tryDial(path string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err := setTimeouts(fd, ioTimeout); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := retry(func() error { return unix.Connect(fd, &unix.SockaddrUnix{Name: path}) }); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("connect", err)
	}
	return fd, nil
}

func setTimeouts(fd int, d time.Duration) error {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	return nil
}

// dial connects a new client; it is closed on cleanup if the test has not
// closed it.
func dial(t testing.TB, path string) *client {
	t.Helper()
	fd, err := tryDial(path)
	require.NoError(t, err)
	c := &client{t: t, fd: fd}
	t.Cleanup(c.close)
	return c
}

// close closes the client's connection; closing twice is harmless.
func (c *client) close() {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}

// trySend sends b, with fds as SCM_RIGHTS on the first sendmsg.
func (c *client) trySend(b []byte, fds ...int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	for len(b) > 0 {
		var n int
		err := retry(func() (err error) {
			n, err = unix.SendmsgN(c.fd, b, oob, nil, unix.MSG_NOSIGNAL)
			return err
		})
		if err != nil {
			return os.NewSyscallError("sendmsg", err)
		}
		b, oob = b[n:], nil
	}
	return nil
}

// send sends b, with fds, and fails the test if it cannot.
func (c *client) send(b []byte, fds ...int) {
	c.t.Helper()
	require.NoError(c.t, c.trySend(b, fds...))
}

// sendUnlessClosed sends b, unless the broker has closed the connection
// already (EPIPE or ECONNRESET): for clients the broker may refuse.
func (c *client) sendUnlessClosed(b []byte) {
	c.t.Helper()
	if err := c.trySend(b); err != nil {
		require.True(c.t, errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET), "%v", err)
	}
}

// sendBytewise sends b one byte per write. It returns the offset at which
// a write failed, with the error, or len(b) and nil.
func (c *client) sendBytewise(b []byte) (int, error) {
	for i := range b {
		if err := c.trySend(b[i : i+1]); err != nil {
			return i, err
		}
	}
	return len(b), nil
}

// shutWrite half-closes the connection: the client will send nothing more.
func (c *client) shutWrite() {
	c.t.Helper()
	require.NoError(c.t, unix.Shutdown(c.fd, unix.SHUT_WR))
}

// ownedFD is a descriptor a test owns; closing it twice is harmless (a
// second unix.Close could close a reused number).
type ownedFD struct{ fd int }

func own(t testing.TB, fd int) *ownedFD {
	o := &ownedFD{fd: fd}
	t.Cleanup(o.close)
	return o
}

func (o *ownedFD) close() {
	if o.fd >= 0 {
		unix.Close(o.fd)
		o.fd = -1
	}
}

// recvSetPair reads a SET_PAIR, checks it byte for byte and checks that
// the broker then closes the connection; it returns the received socket.
func (c *client) recvSetPair() *ownedFD {
	c.t.Helper()
	fd, err := c.tryRecvSetPair()
	require.NoError(c.t, err)
	return own(c.t, fd)
}

func (c *client) tryRecvSetPair() (int, error) {
	buf := make([]byte, 2*msgSize)
	oob := make([]byte, unix.CmsgSpace(4*16))
	var fds []int
	fail := func(format string, args ...any) (int, error) {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return -1, fmt.Errorf(format, args...)
	}
	got := 0
	for got < msgSize {
		var n, oobn, flags int
		err := retry(func() (err error) {
			n, oobn, flags, _, err = unix.Recvmsg(c.fd, buf[got:], oob, unix.MSG_CMSG_CLOEXEC)
			return err
		})
		if oobn > 0 {
			fds = append(fds, parseRights(oob[:oobn])...)
		}
		switch {
		case err == unix.EAGAIN:
			return fail("no SET_PAIR within %v (%d bytes so far)", ioTimeout, got)
		case err != nil:
			return fail("recvmsg after %d bytes of SET_PAIR: %w", got, err)
		case flags&unix.MSG_CTRUNC != 0:
			return fail("descriptors truncated")
		case n == 0:
			return fail("connection closed after %d bytes of SET_PAIR", got)
		}
		got += n
	}
	if got != msgSize {
		return fail("SET_PAIR of %d bytes, want %d", got, msgSize)
	}
	var m libspbroker.Message
	if err := m.Decode(buf[:got]); err != nil {
		return fail("decode SET_PAIR: %w", err)
	}
	if err := libspbroker.Validate(&m, len(fds), libspbroker.RequestSetPair); err != nil {
		return fail("invalid SET_PAIR: %w", err)
	}
	for i, x := range buf[12:got] {
		if x != 0 {
			return fail("SET_PAIR payload byte %d is %#x, want 0", 12+i, x)
		}
	}
	fd := fds[0]
	if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_STREAM {
		return fail("received descriptor is not a stream socket (type %d, %v)", typ, err)
	}
	if dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil || dom != unix.AF_UNIX {
		return fail("received descriptor is not a Unix socket (domain %d, %v)", dom, err)
	}
	// The broker closes its connection right after the hand-over.
	if err := c.readUntilClosed(); err != nil {
		return fail("after SET_PAIR: %w", err)
	}
	if err := setTimeouts(fd, ioTimeout); err != nil {
		return fail("%w", err)
	}
	return fd, nil
}

func parseRights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i := range msgs {
		if r, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			fds = append(fds, r...)
		}
	}
	return fds
}

// errStillOpen reports a connection the broker did not close in time.
var errStillOpen = errors.New("connection still open")

// readUntilClosed reads once and expects the broker to have closed the
// connection: end of file or ECONNRESET (the broker closed with bytes of
// ours unread) both count. Data or descriptors are an error.
func (c *client) readUntilClosed() error {
	buf := make([]byte, 2*msgSize)
	oob := make([]byte, unix.CmsgSpace(4*16))
	var n, oobn int
	err := retry(func() (err error) {
		n, oobn, _, _, err = unix.Recvmsg(c.fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		return err
	})
	if oobn > 0 {
		fds := parseRights(oob[:oobn])
		for _, fd := range fds {
			unix.Close(fd)
		}
		return fmt.Errorf("received %d bytes and %d descriptors instead of end of file", n, len(fds))
	}
	switch {
	case err == unix.ECONNRESET:
		return nil
	case err == unix.EAGAIN:
		return fmt.Errorf("%w after %v", errStillOpen, ioTimeout)
	case err != nil:
		return os.NewSyscallError("recvmsg", err)
	case n > 0:
		return fmt.Errorf("received %d bytes instead of end of file", n)
	}
	return nil
}

// expectClosed asserts that the broker closes the connection without
// having sent anything.
func (c *client) expectClosed() {
	c.t.Helper()
	require.NoError(c.t, c.readUntilClosed(), "the broker must close the connection and send nothing")
}

// quiet reports whether nothing at all (data, hang-up) happens on the
// connection for d: the client is still waiting.
func (c *client) quiet(d time.Duration) bool {
	return pollFD(c.fd, unix.POLLIN, d) == 0
}

// pollFD waits up to d for events on fd and returns the events seen.
func pollFD(fd int, events int16, d time.Duration) int16 {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: events}}
	end := time.Now().Add(d)
	for {
		n, err := unix.Poll(pfd, max(0, int(time.Until(end).Milliseconds())))
		if err == unix.EINTR && time.Now().Before(end) {
			continue
		}
		if err != nil || n == 0 {
			return 0
		}
		return pfd[0].Revents
	}
}

// ---------------------------------------------------------------------------
// Pairing helpers.

// request connects a client and sends a well-formed GET_PAIR.
func (e *engine) request(t testing.TB, key string, mode libspbroker.Mode) *client {
	t.Helper()
	c := dial(t, e.path)
	c.send(getPair(key, mode))
	return c
}

// park connects a client, sends GET_PAIR and waits until the engine counts
// it as waiting (Waiting == waitingBefore+1).
func (e *engine) park(t testing.TB, key string, mode libspbroker.Mode) *client {
	t.Helper()
	before := e.Stats().Waiting
	c := e.request(t, key, mode)
	e.waitWaiting(t, before+1)
	return c
}

// assertConnected checks that a and b are the two ends of one connection:
// a byte sent on either arrives on the other.
func assertConnected(t testing.TB, a, b int) {
	t.Helper()
	for _, dir := range [][2]int{{a, b}, {b, a}} {
		from, to := dir[0], dir[1]
		want := byte(rand.Uint32())
		_, err := unix.Write(from, []byte{want})
		require.NoError(t, err, "write to the paired socket")
		require.NotZero(t, pollFD(to, unix.POLLIN, ioTimeout)&unix.POLLIN, "the byte never arrived on the peer socket")
		var got [2]byte
		n, err := unix.Read(to, got[:])
		require.NoError(t, err, "read from the paired socket")
		require.Equal(t, []byte{want}, got[:n], "the peer socket must receive exactly the byte sent")
	}
}

// pairBoth receives SET_PAIR on a and b and checks that the two sockets
// are connected to each other.
func pairBoth(t testing.TB, a, b *client) {
	t.Helper()
	fa := a.recvSetPair()
	fb := b.recvSetPair()
	assertConnected(t, fa.fd, fb.fd)
	fa.close()
	fb.close()
	a.close()
	b.close()
}

// assertPairs pairs two fresh clients (a server and a client with a random
// key) through the broker at path and checks that their sockets connect.
func assertPairs(t testing.TB, path string) {
	t.Helper()
	key := newKey()
	srv := dial(t, path)
	srv.send(getPair(key, libspbroker.ModeServer))
	cli := dial(t, path)
	cli.send(getPair(key, libspbroker.ModeClient))
	pairBoth(t, srv, cli)
}

// pipe returns a pipe's ends; they are closed on cleanup if still open.
func pipe(t testing.TB) (r, w *ownedFD) {
	t.Helper()
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK))
	return own(t, p[0]), own(t, p[1])
}

// assertPipeClosed asserts that the pipe's read end r sees end of file (no
// copy of its write end remains open anywhere, in the broker in
// particular), then closes r.
func assertPipeClosed(t testing.TB, r *ownedFD) {
	t.Helper()
	ev := pollFD(r.fd, unix.POLLIN, ioTimeout)
	require.NotZero(t, ev&unix.POLLHUP, "a copy of the pipe's write end is still open (the broker kept a passed descriptor)")
	var b [1]byte
	n, err := unix.Read(r.fd, b[:])
	require.NoError(t, err)
	require.Zero(t, n, "end of file on the pipe")
	r.close()
}
