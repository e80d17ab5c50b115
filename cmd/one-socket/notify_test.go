package main

import (
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	spb "github.com/one-socket/one-socket/libspbroker"
)

// notifySocket is a stand-in for systemd's notify socket: a Unix datagram
// socket that records each message and the pid of its sender.
type notifySocket struct {
	t    *testing.T
	path string
	conn *net.UnixConn
}

type notifyMsg struct {
	text string
	pid  int32
}

func newNotifySocket(t *testing.T) *notifySocket {
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	// Credentials with each message, as systemd asks for them to check
	// that the sender is the service's main process.
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	var serr error
	require.NoError(t, rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}))
	require.NoError(t, serr)
	return &notifySocket{t: t, path: path, conn: c}
}

// next returns the next message, failing the test after timeout.
func (n *notifySocket) next(timeout time.Duration) notifyMsg {
	n.t.Helper()
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	require.NoError(n.t, n.conn.SetReadDeadline(time.Now().Add(timeout)))
	k, oobn, _, _, err := n.conn.ReadMsgUnix(buf, oob)
	require.NoError(n.t, err, "no message on the notify socket")
	m := notifyMsg{text: string(buf[:k]), pid: -1}
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, cm := range msgs {
			if cred, err := unix.ParseUnixCredentials(&cm); err == nil {
				m.pid = cred.Pid
			}
		}
	}
	return m
}

// waitFor returns the first message that contains want.
func (n *notifySocket) waitFor(want string) notifyMsg {
	n.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		m := n.next(time.Until(deadline))
		if strings.Contains(m.text, want) {
			return m
		}
	}
}

// TestIntegrationNotify checks the sd_notify messages on a real datagram
// socket: READY=1 with a first status once the daemon accepts, a STATUS=
// that follows the counters, and STOPPING=1 at the stop; all sent by the
// daemon's own pid.
func TestIntegrationNotify(t *testing.T) {
	ns := newNotifySocket(t)
	path := sockPath(t)
	d := spawn(t, daemonEnv("NOTIFY_SOCKET="+ns.path), "--socket", path)
	d.path = path

	ready := ns.next(15 * time.Second)
	assert.Equal(t, "READY=1\nSTATUS=waiting 0, paired 0, conns 0", ready.text)
	assert.EqualValues(t, d.pid(), ready.pid)
	// READY=1 means the socket accepts now, without retrying.
	c, err := net.Dial("unix", path)
	require.NoError(t, err, "READY=1 before the socket accepts")
	c.Close()

	pairOnce(t, path)
	ns.waitFor("STATUS=waiting 0, paired 1, conns 0")

	w, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	defer w.Close()
	_, err = w.Write(getPairWire(uniqueKey("status"), spb.ModeServer))
	require.NoError(t, err)
	m := ns.waitFor("STATUS=waiting 1, paired 1, conns 1")
	assert.EqualValues(t, d.pid(), m.pid)

	// An upgrade says RELOADING=1, then READY=1 from the same pid.
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGUSR2))
	reloading := ns.waitFor("RELOADING=1")
	assert.EqualValues(t, d.pid(), reloading.pid)
	ready = ns.waitFor("READY=1")
	assert.EqualValues(t, d.pid(), ready.pid)

	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	stopping := ns.waitFor("STOPPING=1")
	assert.EqualValues(t, d.pid(), stopping.pid)
	assert.Equal(t, 0, d.wait())
}

// TestIntegrationNotifyStartFailure checks that a daemon that cannot start
// says why in STATUS= before it exits, and never sends READY=1.
func TestIntegrationNotifyStartFailure(t *testing.T) {
	ns := newNotifySocket(t)
	missing := filepath.Join(t.TempDir(), "missing", "one.socket")
	d := spawn(t, daemonEnv("NOTIFY_SOCKET="+ns.path), "--socket", missing)
	assert.Equal(t, 1, d.wait())
	m := ns.next(5 * time.Second)
	assert.True(t, strings.HasPrefix(m.text, "STATUS=cannot start: "), m.text)
	assert.Contains(t, m.text, "does not exist")
}

// TestIntegrationNotifyActivated is what systemd does with the shipped
// units: sockets passed, readiness expected on the notify socket.
func TestIntegrationNotifyActivated(t *testing.T) {
	ns := newNotifySocket(t)
	dir := t.TempDir()
	path, ctl := filepath.Join(dir, "one.socket"), filepath.Join(dir, "one-socket.ctl")
	d := socketActivate(t, []activation{{path, "broker"}, {ctl, "control"}}, []string{"NOTIFY_SOCKET=" + ns.path})
	ready := ns.next(15 * time.Second)
	assert.True(t, strings.HasPrefix(ready.text, "READY=1\n"), ready.text)
	assert.EqualValues(t, d.pid(), ready.pid)
	pairOnce(t, path)
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	ns.waitFor("STOPPING=1")
	assert.Equal(t, 0, d.wait())
}
