package handover

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/internal/scm"
	"github.com/one-socket/one-socket/internal/systemd"
	"github.com/one-socket/one-socket/internal/testutil"
	spb "github.com/one-socket/one-socket/libspbroker"
)

// TestStoreWanted checks when stops use the store.
func TestStoreWanted(t *testing.T) {
	env := func(v string) func(string) string {
		return func(string) string { return v }
	}
	assert.True(t, StoreWanted(true, env("")))
	assert.True(t, StoreWanted(false, env("64")))
	assert.False(t, StoreWanted(false, env("0")))
	assert.False(t, StoreWanted(false, env("")))
	assert.False(t, StoreWanted(false, env("many")))
	n, ok := StoreMax(env("64"))
	assert.True(t, ok)
	assert.Equal(t, 64, n)
	_, ok = StoreMax(env("-1"))
	assert.False(t, ok)
}

// storeManager returns a manager that owns broker and control sockets,
// and the daemon's store at it.
func storeManager(t *testing.T) (*testutil.Manager, *systemd.Notifier, *FDStore) {
	t.Helper()
	m, err := testutil.NewManager(t.TempDir(), true)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	t.Setenv("NOTIFY_SOCKET", m.NotifyPath)
	n, err := systemd.NewNotifier()
	require.NoError(t, err)
	t.Cleanup(func() { n.Close() })
	return m, n, NewFDStore(n)
}

// startNext runs the next instance under m (restart, in this test
// binary) and returns what it took back.
func startNext(t *testing.T, m *testutil.Manager) restartReport {
	t.Helper()
	cmd := exec.Command(os.Args[0], helperRestart)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	require.NoError(t, m.Start(cmd, systemd.ListenEnv(os.Environ())))
	require.NoError(t, cmd.Wait(), "%s", errOut.String())
	var rep restartReport
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep), "%s", out.String())
	return rep
}

// sorted returns the names m holds, sorted.
func sorted(m *testutil.Manager) []string {
	names := m.Names()
	slices.Sort(names)
	return names
}

// TestFDStoreRestart stores more clients than one message can carry, two
// of them kept one by one as waiters, and a description that replaces an
// earlier one; the next instance the manager starts takes every client
// back but one that hung up meanwhile, each matched to its own
// description (it answers with the key), and forgetting and releasing
// empties the store.
func TestFDStoreRestart(t *testing.T) {
	m, n, s := storeManager(t)
	const clients = 2*scm.MaxFD + 10
	var conns []broker.HandedConn
	var peers []int
	for i := range clients {
		fd, peer := socketpair(t)
		conns = append(conns, broker.HandedConn{FD: fd, Waiting: true, Key: fmt.Appendf(nil, "key-%03d", i),
			Mode: spb.ModeServer, Consumed: spb.MessageSize})
		peers = append(peers, peer)
	}
	s.Above(40)
	for i := clients - 2; i < clients; i++ {
		id, err := s.Keep(conns[i].FD)
		require.NoError(t, err)
		conns[i].Stored = id
	}
	assert.Equal(t, []uint64{41, 42}, []uint64{conns[clients-2].Stored, conns[clients-1].Stored}, "ids start above those in use")

	// An earlier stop's description, then this one's.
	sent, err := s.StoreClients(&State{Version: Version, Saved: time.Now(), Counts: &Counts{}}, nil)
	require.NoError(t, err)
	assert.Zero(t, sent)
	desc, fds := ForStore(conns, time.Now())
	desc.Totals = &Totals{Paired: 7}
	require.Len(t, fds, clients-2, "the kept clients are stored already")
	sent, err = s.StoreClients(desc, fds)
	require.NoError(t, err)
	assert.Equal(t, clients-2, sent)
	require.NoError(t, s.Confirm())
	assert.Equal(t, clients-2, m.Count(FDNameClient))
	assert.Equal(t, 1, m.Count(FDNameState), "one description, the last")
	assert.Equal(t, 1, m.Count("w41"))
	assert.Equal(t, 1, m.Count("w42"))

	// This process goes; one client hangs up before the next one starts.
	for _, c := range conns {
		unix.Close(c.FD)
	}
	unix.Close(peers[0])
	peers = peers[1:]

	rep := startNext(t, m)
	assert.Equal(t, restartReport{Broker: true, Control: true, Conns: clients - 1, Lost: 1, Stored: []uint64{41, 42},
		Described: true, Counts: Counts{Clients: clients}, Totals: &Totals{Paired: 7}}, rep)

	// The next instance serves them: it empties the store of what the
	// stop put there and of a copy it closed, and releases the other.
	ForgetStored(n, []uint64{42}, func(err error) { t.Error(err) })
	require.NoError(t, s.Confirm())
	assert.Equal(t, []string{"w41"}, sorted(m))
	require.NoError(t, s.Release(41))
	require.NoError(t, s.Confirm())
	assert.Empty(t, m.Names())

	// Each client was answered by the instance that took it back, as its
	// own: matched by socket, not by the order they came back in.
	for i, peer := range peers {
		assert.Equal(t, fmt.Sprintf("key-%03d|restart", i+1), readAnswer(t, peer))
	}
}

// TestFDStoreStoredOnly covers what a start can find without a stop's
// description: clients kept for a crash come back and are read again;
// clients a stop stored, without their description, are closed and the
// error says so.
func TestFDStoreStoredOnly(t *testing.T) {
	m, n, s := storeManager(t)
	fd, peer := socketpair(t)
	id, err := s.Keep(fd)
	require.NoError(t, err)
	stray, strayPeer := socketpair(t)
	m.Add(os.NewFile(uintptr(stray), FDNameClient), FDNameClient)
	require.NoError(t, s.Confirm())
	unix.Close(fd)

	rep := startNext(t, m)
	assert.Equal(t, restartReport{Broker: true, Control: true, Conns: 1, Stray: 1, Kept: 1, Stored: []uint64{id},
		Err: "1 stored clients came back without their description (FDNAME=state); closed"}, rep)
	kept := []broker.HandedConn{{FD: -1, Stored: id}}
	s.ReleaseAll(kept)
	assert.Zero(t, kept[0].Stored, "released, its id forgotten")
	ForgetStored(n, nil, func(err error) { t.Error(err) })
	require.NoError(t, s.Confirm())
	assert.Empty(t, m.Names())
	assert.Equal(t, "|restart", readAnswer(t, peer), "a kept client has no key until it is read again")
	assert.Empty(t, readAnswer(t, strayPeer), "the stray is closed unanswered")
}
