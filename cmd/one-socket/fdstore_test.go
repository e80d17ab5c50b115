package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	spb "github.com/one-socket/one-socket/libspbroker"
)

// fakeManager plays systemd's part in a restart that keeps clients: it
// owns the broker and control sockets, as socket units do; it reads the
// daemon's notify messages, keeps the descriptors of FDSTORE=1 messages
// under their FDNAME (dropping duplicates and, like systemd, any that hung
// up), removes them at FDSTOREREMOVE=1 and answers BARRIER=1; and it starts
// each instance with the sockets and then the store in LISTEN_FDS.
type fakeManager struct {
	t               *testing.T
	dir             string
	brokerPath      string
	ctlPath         string
	sockets         []*os.File // passed first, named broker and control
	notify          *net.UnixConn
	notifyPath      string
	msgs            chan string
	mu              sync.Mutex
	store           []storedFD
	storeMsgs, rems int
}

// storedFD is one descriptor in the fake store.
type storedFD struct {
	f    *os.File
	name string
}

func newFakeManager(t *testing.T, sockets bool) *fakeManager {
	dir := t.TempDir()
	m := &fakeManager{t: t, dir: dir, brokerPath: filepath.Join(dir, "one.socket"), ctlPath: filepath.Join(dir, "one.ctl"),
		notifyPath: filepath.Join(dir, "notify"), msgs: make(chan string, 1024)}
	if sockets {
		for _, p := range []string{m.brokerPath, m.ctlPath} {
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
			require.NoError(t, err)
			f, err := ln.File()
			require.NoError(t, err)
			ln.SetUnlinkOnClose(false)
			ln.Close() // f keeps the socket; the file stays, as RemoveOnStop= would until the unit stops
			m.sockets = append(m.sockets, f)
			t.Cleanup(func() { f.Close() })
		}
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: m.notifyPath, Net: "unixgram"})
	require.NoError(t, err)
	m.notify = c
	done := make(chan struct{})
	go m.receive(done)
	t.Cleanup(func() {
		c.Close()
		<-done
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, s := range m.store {
			s.f.Close()
		}
	})
	return m
}

// receive handles notify messages until the socket closes.
func (m *fakeManager) receive(done chan struct{}) {
	defer close(done)
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(scmMaxFDs*4))
	for {
		n, oobn, _, _, err := m.notify.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		var fds []int
		if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, cm := range cms {
				if r, err := unix.ParseUnixRights(&cm); err == nil {
					fds = append(fds, r...)
				}
			}
		}
		text := string(buf[:n])
		vars := map[string]string{}
		for line := range strings.SplitSeq(text, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				vars[k] = v
			}
		}
		m.mu.Lock()
		switch {
		case vars["FDSTORE"] == "1":
			m.storeMsgs++
			name := vars["FDNAME"]
			if name == "" {
				name = "stored"
			}
			for _, fd := range fds {
				if m.holdsLocked(fd) {
					unix.Close(fd)
					continue
				}
				m.store = append(m.store, storedFD{os.NewFile(uintptr(fd), name), name})
			}
		case vars["FDSTOREREMOVE"] == "1":
			m.rems++
			kept := m.store[:0]
			for _, s := range m.store {
				if s.name == vars["FDNAME"] {
					s.f.Close()
				} else {
					kept = append(kept, s)
				}
			}
			m.store = kept
		default:
			// BARRIER=1's pipe, and anything else: closing is the answer.
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
		m.mu.Unlock()
		m.msgs <- text
	}
}

// holdsLocked reports whether the store has fd's file already.
func (m *fakeManager) holdsLocked(fd int) bool {
	var a unix.Stat_t
	if unix.Fstat(fd, &a) != nil {
		return false
	}
	for _, s := range m.store {
		var b unix.Stat_t
		if unix.Fstat(int(s.f.Fd()), &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino {
			return true
		}
	}
	return false
}

// names returns the FDNAME of every stored descriptor, in order.
func (m *fakeManager) names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n []string
	for _, s := range m.store {
		n = append(n, s.name)
	}
	return n
}

