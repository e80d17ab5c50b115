package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/scm"
	"github.com/one-socket/one-socket/internal/testutil"
	"github.com/one-socket/one-socket/libspbroker"
)

// The programs that pair's adapters reach are this test binary, started
// with ONE_SOCKETCTL_TEST_PROGRAM naming what it plays (testProgram). Each
// serves one connection as an echo that sends every message back with the
// descriptors it came with, so that a test sees bytes and SCM_RIGHTS
// descriptors make the round trip through the relay.
const programVar = "ONE_SOCKETCTL_TEST_PROGRAM"

// testProgram plays a program: "listening-fd" accepts on descriptor 3,
// "listen PATH" listens on PATH, "connect PATH" connects to it, "never"
// holds descriptor 3 without accepting, "exit N" exits with N. It returns
// the exit status.
func testProgram(role string, args []string) int {
	var c *net.UnixConn
	var err error
	switch role {
	case "listening-fd":
		if os.Getenv("LISTEN_FDS") != "1" || os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
			fmt.Fprintln(os.Stderr, "program: LISTEN_FDS/LISTEN_PID not set for descriptor 3")
			return 21
		}
		var l net.Listener
		f := os.NewFile(3, "listener")
		if l, err = net.FileListener(f); err == nil {
			var nc net.Conn
			nc, err = l.Accept()
			if err == nil {
				c = nc.(*net.UnixConn)
			}
		}
	case "listen":
		var l *net.UnixListener
		if l, err = net.ListenUnix("unix", &net.UnixAddr{Name: args[0], Net: "unix"}); err == nil {
			c, err = l.AcceptUnix()
			l.Close()
		}
	case "connect":
		c, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: args[0], Net: "unix"})
	case "direct":
		// Descriptor 3 must be a connection to a listening socket bound in
		// one-socketctl's private directory: the program itself.
		sa, err := unix.Getpeername(3)
		ua, ok := sa.(*unix.SockaddrUnix)
		if err != nil || !ok || !strings.Contains(ua.Name, "/one-socketctl-") {
			fmt.Fprintf(os.Stderr, "program: descriptor 3's peer is %#v (%v), not the program's listener\n", sa, err)
			return 24
		}
		f := os.NewFile(3, "direct")
		nc, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return 25
		}
		c := nc.(*net.UnixConn)
		c.Write([]byte("direct"))
		c.CloseWrite()
		buf := make([]byte, 16)
		n, _ := io.ReadFull(c, buf[:6])
		if string(buf[:n]) != "direct" {
			fmt.Fprintf(os.Stderr, "program: echo %q\n", buf[:n])
			return 26
		}
		return 0
	case "close-unread":
		// Exit, without reading, once the peer's data is queued on
		// descriptor 3: the peer's next read sees a reset.
		pfd := []unix.PollFd{{Fd: 3, Events: unix.POLLIN}}
		if n, err := unix.Poll(pfd, 10000); n != 1 || err != nil {
			fmt.Fprintln(os.Stderr, "program: nothing came on descriptor 3")
			return 27
		}
		return 0
	case "never":
		time.Sleep(time.Hour)
		return 0
	case "exit":
		n, _ := strconv.Atoi(args[0])
		return n
	default:
		fmt.Fprintln(os.Stderr, "program: unknown role", role)
		return 20
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "program:", err)
		return 22
	}
	if err := echoRights(c); err != nil {
		fmt.Fprintln(os.Stderr, "program: echo:", err)
		return 23
	}
	return 0
}

// echoRights sends back each read with its descriptors until the end of
// the stream.
func echoRights(c *net.UnixConn) error {
	defer c.Close()
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(253*4))
	for {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if errors.Is(err, io.EOF) || (err == nil && n == 0) {
			return c.CloseWrite()
		}
		if err != nil {
			return err
		}
		var fds []int
		if oobn > 0 {
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil {
				return err
			}
			for i := range msgs {
				got, err := unix.ParseUnixRights(&msgs[i])
				if err != nil {
					return err
				}
				fds = append(fds, got...)
			}
		}
		var rights []byte
		if len(fds) > 0 {
			rights = unix.UnixRights(fds...)
		}
		_, _, err = c.WriteMsgUnix(buf[:n], rights, nil)
		for _, fd := range fds {
			unix.Close(fd)
		}
		if err != nil {
			return err
		}
	}
}

