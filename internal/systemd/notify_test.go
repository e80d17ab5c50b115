package systemd

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// manager is a stand-in for the service manager's notify socket.
type manager struct {
	t    *testing.T
	conn *net.UnixConn
	addr string
}

func newManager(t *testing.T, abstract bool) *manager {
	addr := filepath.Join(t.TempDir(), "notify")
	if abstract {
		addr = "@one-socket-test-" + filepath.Base(t.TempDir())
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &manager{t: t, conn: c, addr: addr}
}

func (m *manager) notifier() *Notifier {
	m.t.Setenv("NOTIFY_SOCKET", m.addr)
	n, err := NewNotifier()
	require.NoError(m.t, err)
	require.NotNil(m.t, n)
	return n
}

// next returns the next message and the descriptors that came with it,
// which the test owns.
func (m *manager) next() (string, []int) {
	m.t.Helper()
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*4))
	require.NoError(m.t, m.conn.SetReadDeadline(time.Now().Add(time.Minute)))
	n, oobn, _, _, err := m.conn.ReadMsgUnix(buf, oob)
	require.NoError(m.t, err)
	var fds []int
	cms, err := unix.ParseSocketControlMessage(oob[:oobn])
	require.NoError(m.t, err)
	for _, cm := range cms {
		r, err := unix.ParseUnixRights(&cm)
		require.NoError(m.t, err)
		fds = append(fds, r...)
	}
	return string(buf[:n]), fds
}

func TestNewNotifier(t *testing.T) {
	for addr, ok := range map[string]bool{"/run/systemd/notify": true, "@notify": true, "vsock:2:1234": false, "relative": false} {
		t.Setenv("NOTIFY_SOCKET", addr)
		n, err := NewNotifier()
		if ok {
			require.NoError(t, err, addr)
			assert.Equal(t, []string{"NOTIFY_SOCKET=" + addr}, n.Env())
		} else {
			assert.ErrorContains(t, err, "only Unix socket paths", addr)
		}
		_, set := os.LookupEnv("NOTIFY_SOCKET")
		assert.False(t, set, "NOTIFY_SOCKET is unset whatever it held")
	}
	n, err := NewNotifier()
	require.NoError(t, err)
	require.Nil(t, n, "no NOTIFY_SOCKET, no notifier")
	assert.NoError(t, n.Notify("READY=1"), "a nil notifier sends nothing")
	assert.NoError(t, n.Barrier(time.Second))
	assert.NoError(t, n.Reloading())
	assert.ErrorIs(t, n.Store("x", []int{0}), ErrNoManager, "descriptors cannot go nowhere quietly")
	assert.Nil(t, n.Env())
}

func TestNotify(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		m := newManager(t, abstract)
		n := m.notifier()
		require.NoError(t, n.Notify("STATUS=hello"))
		msg, fds := m.next()
		assert.Equal(t, "STATUS=hello", msg)
		assert.Empty(t, fds)

		require.NoError(t, n.StoreRemove("state"))
		msg, _ = m.next()
		assert.Equal(t, "FDSTOREREMOVE=1\nFDNAME=state", msg)

		require.NoError(t, n.Reloading())
		msg, _ = m.next()
		assert.Regexp(t, `^RELOADING=1\nMONOTONIC_USEC=[0-9]+$`, msg)
	}
}

// TestStore checks that stored descriptors reach the manager as
// duplicates of the caller's, which stay open.
func TestStore(t *testing.T) {
	m := newManager(t, false)
	n := m.notifier()
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	require.NoError(t, n.Store("client", p[:]))
	msg, fds := m.next()
	assert.Equal(t, "FDSTORE=1\nFDNAME=client", msg)
	require.Len(t, fds, 2)
	// The manager's copy of the write end reaches the caller's read end.
	_, err := unix.Write(fds[1], []byte("x"))
	require.NoError(t, err)
	buf := make([]byte, 1)
	_, err = unix.Read(p[0], buf)
	require.NoError(t, err)
	assert.Equal(t, "x", string(buf))
	for _, fd := range fds {
		unix.Close(fd)
	}

	m.conn.Close()
	assert.ErrorContains(t, n.Store("client", p[:1]), "sd_notify", "a manager that went away is an error")
}

// TestBarrier checks that Barrier returns once the manager closed the
// pipe it sent, and reports a manager that never does.
func TestBarrier(t *testing.T) {
	m := newManager(t, false)
	n := m.notifier()
	done := make(chan error, 1)
	go func() { done <- n.Barrier(time.Minute) }()
	msg, fds := m.next()
	assert.Equal(t, "BARRIER=1", msg)
	require.Len(t, fds, 1)
	select {
	case err := <-done:
		t.Fatalf("Barrier returned before the manager answered: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	unix.Close(fds[0])
	require.NoError(t, <-done)

	// A manager that holds the pipe: the timeout is the answer.
	go func() { done <- n.Barrier(100 * time.Millisecond) }()
	_, fds = m.next()
	defer unix.Close(fds[0])
	assert.ErrorContains(t, <-done, "did not answer BARRIER=1")
}

// TestReadyStatusStopping checks READY=1 with the first status, a STATUS=
// for each change and none without one, and STOPPING=1 after which no
// status follows.
func TestReadyStatusStopping(t *testing.T) {
	m := newManager(t, false)
	n := m.notifier()
	status := make(chan string, 1)
	status <- "waiting 0"
	current := "waiting 0"
	get := func() string {
		select {
		case current = <-status:
		default:
		}
		return current
	}
	n.Ready(get, time.Millisecond, func(err error) { t.Error(err) })
	msg, _ := m.next()
	assert.Equal(t, "READY=1\nSTATUS=waiting 0", msg)
	status <- "waiting 1"
	msg, _ = m.next()
	assert.Equal(t, "STATUS=waiting 1", msg, "an unchanged status is not sent again")
	n.Stopping(func(err error) { t.Error(err) })
	msg, _ = m.next()
	assert.Equal(t, "STOPPING=1\nSTATUS=stopping", msg)
	status <- "waiting 2"
	require.NoError(t, n.Notify("STATUS=last"))
	msg, _ = m.next()
	assert.Equal(t, "STATUS=last", msg, "no status update after Stopping")
	assert.False(t, strings.Contains(msg, "waiting 2"))
}

// TestStoreNow checks that the non-waiting store calls fail at once with
// EAGAIN when the manager's queue is full, send nothing then, and work
// again once the manager has read.
func TestStoreNow(t *testing.T) {
	m := newManager(t, false)
	n := m.notifier()
	defer n.Close()
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	sent := 0
	for ; sent < 10000; sent++ {
		if err = n.StoreNow("w1", p[:1]); err != nil {
			break
		}
	}
	require.ErrorIs(t, err, unix.EAGAIN, "after %d messages", sent)
	require.ErrorIs(t, n.StoreRemoveNow("w1"), unix.EAGAIN)
	for range sent {
		msg, fds := m.next()
		assert.Equal(t, "FDSTORE=1\nFDNAME=w1", msg)
		require.Len(t, fds, 1)
		unix.Close(fds[0])
	}
	require.NoError(t, n.StoreRemoveNow("w1"))
	msg, _ := m.next()
	assert.Equal(t, "FDSTOREREMOVE=1\nFDNAME=w1", msg)
	var nilN *Notifier
	assert.ErrorIs(t, nilN.StoreNow("w1", p[:1]), ErrNoManager)
	assert.NoError(t, nilN.StoreRemoveNow("w1"))
}
