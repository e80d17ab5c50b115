package main

import (
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/handover"
	"github.com/one-socket/one-socket/internal/testutil"
	spb "github.com/one-socket/one-socket/libspbroker"
)

// manager is testutil.Manager, systemd's part in a restart that keeps
// clients, tied to a test.
type manager struct {
	*testutil.Manager
	t *testing.T
}

func newManager(t *testing.T, sockets bool) *manager {
	m, err := testutil.NewManager(t.TempDir(), sockets)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	return &manager{m, t}
}

// waitFor returns the first notify message from now on with want.
func (m *manager) waitFor(want string) string {
	m.t.Helper()
	msg, err := m.WaitFor(want, 20*time.Second)
	require.NoError(m.t, err)
	return msg
}

// start starts an instance of the daemon with args and waits for READY=1.
func (m *manager) start(args ...string) *daemon {
	m.t.Helper()
	return m.startBinary(daemonBin, args...)
}

// startBinary is start for the daemon binary at bin.
func (m *manager) startBinary(bin string, args ...string) *daemon {
	m.t.Helper()
	d := &daemon{t: m.t, done: make(chan struct{}), path: m.BrokerPath, cmd: exec.Command(bin, args...)}
	d.cmd.Stdout, d.cmd.Stderr = &d.stdout, &d.stderr
	require.NoError(m.t, m.Start(d.cmd, daemonEnv()))
	d.watch("one-socket")
	m.waitFor("READY=1")
	return d
}

// waiters counts the clients kept in the store one by one, under
// waiters' names (internal/handover's crash.go).
func (m *manager) waiters() int {
	n := 0
	for _, name := range m.Names() {
		if _, ok := handover.WaiterID(name); ok {
			n++
		}
	}
	return n
}

// waitNames waits until the store holds descriptors named want, in any
// order: the manager reads the daemon's messages after the daemon acted.
func (m *manager) waitNames(want ...string) {
	m.t.Helper()
	slices.Sort(want)
	sorted := func() []string {
		n := m.Names()
		slices.Sort(n)
		return n
	}
	require.Eventually(m.t, func() bool { return slices.Equal(sorted(), want) },
		20*time.Second, 5*time.Millisecond, "want %q in the store", want)
}

// storedClients parses the stop line's count of stored clients.
func storedClients(t *testing.T, stderr string) string {
	t.Helper()
	m := regexp.MustCompile(`msg="clients stored with the service manager" clients=(\d+) listeners=(\d+)`).FindStringSubmatch(stderr)
	require.NotNil(t, m, "no store line in:\n%s", stderr)
	return m[1] + "/" + m[2]
}

// TestIntegrationFDStoreRestart restarts a socket-activated daemon the way
// systemctl restart does with FileDescriptorStoreMax= set: every waiting
// client, one still sending its request and one that connects while no
// daemon runs are all paired by the next instance; one that hung up
// meanwhile is not, and harms nobody.
func TestIntegrationFDStoreRestart(t *testing.T) {
	m := newManager(t, true)
	d1 := m.start("--fdstore")
	ws := startWaiters(t, m.BrokerPath, 40)
	gone := startWaiters(t, m.BrokerPath, 1)[0]
	halfKey := uniqueKey("half")
	wire := getPairWire(halfKey, spb.ModeServer)
	half, err := net.Dial("unix", m.BrokerPath)
	require.NoError(t, err)
	defer half.Close()
	_, err = half.Write(wire[:100])
	require.NoError(t, err)
	waitWaiting(t, m.CtlPath, 41)
	require.Eventually(t, func() bool { return m.waiters() == 41 }, 10*time.Second, time.Millisecond)

	require.Equal(t, 0, d1.stop(syscall.SIGTERM))
	assert.Equal(t, "42/0", storedClients(t, d1.stderr.String()), "the sockets are the manager's: not stored again")
	// The waiters were kept one by one as they began to wait; the stop
	// added the one still sending, and the description of all.
	assert.Equal(t, 41, m.waiters())
	assert.Equal(t, 1, m.Count(handover.FDNameClient))
	assert.Equal(t, 1, m.Count(handover.FDNameState))
	assert.Equal(t, 42, int(logCounter(t, d1.stderr.String(), "accepted")))

	// While no daemon runs: one waiter gives up, the half request is
	// finished, and a new client queues on the manager's socket.
	gone.conn.Close()
	_, err = half.Write(wire[100:])
	require.NoError(t, err)
	late := startWaiters(t, m.BrokerPath, 1)

	d2 := m.start("--fdstore")
	line := d2.waitLog("clients taken back from the service manager")
	assert.Contains(t, line, "clients=41 stored=42 kept=0 hung_up=1 unknown=0 after=stop counters=carried policy=none")
	assert.Zero(t, m.Count(handover.FDNameClient)+m.Count(handover.FDNameState), "the new instance emptied the store of what the stop put there")

	pairWaiters(t, m.BrokerPath, append(ws, late...))
	// The half-sent request became a waiter like the others.
	hc, ok := half.(*net.UnixConn)
	require.True(t, ok)
	f, err := getPair(t.Context(), m.BrokerPath, halfKey, spb.ModeClient)
	require.NoError(t, err)
	defer f.Close()
	g := receiveSetPair(t, hc)
	defer g.Close()
	expectConnected(t, f, g)
	pairOnce(t, m.BrokerPath)
	m.waitNames() // every kept client released once paired

	require.Equal(t, 0, d2.stop(syscall.SIGTERM))
	assert.Equal(t, "0/0", storedClients(t, d2.stderr.String()))
	assert.Equal(t, 43, int(logCounter(t, d2.stderr.String(), "paired")))
	// The totals cover both instances: the first accepted the 42 stored,
	// the second 45 (41 peers, the late client, the half's peer, a pair).
	assert.Equal(t, 42+45, int(logCounter(t, d2.stderr.String(), "accepted")))
	// No client left, but the description goes on carrying the counters.
	assert.Equal(t, []string{handover.FDNameState}, m.Names())
}