// program returns the argv that starts this binary as a program playing
// role.
func program(t *testing.T, role string, args ...string) []string {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	return append([]string{"env", programVar + "=" + role, self}, args...)
}

// peerPair gets the other end of key from be, in the test process.
func peerPair(t *testing.T, be *backend, key string, mode libspbroker.Mode) *net.UnixConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	f, err := libspbroker.GetPair(ctx, be.socket, []byte(key), mode)
	require.NoError(t, err)
	c, err := scm.UnixConn(f)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// echoCheck sends messages with 0, 1 and 8 descriptors over c and checks
// that each comes back whole with descriptors to the same files.
func echoCheck(t *testing.T, c *net.UnixConn) {
	t.Helper()
	c.SetDeadline(time.Now().Add(waitFor))
	for _, nfds := range []int{0, 1, 8} {
		msg := []byte(fmt.Sprintf("message with %d descriptors", nfds))
		var rights []byte
		var inodes []uint64
		for i := 0; i < nfds; i++ {
			fd, err := unix.MemfdCreate("adapt-test", unix.MFD_CLOEXEC)
			require.NoError(t, err)
			var st unix.Stat_t
			require.NoError(t, unix.Fstat(fd, &st))
			inodes = append(inodes, st.Ino)
			defer unix.Close(fd)
			rights = append(rights, unix.UnixRights(fd)...)
		}
		_, _, err := c.WriteMsgUnix(msg, rights, nil)
		require.NoError(t, err)
		buf := make([]byte, len(msg))
		oob := make([]byte, unix.CmsgSpace(253*4))
		var got []uint64
		for read := 0; read < len(msg); {
			n, oobn, _, _, err := c.ReadMsgUnix(buf[read:], oob)
			require.NoError(t, err)
			require.NotZero(t, n, "the echo ended early")
			if read > 0 {
				require.Zero(t, oobn, "descriptors came after the message's first byte")
			}
			read += n
			if oobn == 0 {
				continue
			}
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			require.NoError(t, err)
			for i := range msgs {
				fds, err := unix.ParseUnixRights(&msgs[i])
				require.NoError(t, err)
				for _, fd := range fds {
					var st unix.Stat_t
					require.NoError(t, unix.Fstat(fd, &st))
					got = append(got, st.Ino)
					unix.Close(fd)
				}
			}
		}
		assert.Equal(t, string(msg), string(buf))
		assert.Equal(t, inodes, got, "the descriptors that came back")
	}
}

// endEcho half-closes c and expects the end of the stream back.
func endEcho(t *testing.T, c *net.UnixConn) {
	t.Helper()
	require.NoError(t, c.CloseWrite())
	n, err := c.Read(make([]byte, 1))
	assert.Zero(t, n)
	assert.Error(t, err) // io.EOF
}

func TestPairListeningFD(t *testing.T) {
	be := startBackend(t)
	private := shortTempDir(t)
	tool := start(t, testEnv("XDG_RUNTIME_DIR="+private), nil, append([]string{"--socket", be.socket, "pair", "lfd", "--mode", "server", "--listening-fd", "--"},
		program(t, "listening-fd")...)...)
	c := peerPair(t, be, "lfd", libspbroker.ModeClient)
	echoCheck(t, c)
	endEcho(t, c)
	assert.Equal(t, 0, tool.wait(), tool.stderr.String())
	// The private directory of the listening socket is gone.
	left, err := os.ReadDir(private)
	require.NoError(t, err)
	assert.Empty(t, left)
}

func TestPairConnect(t *testing.T) {
	be := startBackend(t)
	path := filepath.Join(be.dir, "prog.sock")
	// The program starts after the pair and listens late: the tool waits
	// for the path to appear.
	tool := start(t, testEnv(), nil, append([]string{"--socket", be.socket, "pair", "conn", "--connect", path, "--"},
		program(t, "listen", path)...)...)
	be.waitWaiting(t, 1)
	c := peerPair(t, be, "conn", libspbroker.ModeNone)
	echoCheck(t, c)
	endEcho(t, c)
	assert.Equal(t, 0, tool.wait(), tool.stderr.String())
}

