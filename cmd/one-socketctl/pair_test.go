package main

import (
	"bytes"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/broker"
)

// randomBytes returns n bytes of noise, the same for a given seed.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestPairBridgesBothWays(t *testing.T) {
	be := startBackend(t)
	fromA, fromB := randomBytes(256<<10, 1), randomBytes(300<<10, 2)

	a := start(t, testEnv(), bytes.NewReader(fromA), "--socket", be.socket, "pair", "chat")
	be.waitWaiting(t, 1)
	b := start(t, testEnv("ONE_SOCKET_PATH="+be.socket), bytes.NewReader(fromB), "pair", "chat")

	assert.Equal(t, 0, a.wait(), a.stderr.String())
	assert.Equal(t, 0, b.wait(), b.stderr.String())
	assert.True(t, bytes.Equal(fromB, []byte(a.stdout.String())), "A received %d bytes, not B's %d", len(a.stdout.String()), len(fromB))
	assert.True(t, bytes.Equal(fromA, []byte(b.stdout.String())), "B received %d bytes, not A's %d", len(b.stdout.String()), len(fromA))
	assert.Empty(t, a.stderr.String())
	assert.Empty(t, b.stderr.String())
	assert.Equal(t, uint64(1), be.Stats().Paired)
}

func TestPairHalfClose(t *testing.T) {
	be := startBackend(t)
	a := start(t, testEnv(), stdinPipe, "--socket", be.socket, "pair", "talk")
	be.waitWaiting(t, 1)
	b := start(t, testEnv(), strings.NewReader("from b\n"), "--socket", be.socket, "pair", "talk")

	// B has said all it has to say; A has not, and B still listens.
	require.Eventually(t, func() bool { return a.stdout.String() == "from b\n" }, waitFor, time.Millisecond)
	assert.True(t, a.running(100*time.Millisecond), "A must go on sending while B reads")
	assert.True(t, b.running(0), "B must wait for A's data")

	_, err := a.stdin.Write([]byte("from a\n"))
	require.NoError(t, err)
	require.NoError(t, a.stdin.Close())
	assert.Equal(t, 0, a.wait(), a.stderr.String())
	assert.Equal(t, 0, b.wait(), b.stderr.String())
	assert.Equal(t, "from a\n", b.stdout.String())
}

func TestPairEndsWhenThePeerCloses(t *testing.T) {
	be := startBackend(t)
	// A's input never ends; the peer's socket does.
	a := start(t, testEnv(), stdinPipe, "--socket", be.socket, "pair", "short")
	be.waitWaiting(t, 1)
	b := start(t, testEnv(), nil, "--socket", be.socket, "pair", "short", "--", "sh", "-c", "echo bye >&3")
	assert.Equal(t, 0, b.wait(), b.stderr.String())
	assert.Equal(t, 0, a.wait(), a.stderr.String())
	assert.Equal(t, "bye\n", a.stdout.String())
}

func TestPairRunsCommand(t *testing.T) {
	be := startBackend(t)
	const script = `test "$LISTEN_PID" = "$$" || exit 11
test "$LISTEN_FDS" = 1 || exit 12
test "$LISTEN_FDNAMES" = "svc-1" || exit 13
[ -S /proc/$$/fd/3 ] || exit 14
read line <&3
echo "got:$line" >&3
echo "to stdout"
echo "to stderr" >&2`
	// Variables of an outer activation must not reach the command.
	env := testEnv("LISTEN_PID=1", "LISTEN_FDS=4", "LISTEN_FDNAMES=outer")
	a := start(t, env, nil, "--socket", be.socket, "pair", "svc-1", "--mode", "server", "--", "sh", "-c", script)
	be.waitWaiting(t, 1)
	b := run(t, testEnv(), "ping\n", "--socket", be.socket, "pair", "--mode", "client", "svc-1")
	assert.Equal(t, result{stdout: "got:ping\n"}, b)
	assert.Equal(t, 0, a.wait(), a.stderr.String())
	assert.Equal(t, "to stdout\n", a.stdout.String())
	assert.Equal(t, "to stderr\n", a.stderr.String())
}