// receiveSetPair reads a SET_PAIR on a raw connection and returns the
// descriptor it carries.
func receiveSetPair(t *testing.T, c *net.UnixConn) *os.File {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	var fd int
	var rerr error
	require.NoError(t, rc.Read(func(s uintptr) bool {
		fd, rerr = spb.ReceiveSetPair(int(s))
		return !errors.Is(rerr, unix.EAGAIN)
	}))
	require.NoError(t, rerr)
	return os.NewFile(uintptr(fd), "pair")
}

// TestIntegrationFDStoreOwnSockets keeps clients across a restart of a
// daemon that made its own sockets: it stores its listeners too, so that
// the next instance listens on the same sockets and a client that
// connects in between waits rather than being refused.
func TestIntegrationFDStoreOwnSockets(t *testing.T) {
	m := newManager(t, false)
	args := []string{"--fdstore", "--socket", m.BrokerPath, "--ctl-socket", m.CtlPath}
	d1 := m.start(args...)
	ws := startWaiters(t, m.BrokerPath, 5)
	waitWaiting(t, m.CtlPath, 5)
	require.Equal(t, 0, d1.stop(syscall.SIGTERM))
	assert.Equal(t, "5/2", storedClients(t, d1.stderr.String()))
	requireSocket(t, m.BrokerPath)
	requireSocket(t, m.CtlPath)

	late := startWaiters(t, m.BrokerPath, 1) // queued in the stored listener
	d2 := m.start(args...)
	assert.Contains(t, d2.waitLog("one-socket started"), "activated=true")
	assert.Contains(t, d2.waitLog("clients taken back from the service manager"), "clients=5 stored=5 ")
	pairWaiters(t, m.BrokerPath, append(ws, late...))
	waitWaiting(t, m.CtlPath, 0)
	m.waitNames(handover.FDNameBroker, handover.FDNameControl) // the listeners stay in the store

	// A stop for good: the manager closes its store, as systemd does
	// once the unit is inactive; the next start serves the stale path.
	require.Equal(t, 0, d2.stop(syscall.SIGTERM))
	assert.Equal(t, "0/0", storedClients(t, d2.stderr.String()))
}