func TestPairListen(t *testing.T) {
	be := startBackend(t)
	path := filepath.Join(be.dir, "tool.sock")
	tool := start(t, testEnv(), nil, append([]string{"--socket", be.socket, "pair", "lis", "--listen", path, "--"},
		program(t, "connect", path)...)...)
	c := peerPair(t, be, "lis", libspbroker.ModeNone)
	echoCheck(t, c)
	endEcho(t, c)
	assert.Equal(t, 0, tool.wait(), tool.stderr.String())
	assert.NoFileExists(t, path, "the socket was not removed")
}

// Without a command, --listen and --connect relay to a program started
// elsewhere; --listen's socket has the mode asked for.
func TestPairListenAndConnectStandalone(t *testing.T) {
	be := startBackend(t)
	lpath := filepath.Join(be.dir, "l.sock")
	listener := start(t, testEnv(), nil, "--socket", be.socket, "pair", "solo", "--mode", "server", "--listen", lpath, "--listen-mode", "0660")
	require.Eventually(t, func() bool { _, err := os.Lstat(lpath); return err == nil }, waitFor, time.Millisecond)
	fi, err := os.Lstat(lpath)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o660), fi.Mode().Perm())

	ppath := filepath.Join(be.dir, "p.sock")
	argv := program(t, "listen", ppath)
	prog := testutil.StartProc(t, "program", exec.Command(argv[0], argv[1:]...))
	connector := start(t, testEnv(), nil, "--socket", be.socket, "pair", "solo", "--mode", "client", "--connect", ppath)
	// What connects to the listener is relayed to the program on ppath.
	// The file exists from bind on, a moment before listen.
	c, err := dialWait(lpath, waitFor, nil, nil)
	require.NoError(t, err)
	defer c.Close()
	echoCheck(t, c)
	endEcho(t, c)
	assert.Equal(t, 0, listener.wait(), listener.stderr.String())
	assert.Equal(t, 0, connector.wait(), connector.stderr.String())
	<-prog.Done()
	assert.NoError(t, prog.Err)
}

// Handoff: the serving end's connection to its program goes to the other
// end's program, which then talks to it directly: its descriptor 3 is
// connected to the program's listening socket, not to a socketpair.
func TestPairHandoff(t *testing.T) {
	be := startBackend(t)
	server := start(t, testEnv(), nil, append([]string{"--socket", be.socket, "pair", "ho", "--mode", "server", "--handoff", "--listening-fd", "--"},
		program(t, "listening-fd")...)...)
	be.waitWaiting(t, 1)
	waiting, err := be.Waiting()
	require.NoError(t, err)
	require.Len(t, waiting, 1)
	assert.Equal(t, "ho#handoff", string(waiting[0].Key), "the broker sees the handoff key")
	// A plain client of the same key does not pair with it.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = libspbroker.GetPair(ctx, be.socket, []byte("ho"), libspbroker.ModeClient)
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	// Nor does a plain one-socketctl, which says why.
	lonely := run(t, testEnv(), "", "--socket", be.socket, "pair", "lonely", "--handoff", "--timeout", "100ms")
	assert.Equal(t, exitFailure, lonely.code)
	assert.Contains(t, lonely.stderr, `with --handoff the other end must say --handoff too (the broker sees "lonely#handoff")`)

	client := run(t, testEnv(), "", append([]string{"--socket", be.socket, "pair", "ho", "--mode", "client", "--handoff", "--"},
		program(t, "direct")...)...)
	assert.Equal(t, 0, client.code, client.stderr)
	assert.Equal(t, 0, server.wait(), server.stderr.String())
}

// Two ends that both take, with no command: the brokered socket is what
// each bridges to its standard input and output.
func TestPairHandoffBridges(t *testing.T) {
	be := startBackend(t)
	a := start(t, testEnv(), strings.NewReader("from a\n"), "--socket", be.socket, "pair", "hb", "--handoff")
	be.waitWaiting(t, 1)
	b := start(t, testEnv(), strings.NewReader("from b\n"), "--socket", be.socket, "pair", "hb", "--handoff")
	assert.Equal(t, 0, a.wait(), a.stderr.String())
	assert.Equal(t, 0, b.wait(), b.stderr.String())
	assert.Equal(t, "from b\n", a.stdout.String())
	assert.Equal(t, "from a\n", b.stdout.String())
}