func TestPairCommandStatus(t *testing.T) {
	be := startBackend(t)
	for _, tc := range []struct {
		key, script string
		want        int
	}{
		{"seven", "exit 7", 7},
		{"killed", "kill -TERM $$", 128 + int(syscall.SIGTERM)},
		{"name:with:colons", `test "$LISTEN_FDNAMES" = spbroker && exit 5`, 5},
		{"--hex", `test "$LISTEN_FDNAMES" = spbroker && exit 6`, 6},
	} {
		args := []string{"--socket", be.socket, "pair", tc.key}
		if tc.key == "--hex" {
			args = append(args, "00ff")
		}
		a := start(t, testEnv(), nil, append(args, "--", "sh", "-c", tc.script)...)
		be.waitWaiting(t, 1)
		b := run(t, testEnv(), "", args...)
		assert.Equal(t, tc.want, a.wait(), "%s: %s", tc.key, a.stderr.String())
		assert.Equal(t, result{}, b, tc.key)
	}
}

func TestPairCommandNotFound(t *testing.T) {
	be := startBackend(t)
	r := run(t, testEnv(), "", "--socket", be.socket, "pair", "k", "--", "/nonexistent/cmd", "arg")
	assert.Equal(t, exitNotFound, r.code)
	assert.Contains(t, r.stderr, "/nonexistent/cmd")
	assert.Zero(t, be.Stats().Accepted, "no pair is asked for a command that cannot run")

	r = run(t, testEnv("PATH=/nonexistent"), "", "--socket", be.socket, "pair", "k", "--", "sh")
	assert.Equal(t, exitNotFound, r.code)
	assert.Contains(t, r.stderr, `"sh": executable file not found in $PATH`)
}

func TestPairForwardsTermNotInt(t *testing.T) {
	be := startBackend(t)
	const script = `trap 'echo got-term >&3; exit 0' TERM
echo ready >&3
while :; do sleep 0.02; done`
	a := start(t, testEnv(), nil, "--socket", be.socket, "pair", "sig", "--", "sh", "-c", script)
	be.waitWaiting(t, 1)
	b := start(t, testEnv(), stdinPipe, "--socket", be.socket, "pair", "sig")
	require.Eventually(t, func() bool { return b.stdout.String() == "ready\n" }, waitFor, time.Millisecond)

	// A terminal sends SIGINT to the whole foreground group; one-socketctl
	// leaves it to the command, which here did not get it.
	a.signal(syscall.SIGINT)
	assert.True(t, a.running(100*time.Millisecond), "SIGINT to one-socketctl alone must not end the command")
	a.signal(syscall.SIGTERM)
	assert.Equal(t, 0, a.wait(), a.stderr.String())
	assert.Equal(t, 0, b.wait(), b.stderr.String())
	assert.Equal(t, "ready\ngot-term\n", b.stdout.String())
}

func TestPairTimeout(t *testing.T) {
	be := startBackend(t)
	start := time.Now()
	r := run(t, testEnv(), "", "--socket", be.socket, "pair", "lonely", "--timeout", "300ms")
	assert.Equal(t, result{stderr: "one-socketctl: no peer for key \"lonely\" (mode none) within 300ms\n", code: 1}, r)
	assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
	// The broker had it waiting and forgot it.
	require.Eventually(t, func() bool { s := be.Stats(); return s.Waiting == 0 && s.Vanished == 1 }, waitFor, time.Millisecond,
		"stats: %+v", be.Stats())

	r = run(t, testEnv(), "", "--socket", be.socket, "pair", "--hex", "00ff", "--mode", "client", "--timeout", "50ms")
	assert.Equal(t, result{stderr: "one-socketctl: no peer for key 0x00ff (mode client) within 50ms\n", code: 1}, r)
}

func TestPairInterrupted(t *testing.T) {
	be := startBackend(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		a := start(t, testEnv(), nil, "--socket", be.socket, "pair", "k")
		be.waitWaiting(t, 1)
		a.signal(sig)
		assert.Equal(t, exitFailure, a.wait(), sig.String())
		assert.Equal(t, "one-socketctl: interrupted while waiting for a peer for key \"k\"\n", a.stderr.String())
		be.waitWaiting(t, 0)
	}
}