// count returns how many stored descriptors are named name.
func (m *fakeManager) count(name string) int {
	n := 0
	for _, s := range m.names() {
		if s == name {
			n++
		}
	}
	return n
}

// waitFor returns the first message from now on that contains want.
func (m *fakeManager) waitFor(want string) string {
	m.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case msg := <-m.msgs:
			if strings.Contains(msg, want) {
				return msg
			}
		case <-timeout:
			m.t.Fatalf("no notify message with %q", want)
		}
	}
}

// start runs an instance as systemd would: LISTEN_PID is the instance's
// own pid (a shell sets it and execs), the sockets come first and the
// store after them, with their names in LISTEN_FDNAMES. Stored
// connections whose peer hung up are dropped first, as systemd drops a
// stored descriptor on POLLHUP.
func (m *fakeManager) start(args ...string) *daemon {
	m.t.Helper()
	m.mu.Lock()
	kept := m.store[:0]
	for _, s := range m.store {
		pfd := []unix.PollFd{{Fd: int32(s.f.Fd())}}
		if k, _ := unix.Poll(pfd, 0); k > 0 && pfd[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
			s.f.Close()
			continue
		}
		kept = append(kept, s)
	}
	m.store = kept
	files := append([]*os.File{}, m.sockets...)
	var names []string
	if len(m.sockets) > 0 {
		names = []string{fdNameBroker, fdNameControl}
	}
	// Duplicates, so that the store may drop its copies at any time.
	var dups []*os.File
	for _, s := range m.store {
		fd, err := unix.FcntlInt(s.f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		require.NoError(m.t, err)
		dups = append(dups, os.NewFile(uintptr(fd), s.name))
		names = append(names, s.name)
	}
	m.mu.Unlock()
	files = append(files, dups...)
	defer func() {
		for _, f := range dups {
			f.Close()
		}
	}()

	env := []string{"NOTIFY_SOCKET=" + m.notifyPath}
	if len(files) > 0 {
		env = append(env, fmt.Sprintf("LISTEN_FDS=%d", len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	script := `export LISTEN_PID=$$; exec "$@"`
	if len(files) == 0 {
		script = `exec "$@"`
	}
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, "sh", daemonBin}, args...)...)
	cmd.Env = daemonEnv(env...)
	cmd.ExtraFiles = files
	d := start(m.t, cmd, m.brokerPath, "one-socket")
	m.waitFor("READY=1")
	return d
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
	m := newFakeManager(t, true)
	d1 := m.start("--fdstore")
	ws := startWaiters(t, m.brokerPath, 40)
	gone := startWaiters(t, m.brokerPath, 1)[0]
	halfKey := uniqueKey("half")
	wire := getPairWire(halfKey, spb.ModeServer)
	half, err := net.Dial("unix", m.brokerPath)
	require.NoError(t, err)
	defer half.Close()
	_, err = half.Write(wire[:100])
	require.NoError(t, err)
	waitWaiting(t, m.ctlPath, 41)

	require.Equal(t, 0, d1.stop(syscall.SIGTERM))
	assert.Equal(t, "42/0", storedClients(t, d1.stderr.String()), "the sockets are the manager's: not stored again")
	assert.Equal(t, 42, m.count(fdNameClient))
	assert.Equal(t, 1, m.count(fdNameState))
	assert.Equal(t, 42, int(logCounter(t, d1.stderr.String(), "accepted")))

	// While no daemon runs: one waiter gives up, the half request is
	// finished, and a new client queues on the manager's socket.
	gone.conn.Close()
	_, err = half.Write(wire[100:])
	require.NoError(t, err)
	late := startWaiters(t, m.brokerPath, 1)

	d2 := m.start("--fdstore")
	line := d2.waitLog("clients taken back from the service manager")
	assert.Contains(t, line, "clients=41 stored=42 hung_up=1 unknown=0")
	m.waitFor("FDNAME=" + fdNameState) // the last FDSTOREREMOVE
	assert.Empty(t, m.names(), "the new instance emptied the store of what it took")

	pairWaiters(t, m.brokerPath, append(ws, late...))
	// The half-sent request became a waiter like the others.
	hc, ok := half.(*net.UnixConn)
	require.True(t, ok)
	f, err := spb.GetPair(t.Context(), m.brokerPath, halfKey, spb.ModeClient)
	require.NoError(t, err)
	defer f.Close()
	g := receiveSetPair(t, hc)
	defer g.Close()
	expectConnected(t, f, g)
	pairOnce(t, m.brokerPath)

	require.Equal(t, 0, d2.stop(syscall.SIGTERM))
	assert.Equal(t, "0/0", storedClients(t, d2.stderr.String()))
	assert.Equal(t, 43, int(logCounter(t, d2.stderr.String(), "paired")))
	assert.Empty(t, m.names())
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
	m := newFakeManager(t, false)
	args := []string{"--fdstore", "--socket", m.brokerPath, "--ctl-socket", m.ctlPath}
	d1 := m.start(args...)
	ws := startWaiters(t, m.brokerPath, 5)
	waitWaiting(t, m.ctlPath, 5)
	require.Equal(t, 0, d1.stop(syscall.SIGTERM))
	assert.Equal(t, "5/2", storedClients(t, d1.stderr.String()))
	requireSocket(t, m.brokerPath)
	requireSocket(t, m.ctlPath)

	late := startWaiters(t, m.brokerPath, 1) // queued in the stored listener
	d2 := m.start(args...)
	assert.Contains(t, d2.waitLog("one-socket started"), "activated=true")
	assert.Contains(t, d2.waitLog("clients taken back from the service manager"), "clients=5 stored=5 ")
	pairWaiters(t, m.brokerPath, append(ws, late...))
	waitWaiting(t, m.ctlPath, 0)
	assert.ElementsMatch(t, []string{fdNameBroker, fdNameControl}, m.names(), "the listeners stay in the store")

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
			m := newFakeManager(t, true)
			pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			require.NoError(t, err)
			require.NoError(t, unix.SetNonblock(pair[0], true)) // for the read deadline
			peer := os.NewFile(uintptr(pair[0]), "peer")
			defer peer.Close()
			m.store = append(m.store, storedFD{os.NewFile(uintptr(pair[1]), fdNameClient), fdNameClient})
			if tt.state != "" {
				mfd, err := unix.MemfdCreate("state", unix.MFD_CLOEXEC)
				require.NoError(t, err)
				require.NoError(t, writeAll(mfd, []byte(tt.state)))
				m.store = append(m.store, storedFD{os.NewFile(uintptr(mfd), fdNameState), fdNameState})
			}
			d := m.start("--fdstore")
			assert.Contains(t, d.waitLog("cannot take back the stored clients"), tt.want)
			d.waitLog("clients taken back from the service manager")
			m.waitFor("FDSTOREREMOVE=1\nFDNAME=" + fdNameState)
			assert.Empty(t, m.names())
			// The stored connection is closed everywhere, in the daemon and
			// in the store: its peer reads end of file.
			require.NoError(t, peer.SetReadDeadline(time.Now().Add(10*time.Second)))
			n, err := peer.Read(make([]byte, 1))
			assert.Equal(t, 0, n)
			assert.ErrorIs(t, err, io.EOF)
			pairOnce(t, m.brokerPath)
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

// TestFDStoreWanted checks when stops use the store.
func TestFDStoreWanted(t *testing.T) {
	env := func(v string) func(string) string {
		return func(string) string { return v }
	}
	assert.True(t, fdStoreWanted(true, env("")))
	assert.True(t, fdStoreWanted(false, env("64")))
	assert.False(t, fdStoreWanted(false, env("0")))
	assert.False(t, fdStoreWanted(false, env("")))
	assert.False(t, fdStoreWanted(false, env("many")))
}