// Both ends hold a connection to a program: one relay remains, in the
// end that receives the other's connection, and the echo still works.
func TestPairHandoffBothHold(t *testing.T) {
	be := startBackend(t)
	ppath := filepath.Join(be.dir, "p.sock")
	server := start(t, testEnv(), nil, append([]string{"--socket", be.socket, "pair", "hh", "--handoff", "--connect", ppath, "--"},
		program(t, "listen", ppath)...)...)
	lpath := filepath.Join(be.dir, "l.sock")
	client := start(t, testEnv(), nil, "--socket", be.socket, "pair", "hh", "--handoff", "--listen", lpath)
	require.Eventually(t, func() bool { _, err := os.Lstat(lpath); return err == nil }, waitFor, time.Millisecond)
	// The file exists from bind on, a moment before listen.
	c, err := dialWait(lpath, waitFor, nil, nil)
	require.NoError(t, err)
	defer c.Close()
	echoCheck(t, c)
	endEcho(t, c)
	assert.Equal(t, 0, server.wait(), server.stderr.String())
	assert.Equal(t, 0, client.wait(), client.stderr.String())
}

// openFDs counts the descriptors process pid has open.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	require.NoError(t, err)
	return len(ents)
}

// The relay closes each descriptor once it has passed it on: after many
// round trips the tool holds no more than before.
func TestPairRelayKeepsNoDescriptors(t *testing.T) {
	be := startBackend(t)
	path := filepath.Join(be.dir, "prog.sock")
	tool := start(t, testEnv(), nil, append([]string{"--socket", be.socket, "pair", "fds", "--connect", path, "--"},
		program(t, "listen", path)...)...)
	c := peerPair(t, be, "fds", libspbroker.ModeNone)
	// A round trip without descriptors: the relay is running, and holds
	// what it always will.
	_, err := c.Write([]byte("x"))
	require.NoError(t, err)
	_, err = c.Read(make([]byte, 1))
	require.NoError(t, err)
	before := openFDs(t, tool.cmd.Process.Pid)
	for i := 0; i < 20; i++ {
		echoCheck(t, c)
	}
	// The last descriptors may arrive here a moment before the tool
	// closes its copies.
	require.Eventually(t, func() bool { return openFDs(t, tool.cmd.Process.Pid) == before }, waitFor, 10*time.Millisecond,
		"the tool holds %d descriptors, %d before", openFDs(t, tool.cmd.Process.Pid), before)
	endEcho(t, c)
	assert.Equal(t, 0, tool.wait(), tool.stderr.String())
}

func TestPairAdapterUsage(t *testing.T) {
	long := "/tmp/" + strings.Repeat("x", sunPathMax)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--listening-fd"}, "--listening-fd needs a command"},
		{[]string{"--listening-fd", "--connect", "/tmp/p", "--", "true"}, "exclude each other"},
		{[]string{"--listen", "/tmp/a", "--connect", "/tmp/b"}, "exclude each other"},
		{[]string{"--listen-mode", "0600"}, "--listen-mode goes with --listen"},
		{[]string{"--listen", "/tmp/a", "--listen-mode", "0999"}, "octal mode"},
		{[]string{"--wait", "1s"}, "--wait goes with"},
		{[]string{"--connect", long}, "shorter than sun_path's 108 bytes"},
		{[]string{"--listen", long}, "shorter than sun_path's 108 bytes"},
	} {
		r := inProcess(1000, nil, append([]string{"pair", "k"}, tc.args...)...)
		assert.Equal(t, exitUsage, r.code, "%q", tc.args)
		assert.Contains(t, r.stderr, tc.want, "%q", tc.args)
	}
	r := inProcess(1000, nil, "pair", strings.Repeat("k", 1020), "--handoff")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "with --handoff KEY may be at most 1016 bytes")
}

func TestPairListenRefusesWhatIsNotAStaleSocket(t *testing.T) {
	be := startBackend(t)
	file := filepath.Join(be.dir, "precious")
	require.NoError(t, os.WriteFile(file, []byte("keep me"), 0o600))
	r := run(t, testEnv(), "", "--socket", be.socket, "pair", "k", "--listen", file)
	assert.Equal(t, exitFailure, r.code)
	assert.Contains(t, r.stderr, "exists and is not a socket; not touching it")
	got, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Equal(t, "keep me", string(got))

	busy := filepath.Join(be.dir, "busy.sock")
	listenMute(t, busy)
	r = run(t, testEnv(), "", "--socket", be.socket, "pair", "k", "--listen", busy)
	assert.Equal(t, exitFailure, r.code)
	assert.Contains(t, r.stderr, "a program already listens there")
	assert.Zero(t, be.Stats().Accepted, "nothing was asked of the broker")
}