func TestPairDropped(t *testing.T) {
	be := startBackend(t)
	a := start(t, testEnv(), nil, "--socket", be.socket, "pair", "doomed", "--no-retry")
	be.waitWaiting(t, 1)
	assert.Equal(t, result{stdout: "dropped 1 waiting client\n"}, be.ctl(t, "drop", "doomed"))
	assert.Equal(t, exitFailure, a.wait())
	assert.Contains(t, a.stderr.String(), "one-socketctl: the broker closed the connection without a pair")
}

// Without --no-retry a dropped request looks like a restart: pair asks
// again, and pairs with a peer that comes later.
func TestPairDroppedAsksAgain(t *testing.T) {
	be := startBackend(t)
	a := start(t, testEnv(), strings.NewReader("from a\n"), "--socket", be.socket, "pair", "phoenix")
	be.waitWaiting(t, 1)
	assert.Equal(t, result{stdout: "dropped 1 waiting client\n"}, be.ctl(t, "drop", "phoenix"))
	require.Eventually(t, func() bool { s := be.Stats(); return s.Accepted == 2 && s.Waiting == 1 }, waitFor, time.Millisecond,
		"pair did not ask again: %+v", be.Stats())
	b := run(t, testEnv(), "from b\n", "--socket", be.socket, "pair", "phoenix")
	assert.Equal(t, result{stdout: "from a\n"}, b)
	assert.Equal(t, 0, a.wait(), a.stderr.String())
	assert.Equal(t, "from b\n", a.stdout.String())
}

func TestPairModes(t *testing.T) {
	be := startBackend(t)
	// none does not pair with client.
	a := start(t, testEnv(), nil, "--socket", be.socket, "pair", "m", "--mode", "none", "--timeout", "5s")
	be.waitWaiting(t, 1)
	r := run(t, testEnv(), "", "--socket", be.socket, "pair", "m", "--mode", "client", "--timeout", "100ms")
	assert.Equal(t, exitFailure, r.code)
	assert.Contains(t, r.stderr, "no peer")
	// server does.
	r = run(t, testEnv(), "", "--socket", be.socket, "pair", "m", "--mode", "none")
	assert.Equal(t, result{}, r)
	assert.Equal(t, 0, a.wait(), a.stderr.String())
}

func TestPairNoBroker(t *testing.T) {
	dir := shortTempDir(t)
	missing := filepath.Join(dir, "missing.socket")
	r := run(t, testEnv(), "", "--socket", missing, "pair", "k", "--no-retry")
	assert.Equal(t, result{stderr: "one-socketctl: no broker socket at " + missing + ": is one-socket running?\n", code: 1}, r)

	stale := filepath.Join(dir, "stale.socket")
	staleSocket(t, stale)
	r = run(t, testEnv(), "", "--no-retry", "--socket", stale, "pair", "k")
	assert.Equal(t, result{stderr: "one-socketctl: nobody answers on " + stale + "\n", code: 1}, r)

	// By default pair asks again until --timeout, and then says how the
	// last attempt failed.
	r = run(t, testEnv(), "", "--socket", missing, "pair", "k", "--timeout", "300ms")
	assert.Equal(t, exitFailure, r.code)
	assert.Regexp(t, `^one-socketctl: no peer for key "k" \(mode none\) within 300ms; the last of \d+ attempts failed: `+
		`no broker socket at `+regexp.QuoteMeta(missing)+`: is one-socket running\?\n$`, r.stderr)
	r = run(t, testEnv(), "", "--socket", stale, "pair", "k", "--timeout", "300ms")
	assert.Regexp(t, `; the last of \d+ attempts failed: nobody answers on `+regexp.QuoteMeta(stale)+`\n$`, r.stderr)

	// An interrupt says it too.
	a := start(t, testEnv(), nil, "--socket", missing, "pair", "k")
	assert.True(t, a.running(200*time.Millisecond), "pair gave up on a missing broker")
	a.signal(syscall.SIGINT)
	assert.Equal(t, exitFailure, a.wait())
	assert.Regexp(t, `^one-socketctl: interrupted while waiting for a peer for key "k"; the last of \d+ attempts failed: `+
		`no broker socket at `, a.stderr.String())
}

