package main

import (
	"io"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	spb "github.com/one-socket/one-socket/libspbroker"
)

// readToEnd reads c until it ends and returns how many bytes came and how
// it ended: a client written from the specification reads so, and the
// original broker gives it end of file, not a reset.
func readToEnd(t *testing.T, c *net.UnixConn) (int, error) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	n, err := io.Copy(io.Discard, c)
	return int(n), err
}

// rawRequest connects to path and sends a whole GET_PAIR.
func rawRequest(t *testing.T, path string, key []byte, mode spb.Mode) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	_, err = c.Write(getPairWire(key, mode))
	require.NoError(t, err)
	return c
}

// TestEndOfFileAfterSetPair reads on after SET_PAIR, as waiter and as
// newcomer, in every mode: the broker consumed each request before it
// closed the connection, so both see end of file.
func TestEndOfFileAfterSetPair(t *testing.T) {
	sock := sockPath(t)
	d := startDaemon(t, sock, "--ctl-socket", sock+".ctl")
	for _, modes := range [][2]spb.Mode{{spb.ModeServer, spb.ModeClient}, {spb.ModeClient, spb.ModeServer}, {spb.ModeNone, spb.ModeNone}} {
		key := uniqueKey("eof")
		waiter := rawRequest(t, sock, key, modes[0])
		waitWaiting(t, sock+".ctl", 1)
		newcomer := rawRequest(t, sock, key, modes[1])
		for _, c := range []*net.UnixConn{waiter, newcomer} {
			buf := make([]byte, spb.MessageSize)
			oob := make([]byte, unix.CmsgSpace(4))
			require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
			n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
			require.NoError(t, err)
			require.Equal(t, spb.MessageSize, n, "a whole SET_PAIR")
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			require.NoError(t, err)
			fds, err := unix.ParseUnixRights(&msgs[0])
			require.NoError(t, err)
			unix.Close(fds[0])
			n, err = readToEnd(t, c)
			assert.NoError(t, err, "modes %v: a reset where the original gives end of file", modes)
			assert.Zero(t, n)
		}
	}
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
}

// TestEndOfFileAfterRefusal reads on after the broker refused a request
// (a denial by the policy, a malformed request): end of file, too.
func TestEndOfFileAfterRefusal(t *testing.T) {
	policyPath := filepath.Join(t.TempDir(), "policy.conf")
	writePolicy(t, policyPath, "allow key=ok\n")
	sock := sockPath(t)
	d := startDaemon(t, sock, "--policy", policyPath)
	denied := rawRequest(t, sock, []byte("not-ok"), spb.ModeClient)
	n, err := readToEnd(t, denied)
	assert.NoError(t, err, "a reset after a denial")
	assert.Zero(t, n)

	bad := getPairWire([]byte("ok"), spb.ModeClient)
	bad[0] = 9 // version
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write(bad)
	require.NoError(t, err)
	n, err = readToEnd(t, c)
	assert.NoError(t, err, "a reset after a malformed request")
	assert.Zero(t, n)
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
}