func TestPairListenReplacesAStaleSocket(t *testing.T) {
	be := startBackend(t)
	path := filepath.Join(be.dir, "stale.sock")
	staleSocket(t, path)
	tool := start(t, testEnv(), nil, append([]string{"--socket", be.socket, "pair", "st", "--listen", path, "--"},
		program(t, "connect", path)...)...)
	c := peerPair(t, be, "st", libspbroker.ModeNone)
	echoCheck(t, c)
	endEcho(t, c)
	assert.Equal(t, 0, tool.wait())
	assert.Contains(t, tool.stderr.String(), "replacing the stale socket "+path)
	assert.NoFileExists(t, path)
}

// Programs that never show up: each wait is bounded, says what did not
// happen, and leaves nothing behind.
func TestPairProgramNeverComes(t *testing.T) {
	be := startBackend(t)
	private := shortTempDir(t)
	lpath := filepath.Join(be.dir, "l.sock")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"never accepts", append([]string{"--listening-fd", "--wait", "300ms", "--"}, program(t, "never")...),
			"did not accept a connection on descriptor 3 within 300ms"},
		{"nothing listens", []string{"--connect", filepath.Join(be.dir, "nobody.sock"), "--wait", "300ms"},
			"nothing listens on " + filepath.Join(be.dir, "nobody.sock") + " after 300ms"},
		{"nobody connects", []string{"--listen", lpath, "--wait", "300ms"},
			"nobody connected to " + lpath + " within 300ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tool := start(t, testEnv("XDG_RUNTIME_DIR="+private), nil, append([]string{"--socket", be.socket, "pair", "nc"}, tc.args...)...)
			peer := peerPair(t, be, "nc", libspbroker.ModeNone)
			assert.Equal(t, exitFailure, tool.wait())
			assert.Contains(t, tool.stderr.String(), tc.want)
			// The peer learns: its connection ends.
			peer.SetDeadline(time.Now().Add(waitFor))
			n, _ := peer.Read(make([]byte, 1))
			assert.Zero(t, n)
			left, err := os.ReadDir(private)
			require.NoError(t, err)
			assert.Empty(t, left)
			assert.NoFileExists(t, lpath)
		})
	}
}

// A program that exits before it connects or listens: the tool exits
// with its status.
func TestPairProgramExitsFirst(t *testing.T) {
	be := startBackend(t)
	for _, args := range [][]string{
		append([]string{"--listening-fd", "--"}, program(t, "exit", "7")...),
		append([]string{"--connect", filepath.Join(be.dir, "never.sock"), "--"}, program(t, "exit", "7")...),
		append([]string{"--listen", filepath.Join(be.dir, "l.sock"), "--"}, program(t, "exit", "7")...),
	} {
		tool := start(t, testEnv(), nil, append([]string{"--socket", be.socket, "pair", "ex"}, args...)...)
		peerPair(t, be, "ex", libspbroker.ModeNone)
		assert.Equal(t, 7, tool.wait(), "%q: %s", args, tool.stderr.String())
		assert.Contains(t, tool.stderr.String(), "exited before", "%q", args)
	}
	assert.NoFileExists(t, filepath.Join(be.dir, "l.sock"))
}

// SIGTERM while --listen waits, before or after the pair, still removes
// the socket.
func TestPairListenTermRemovesPath(t *testing.T) {
	be := startBackend(t)
	for _, paired := range []bool{false, true} {
		path := filepath.Join(be.dir, "term.sock")
		tool := start(t, testEnv(), nil, "--socket", be.socket, "pair", "term", "--listen", path)
		require.Eventually(t, func() bool { _, err := os.Lstat(path); return err == nil }, waitFor, time.Millisecond)
		if paired {
			peerPair(t, be, "term", libspbroker.ModeNone)
		} else {
			be.waitWaiting(t, 1)
		}
		tool.signal(syscall.SIGTERM)
		assert.NotZero(t, tool.wait())
		assert.NoFileExists(t, path, "paired: %v", paired)
	}
}
