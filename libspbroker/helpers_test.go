package libspbroker_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/testutil"
	"github.com/one-socket/one-socket/libspbroker"
)

// testTimeout bounds every wait in the tests, so that a broken client
// fails a test instead of hanging it.
const testTimeout = 5 * time.Second

// fakeBroker is a broker socket driven by the test through raw calls: it
// sends exactly the bytes and descriptors a test asks for.
type fakeBroker struct {
	t    testing.TB
	path string
	lfd  int
}

func newFakeBroker(t testing.TB) *fakeBroker {
	return newFakeBrokerAt(t, filepath.Join(t.TempDir(), "b.sock"))
}

func newFakeBrokerAt(t testing.TB, path string) *fakeBroker {
	t.Helper()
	lfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(lfd) })
	require.NoError(t, unix.Bind(lfd, &unix.SockaddrUnix{Name: path}))
	require.NoError(t, unix.Listen(lfd, 16))
	return &fakeBroker{t: t, path: path, lfd: lfd}
}

// accept returns the next client's connection, a blocking descriptor that
// is closed at cleanup.
func (b *fakeBroker) accept() *fakePeer {
	b.t.Helper()
	require.True(b.t, waitReadable(b.lfd, testTimeout), "no client connected")
	fd, _, err := unix.Accept4(b.lfd, unix.SOCK_CLOEXEC)
	require.NoError(b.t, err)
	p := &fakePeer{fd: fd}
	b.t.Cleanup(p.close)
	return p
}

// pending reports whether a client is waiting to be accepted.
func (b *fakeBroker) pending(wait time.Duration) bool {
	return waitReadable(b.lfd, wait)
}

// fakePeer is the fake broker's end of one client connection.
type fakePeer struct{ fd int }

func (p *fakePeer) close() {
	if p.fd >= 0 {
		unix.Close(p.fd)
		p.fd = -1
	}
}

// shutdown ends the stream: the client reads end of file after the data.
func (p *fakePeer) shutdown() error {
	return unix.Shutdown(p.fd, unix.SHUT_WR)
}

// send sends b whole, with fds (if any) on its first byte.
func (p *fakePeer) send(b []byte, fds []int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	for len(b) > 0 {
		n, err := unix.SendmsgN(p.fd, b, oob, nil, unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b, oob = b[n:], nil
	}
	return nil
}

// readAll reads until end of file and returns what arrived; it fails the
// test if the client neither sends nor closes within testTimeout.
func (p *fakePeer) readAll(t testing.TB) []byte {
	t.Helper()
	var got []byte
	buf := make([]byte, 4096)
	deadline := time.Now().Add(testTimeout)
	for {
		require.True(t, waitReadable(p.fd, time.Until(deadline)), "client neither sent nor closed")
		n, err := unix.Read(p.fd, buf)
		if err == unix.EINTR {
			continue
		}
		require.NoError(t, err)
		if n == 0 {
			return got
		}
		got = append(got, buf[:n]...)
	}
}

// readN reads exactly n bytes.
func (p *fakePeer) readN(n int) ([]byte, error) {
	buf := make([]byte, n)
	deadline := time.Now().Add(testTimeout)
	for off := 0; off < n; {
		if !waitReadable(p.fd, time.Until(deadline)) {
			return buf[:off], os.ErrDeadlineExceeded
		}
		m, err := unix.Read(p.fd, buf[off:])
		switch {
		case err == unix.EINTR:
		case err != nil:
			return buf[:off], err
		case m == 0:
			return buf[:off], errors.New("end of file")
		}
		off += max(m, 0)
	}
	return buf, nil
}

// sawEOF reports whether the client closed its end within wait; data it
// sent before is discarded.
func (p *fakePeer) sawEOF(wait time.Duration) bool {
	buf := make([]byte, 4096)
	deadline := time.Now().Add(wait)
	for waitReadable(p.fd, time.Until(deadline)) {
		n, err := unix.Read(p.fd, buf)
		if err == unix.EINTR {
			continue
		}
		if n == 0 || err == unix.ECONNRESET {
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}

// waitReadable polls fd for input (or hang-up) for up to wait.
func waitReadable(fd int, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		if left < 0 {
			return false
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, int(left/time.Millisecond)+1)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0
	}
}

// countFDs returns the number of descriptors the process has open.
func countFDs(t testing.TB) int {
	t.Helper()
	n, err := testutil.CountFDs()
	require.NoError(t, err)
	return n
}

// isOpen reports whether fd is an open descriptor.
func isOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

// requireCloexec checks that fd is open and close-on-exec.
func requireCloexec(t testing.TB, fd int) {
	t.Helper()
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	require.NoError(t, err)
	require.NotZero(t, fl&unix.FD_CLOEXEC, "descriptor %d is not close-on-exec", fd)
}

// requireNonblock checks fd's O_NONBLOCK flag.
func requireNonblock(t testing.TB, fd int, want bool) {
	t.Helper()
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	require.NoError(t, err)
	require.Equal(t, want, fl&unix.O_NONBLOCK != 0, "O_NONBLOCK on descriptor %d", fd)
}

// requireConnected checks that a and b are two ends of one stream: a byte
// each way. Neither is closed.
func requireConnected(t testing.TB, a, b int) {
	t.Helper()
	for _, p := range [][2]int{{a, b}, {b, a}} {
		_, err := unix.Write(p[0], []byte{'x'})
		require.NoError(t, err)
		require.True(t, waitReadable(p[1], testTimeout), "byte did not arrive")
		var buf [1]byte
		n, err := unix.Read(p[1], buf[:])
		require.NoError(t, err)
		require.Equal(t, 1, n)
		require.Equal(t, byte('x'), buf[0])
	}
}

// requireFilesConnected checks that two Files are the ends of one stream.
func requireFilesConnected(t testing.TB, a, b *os.File) {
	t.Helper()
	ca, err := net.FileConn(a)
	require.NoError(t, err)
	defer ca.Close()
	cb, err := net.FileConn(b)
	require.NoError(t, err)
	defer cb.Close()
	deadline := time.Now().Add(testTimeout)
	require.NoError(t, ca.SetDeadline(deadline))
	require.NoError(t, cb.SetDeadline(deadline))
	for _, p := range [][2]net.Conn{{ca, cb}, {cb, ca}} {
		_, err := p[0].Write([]byte{'y'})
		require.NoError(t, err)
		var buf [1]byte
		_, err = p[1].Read(buf[:])
		require.NoError(t, err)
		require.Equal(t, byte('y'), buf[0])
	}
}

// setPairWire returns a SET_PAIR as the broker sends it (1044 bytes),
// changed by edit if not nil.
func setPairWire(edit func(*libspbroker.Message)) []byte {
	m := libspbroker.NewSetPair()
	if edit != nil {
		edit(m)
	}
	b := make([]byte, libspbroker.MessageSize)
	m.Encode(b)
	return b
}

// requireOpError checks that err is a *net.OpError for op.
func requireOpError(t testing.TB, err error, op string) *net.OpError {
	t.Helper()
	var oe *net.OpError
	require.ErrorAs(t, err, &oe)
	require.Equal(t, op, oe.Op)
	require.Equal(t, "unix", oe.Net)
	return oe
}