// pair started before the broker is there pairs once it is.
func TestPairBeforeBroker(t *testing.T) {
	sock := filepath.Join(shortTempDir(t), "one.socket")
	a := start(t, testEnv(), strings.NewReader("early\n"), "--socket", sock, "pair", "k", "--mode", "server")
	assert.True(t, a.running(200*time.Millisecond), "pair gave up on a missing broker")
	b, stop := serveBrokerAt(t, sock)
	defer stop()
	waitWaiting(t, b, 1)
	r := run(t, testEnv(), "late\n", "--socket", sock, "pair", "k", "--mode", "client")
	assert.Equal(t, result{stdout: "early\n"}, r)
	assert.Equal(t, 0, a.wait(), a.stderr.String())
	assert.Equal(t, "late\n", a.stdout.String())
}

// A broker that goes away while pair waits, and comes back on the same
// path, gets pair's request again.
func TestPairRidesOutRestart(t *testing.T) {
	sock := filepath.Join(shortTempDir(t), "one.socket")
	first, stop := serveBrokerAt(t, sock)
	a := start(t, testEnv(), strings.NewReader("before\n"), "--socket", sock, "pair", "k")
	waitWaiting(t, first, 1)
	stop() // disconnects the waiting pair; the socket file stays, nobody listening
	assert.True(t, a.running(200*time.Millisecond), "pair gave up when the broker stopped")

	second, stop := serveBrokerAt(t, sock)
	defer stop()
	waitWaiting(t, second, 1)
	r := run(t, testEnv(), "after\n", "--socket", sock, "pair", "k")
	assert.Equal(t, result{stdout: "before\n"}, r)
	assert.Equal(t, 0, a.wait(), a.stderr.String())
	assert.Equal(t, "after\n", a.stdout.String())
}

// serveBrokerAt runs a bare pairing engine on path until stop is called
// (or the test ends). Like the daemon, it replaces a stale socket file.
func serveBrokerAt(t *testing.T, path string) (*broker.Broker, func()) {
	t.Helper()
	b, err := broker.New(&broker.Config{MaxConns: 64})
	require.NoError(t, err)
	if err := os.Remove(path); err != nil {
		require.ErrorIs(t, err, fs.ErrNotExist)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- b.Serve(ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			b.Shutdown()
			assert.ErrorIs(t, <-served, broker.ErrClosed)
		})
	}
	t.Cleanup(stop)
	require.Eventually(t, func() bool { _, err := b.Waiting(); return err == nil }, waitFor, time.Millisecond)
	return b, stop
}

// waitWaiting waits until n clients wait in b.
func waitWaiting(t *testing.T, b *broker.Broker, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return b.Stats().Waiting == n }, waitFor, time.Millisecond,
		"waiting clients never became %d (now %d)", n, b.Stats().Waiting)
}

func TestFDName(t *testing.T) {
	assert.Equal(t, "vhost-user 1", fdName([]byte("vhost-user 1")))
	assert.Equal(t, "spbroker", fdName([]byte("a:b")))
	assert.Equal(t, "spbroker", fdName([]byte{0xff}))
	assert.Equal(t, "spbroker", fdName([]byte("tab\t")))
	assert.Equal(t, "spbroker", fdName([]byte(strings.Repeat("k", 256))))
	assert.Equal(t, strings.Repeat("k", 255), fdName([]byte(strings.Repeat("k", 255))))
}

// A peer that closes with data unread resets the socket: pair says so,
// naming the socket, not standard output (which io.Copy splices to).
func TestPairReportsReset(t *testing.T) {
	be := startBackend(t)
	// a's program exits once b's data is there, unread: b's read of the
	// socket then sees a reset.
	a := start(t, testEnv(), stdinPipe, append([]string{"--socket", be.socket, "pair", "rst", "--"},
		program(t, "close-unread")...)...)
	be.waitWaiting(t, 1)
	b := start(t, testEnv(), strings.NewReader(strings.Repeat("x", 1<<16)), "--socket", be.socket, "pair", "rst")
	assert.Equal(t, 0, a.wait())
	assert.Equal(t, exitFailure, b.wait())
	assert.Contains(t, b.stderr.String(), "the peer reset the paired socket")
	assert.NotContains(t, b.stderr.String(), "/dev/stdout")
}
