package handover

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// upgradeState returns an upgrade's State for n clients on fresh sockets,
// and the clients' peers.
func upgradeState(t *testing.T, n int) (*State, []int) {
	t.Helper()
	ln, lpeer := socketpair(t) // stands for the listener: Take wants it open
	t.Cleanup(func() { unix.Close(lpeer) })
	h := &State{Version: Version, Process: &Process{Listener: ln, Control: -1, PidFile: -1}}
	var peers []int
	for i := range n {
		fd, peer := socketpair(t)
		h.Conns = append(h.Conns, Conn{FD: fd, Waiting: true, Key: fmt.Appendf(nil, "key-%d", i)})
		peers = append(peers, peer)
	}
	return h, peers
}

// closeOwn closes this process's copies of h's descriptors, as the
// program that exec'd and died no longer holds them.
func closeOwn(h *State) {
	for _, fd := range h.FDs() {
		unix.Close(fd)
	}
}

// TestKeeperTakesBack starts a keeper and lets its pipe end unwritten, as
// when the new program dies before it serves: the keeper executes the
// program with the State, renumbered to its own descriptors, and that
// program answers every client, told why.
func TestKeeperTakesBack(t *testing.T) {
	h, peers := upgradeState(t, 3)
	k, err := StartKeeper(h, []string{os.Args[0], helperTakeBack}, nil)
	require.NoError(t, err)
	closeOwn(h)
	unix.Close(k)
	for i, peer := range peers {
		assert.Equal(t, fmt.Sprintf("key-%d|the new program died before it served; its keeper took the clients back", i),
			readAnswer(t, peer))
	}
}

// TestKeeperReleased starts a keeper and releases it, as the new program
// does once it serves: the keeper exits and closes its copies, and no
// client hears from it.
func TestKeeperReleased(t *testing.T) {
	h, peers := upgradeState(t, 2)
	k, err := StartKeeper(h, []string{os.Args[0], helperTakeBack}, nil)
	require.NoError(t, err)
	ReleaseKeeper(k)
	closeOwn(h)
	for _, peer := range peers {
		assert.Empty(t, readAnswer(t, peer), "the keeper's copies close unused")
	}
}

// TestTakeKeeper checks that the keeper's pipe is taken from the
// environment once, and that a variable naming no descriptor gives none.
func TestTakeKeeper(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	t.Setenv(EnvKeeper, fmt.Sprint(w.Fd()))
	assert.Equal(t, int(w.Fd()), TakeKeeper())
	_, set := os.LookupEnv(EnvKeeper)
	assert.False(t, set, "the variable is unset")
	assert.Equal(t, -1, TakeKeeper())
	t.Setenv(EnvKeeper, "999999")
	assert.Equal(t, -1, TakeKeeper())
}

// TestStartKeeperKeepsDescriptors checks that starting the keeper leaves
// the daemon's own descriptors open however often the collector runs: the
// daemon serves on with them, or hands them to the exec.
func TestStartKeeperKeepsDescriptors(t *testing.T) {
	h, _ := upgradeState(t, 4)
	defer closeOwn(h)
	k, err := StartKeeper(h, []string{os.Args[0], helperTakeBack}, nil)
	require.NoError(t, err)
	defer ReleaseKeeper(k)
	// Finalizers run on a goroutine of their own after a collection.
	for range 5 {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	for _, fd := range h.FDs() {
		_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		assert.NoError(t, err, "descriptor %d of the hand-over was closed", fd)
	}
}
