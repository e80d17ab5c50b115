package main

import (
	"fmt"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	spb "github.com/one-socket/one-socket/libspbroker"
)

// abandonedConns is how many connections TestAbandonedConnections opens at
// once. The machine's limit is 20,000 descriptors a process; the daemon is
// another process, so the test and the daemon each hold 10,000.
const abandonedConns = 10_000

// TestAbandonedConnections opens many connections at once, leaves them in
// every state a client can abandon (nothing sent, half a GET_PAIR, waiting
// for a peer), closes them all, and checks that the daemon's descriptor
// count returns to its baseline, that it counted each kind, and that it
// still pairs.
func TestAbandonedConnections(t *testing.T) {
	var rl unix.Rlimit
	require.NoError(t, unix.Getrlimit(unix.RLIMIT_NOFILE, &rl))
	require.Greater(t, rl.Cur, uint64(abandonedConns+100), "the test needs more descriptors than RLIMIT_NOFILE allows")

	path := sockPath(t)
	// A long handshake timeout: the test is about clients that leave, not
	// about the broker timing them out while the others connect.
	// One user holds them all: no per-user share.
	d := startDaemon(t, path, "--handshake-timeout", "10m", "--max-conns-per-uid", "-1")
	pid := d.pid()
	base := stableFDCount(t, pid)

	addr := &unix.SockaddrUnix{Name: path}
	partial := getPairWire([]byte("x"), spb.ModeNone)[:100]
	fds := make([]int, 0, abandonedConns)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	var silent, halves, waiters uint64
	for i := range abandonedConns {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		fds = append(fds, fd)
		// A blocking connect waits while the listen queue is full.
		require.NoError(t, unix.Connect(fd, addr), "connection %d", i)
		switch i % 3 {
		case 0:
			silent++
		case 1:
			_, err = unix.Write(fd, partial)
			halves++
		case 2:
			_, err = unix.Write(fd, getPairWire(fmt.Appendf(nil, "abandoned-%d", i), spb.ModeNone))
			waiters++
		}
		require.NoError(t, err)
	}
	waitFDCount(t, pid, fmt.Sprintf("at least %d with every connection accepted", base+abandonedConns),
		func(n int) bool { return n >= base+abandonedConns })

	for _, fd := range fds {
		unix.Close(fd)
	}
	fds = nil
	waitFDCount(t, pid, fmt.Sprintf("back to the baseline of %d", base),
		func(n int) bool { return n <= base })

	pairOnce(t, path)
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
	out := d.stderr.String()
	assert.EqualValues(t, 1, logCounter(t, out, "paired"))
	assert.EqualValues(t, waiters, logCounter(t, out, "vanished"), "waiting clients that hung up")
	assert.EqualValues(t, halves, logCounter(t, out, "protocol_errors"), "half GET_PAIRs cut short")
	assert.EqualValues(t, 0, logCounter(t, out, "timed_out"))
	assert.EqualValues(t, 0, logCounter(t, out, "refused"))
	assert.GreaterOrEqual(t, logCounter(t, out, "accepted"), uint64(abandonedConns+2))
	t.Logf("%d silent, %d half GET_PAIRs, %d waiters; daemon baseline %d descriptors", silent, halves, waiters, base)
}