// TestIntegrationFDStoreBadState checks the start with stored clients that
// cannot be taken back (no description, or a broken one): they are closed,
// the store is emptied, and the daemon serves.
func TestIntegrationFDStoreBadState(t *testing.T) {
	for _, tt := range []struct {
		name  string
		state string // "" for none
		want  string
	}{
		{"no description", "", "came back without their description"},
		{"broken description", "{not json", "stored description: malformed"},
		{"other version", `{"version":99,"saved":"2026-01-01T00:00:00Z","conns":[],"counts":{"clients":0,"listeners":0}}`, "version 99"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t, true)
			pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			require.NoError(t, err)
			require.NoError(t, unix.SetNonblock(pair[0], true)) // for the read deadline
			peer := os.NewFile(uintptr(pair[0]), "peer")
			defer peer.Close()
			m.Add(os.NewFile(uintptr(pair[1]), handover.FDNameClient), handover.FDNameClient)
			if tt.state != "" {
				mfd, err := unix.MemfdCreate("state", unix.MFD_CLOEXEC)
				require.NoError(t, err)
				_, err = unix.Write(mfd, []byte(tt.state))
				require.NoError(t, err)
				m.Add(os.NewFile(uintptr(mfd), handover.FDNameState), handover.FDNameState)
			}
			d := m.start("--fdstore")
			assert.Contains(t, d.waitLog("cannot take back the stored clients"), tt.want)
			d.waitLog("clients taken back from the service manager")
			m.waitNames()
			// The stored connection is closed everywhere, in the daemon and
			// in the store: its peer reads end of file.
			require.NoError(t, peer.SetReadDeadline(time.Now().Add(10*time.Second)))
			n, err := peer.Read(make([]byte, 1))
			assert.Equal(t, 0, n)
			assert.ErrorIs(t, err, io.EOF)
			pairOnce(t, m.BrokerPath)
			require.Equal(t, 0, d.stop(syscall.SIGTERM))
		})
	}
}

// TestIntegrationFDStoreNeedsManager checks that --fdstore without a
// service manager says so and stops the ordinary way.
func TestIntegrationFDStoreNeedsManager(t *testing.T) {
	path := sockPath(t)
	d := startDaemon(t, path, "--fdstore")
	ws := startWaiters(t, path, 1)
	assert.Contains(t, d.waitLog("--fdstore needs a service manager (NOTIFY_SOCKET): a stop will disconnect the waiting clients"), "level=WARN")
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
	assert.NotContains(t, d.stderr.String(), "clients stored")
	require.NoError(t, ws[0].conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err := ws[0].conn.ReceiveSetPair()
	assert.Error(t, err, "the waiter is disconnected")
}

// TestIntegrationFDStoreUpgradeCrash upgrades a daemon that has a file
// descriptor store to a binary that passes every check and then dies
// outright (SIGKILL), which no fallback can help: the clients wait in the
// store, and the next instance the manager starts takes them all back. An
// upgrade that succeeds empties the store of them.
func TestIntegrationFDStoreUpgradeCrash(t *testing.T) {
	m := newManager(t, true)
	dir := t.TempDir()
	bin := copyDaemon(t, dir)
	d := m.startBinary(bin, "--fdstore")
	ws := startWaiters(t, m.BrokerPath, 5)
	waitWaiting(t, m.CtlPath, 5)

	// First an upgrade that works: the store is empty afterwards.
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGUSR2))
	d.waitLogCount("upgraded", 1)
	// Each waiter's copy stays in the store, for a crash of the new program.
	assert.Contains(t, d.stderr.String(), "msg=upgraded clients=5 waiting=5 kept=5 counters=carried policy=none ")
	m.waitFor("READY=1")
	require.Eventually(t, func() bool { return m.Count(handover.FDNameClient) == 0 && m.Count(handover.FDNameState) == 0 },
		20*time.Second, 10*time.Millisecond, "the new program left the clients in the store: %v", m.Names())

	// Then one that dies.
	script := "#!/bin/sh\n" +
		"case \"$1\" in --handover-version|--handover-check) exec " + daemonBin + " \"$@\";; esac\n" +
		"kill -KILL $$\n"
	require.NoError(t, os.Remove(bin))
	require.NoError(t, os.WriteFile(bin, []byte(script), 0o755))
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGUSR2))
	<-d.done
	// Each waiter is in the store under its own name since it began to
	// wait; nothing else needed storing.
	assert.Equal(t, 5, m.waiters(), "the clients are in the store: %q", m.Names())
	assert.Zero(t, m.Count(handover.FDNameClient)+m.Count(handover.FDNameState))

	d2 := m.start("--fdstore")
	assert.Contains(t, d2.waitLog("clients taken back from the service manager"), "clients=5 stored=0 kept=5 hung_up=0 unknown=0")
	pairWaiters(t, m.BrokerPath, ws)
	require.Equal(t, 0, d2.stop(syscall.SIGTERM))
}
