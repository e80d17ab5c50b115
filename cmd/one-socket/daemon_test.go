package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
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

// sockPath returns a socket path in a fresh temporary directory.
func sockPath(t *testing.T) string {
	return filepath.Join(t.TempDir(), "one.socket")
}

// inode returns the inode number of the file at path.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	return fi.Sys().(*syscall.Stat_t).Ino
}

func requireSocket(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	require.Equal(t, fs.ModeSocket, fi.Mode().Type(), "%s is not a socket", path)
}

func TestPairsAndStops(t *testing.T) {
	path := sockPath(t)
	d := startDaemon(t, path)
	requireSocket(t, path)
	pairOnce(t, path)
	pairOnce(t, path)
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
	assert.EqualValues(t, 2, logCounter(t, d.stderr.String(), "paired"))
}

func TestSocketPathFromEnvironment(t *testing.T) {
	path := sockPath(t)
	d := spawn(t, daemonEnv(envSocketPath+"="+path))
	d.path = path
	d.waitAccepting()
	pairOnce(t, path)
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
}

func TestSocketMode(t *testing.T) {
	// The test process's umask (usually 022) would strip group and other
	// write bits from a freshly bound socket: 0666 shows that chmod ran.
	for _, tt := range []struct {
		args []string
		want fs.FileMode
	}{
		{nil, 0o660},
		{[]string{"--socket-mode", "0600"}, 0o600},
		{[]string{"--socket-mode", "666"}, 0o666},
	} {
		t.Run(fmt.Sprint(tt.args), func(t *testing.T) {
			path := sockPath(t)
			d := startDaemon(t, path, tt.args...)
			fi, err := os.Lstat(path)
			require.NoError(t, err)
			assert.Equal(t, tt.want, fi.Mode().Perm())
			require.Equal(t, 0, d.stop(syscall.SIGTERM))
			// The log is read after the stop: the socket accepts before the
			// start line is written.
			assert.Contains(t, logLine(t, d.stderr.String(), "one-socket started"), fmt.Sprintf("mode=%04o", uint32(tt.want)))
		})
	}
}

func TestRefusesLiveBroker(t *testing.T) {
	path := sockPath(t)
	first := startDaemon(t, path)
	ino := inode(t, path)

	code, _, stderr := runDaemon(t, "--socket", path)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "another broker is listening on "+path)

	assert.Equal(t, ino, inode(t, path), "the live broker's socket file was replaced")
	pairOnce(t, path)
	require.Equal(t, 0, first.stop(syscall.SIGTERM))
}

func TestReplacesStaleSocket(t *testing.T) {
	path := sockPath(t)
	// A socket file with nobody listening, as a killed broker leaves it.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	ln.SetUnlinkOnClose(false)
	require.NoError(t, ln.Close())
	requireSocket(t, path)
	// Inode numbers are reused at once on tmpfs; the mode tells the
	// daemon's socket from the stale one (made under the usual umask).
	require.NoError(t, os.Chmod(path, 0o700))

	d := startDaemon(t, path)
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o660), fi.Mode().Perm(), "the stale socket is still there")
	assert.Contains(t, d.stderr.String(), `msg="replaced a stale socket: nobody was listening on it" path=`+path)
	pairOnce(t, path)
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
	_, err = os.Lstat(path)
	assert.ErrorIs(t, err, fs.ErrNotExist)
}

func TestRefusesNonSocket(t *testing.T) {
	for _, tt := range []struct {
		name   string
		make   func(path string) error
		reason string
	}{
		{"regular file", func(p string) error { return os.WriteFile(p, []byte("precious\n"), 0o644) }, "a regular file"},
		{"directory", func(p string) error { return os.Mkdir(p, 0o755) }, "a directory"},
		{"named pipe", func(p string) error { return unix.Mkfifo(p, 0o644) }, "a named pipe"},
		{"symlink to a socket", func(p string) error {
			// Even a link to a live socket: the daemon must not follow it.
			target := filepath.Join(filepath.Dir(p), "target.socket")
			ln, err := net.Listen("unix", target)
			if err != nil {
				return err
			}
			t.Cleanup(func() { ln.Close() })
			return os.Symlink(target, p)
		}, "a symbolic link"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := sockPath(t)
			require.NoError(t, tt.make(path))
			before, err := os.Lstat(path)
			require.NoError(t, err)

			code, _, stderr := runDaemon(t, "--socket", path)
			assert.Equal(t, 1, code)
			assert.Contains(t, stderr, path+" exists and is not a socket ("+tt.reason+")")

			after, err := os.Lstat(path)
			require.NoError(t, err, "the daemon removed what was at the path")
			assert.True(t, os.SameFile(before, after))
			assert.Equal(t, before.Mode(), after.Mode())
			if tt.name == "regular file" {
				b, err := os.ReadFile(path)
				require.NoError(t, err)
				assert.Equal(t, "precious\n", string(b))
			}
		})
	}
}

func TestMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	code, _, stderr := runDaemon(t, "--socket", filepath.Join(dir, "one.socket"))
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "directory "+dir+" does not exist")
	_, err := os.Stat(dir)
	assert.ErrorIs(t, err, fs.ErrNotExist, "the daemon must not create the directory")
}

// TestSignals checks a stop by SIGINT and by SIGTERM: exit status 0, the
// socket file gone, and clients still connected see their connection end
// without a SET_PAIR.
func TestSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			path := sockPath(t)
			d := startDaemon(t, path)
			base := stableFDCount(t, d.pid())

			// One client still handshaking (it sent nothing), one waiting
			// for a peer that never comes.
			silent, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
			require.NoError(t, err)
			defer silent.Close()
			waiting, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
			require.NoError(t, err)
			defer waiting.Close()
			_, err = waiting.Write(getPairWire(uniqueKey("lonely"), spb.ModeClient))
			require.NoError(t, err)
			waitFDCount(t, d.pid(), "both clients accepted", func(n int) bool { return n >= base+2 })

			require.Equal(t, 0, d.stop(sig))

			_, err = os.Lstat(path)
			assert.ErrorIs(t, err, fs.ErrNotExist, "socket file left behind")

			deadline := time.Now().Add(5 * time.Second)
			buf := make([]byte, 2*spb.MessageSize)
			silent.SetReadDeadline(deadline)
			n, err := silent.Read(buf)
			assert.Equal(t, 0, n)
			assert.ErrorIs(t, err, io.EOF, "a client that sent nothing sees end of file")

			// The broker only peeks at a GET_PAIR, so it closes the waiting
			// client's connection with the request still unread, and Linux
			// then reports ECONNRESET to the client instead of EOF.
			waiting.SetReadDeadline(deadline)
			n, oobn, _, _, err := waiting.ReadMsgUnix(buf, make([]byte, 64))
			assert.LessOrEqual(t, n, 0, "a waiting client got data")
			assert.LessOrEqual(t, oobn, 0, "a waiting client got a descriptor")
			t.Logf("the waiting client's read ended with %v", err)
			if !errors.Is(err, io.EOF) {
				assert.ErrorIs(t, err, unix.ECONNRESET, "the waiting client's connection must end")
			}

			stop := logLine(t, d.stderr.String(), "one-socket stopped")
			want := map[syscall.Signal]string{syscall.SIGTERM: "terminated", syscall.SIGINT: "interrupt"}[sig]
			assert.Contains(t, stop, "reason="+want)
		})
	}
}

// TestLeavesReplacedSocketFile checks that at exit the daemon removes only
// the socket file it created, not one put in its place.
func TestLeavesReplacedSocketFile(t *testing.T) {
	path := sockPath(t)
	d := startDaemon(t, path)
	require.NoError(t, os.Remove(path))
	require.NoError(t, os.WriteFile(path, []byte("someone else's\n"), 0o644))

	require.Equal(t, 0, d.stop(syscall.SIGTERM))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "someone else's\n", string(b))
	assert.Contains(t, d.stderr.String(), "socket file was removed or replaced")
}

func TestVersion(t *testing.T) {
	code, stdout, stderr := runDaemon(t, "--version")
	assert.Equal(t, 0, code)
	assert.Equal(t, "one-socket "+testVersion+"\n", stdout)
	assert.Empty(t, stderr)
}

func TestHelp(t *testing.T) {
	code, stdout, _ := runDaemon(t, "--help")
	assert.Equal(t, 0, code)
	for _, want := range []string{"Usage: one-socket", "--socket PATH", "--socket-mode MODE", "--log-level LEVEL",
		"--handshake-timeout DURATION", "--max-conns N", "--version", "--ctl-socket PATH", "--detach",
		"--pidfile PATH", "--log-file PATH", "ONE_SOCKET_PATH", "ONE_SOCKET_CTL_PATH", "XDG_RUNTIME_DIR",
		"GOMAXPROCS", "LISTEN_FDS", "NOTIFY_SOCKET", "SIGHUP"} {
		assert.Contains(t, stdout, want)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--no-such-flag"},
		{"--log-level", "loud"},
		{"--socket-mode", "999"},
		{"--socket-mode", "01000"},
		{"--handshake-timeout", "0"},
		{"--handshake-timeout", "soon"},
		{"--max-conns", "-1"},
		{"--max-conns", "many"},
		{"/some/path"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, _, stderr := runDaemon(t, args...)
			assert.Equal(t, 2, code)
			assert.Contains(t, stderr, "Run 'one-socket --help' for usage.")
		})
	}
}

func TestAbstractSocket(t *testing.T) {
	name := fmt.Sprintf("@one-socket-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	dir := t.TempDir()
	t.Chdir(dir) // nothing may appear in the working directory
	code, _, stderr := runDaemon(t, "--socket", name)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "an abstract socket lets every user in the network namespace connect, and without --policy pair with any key")
	code, _, stderr = runDaemon(t, "--socket", name, "--open-abstract", "--socket-mode", "0600")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "--socket-mode cannot apply to an abstract socket")

	d := startDaemon(t, name, "--open-abstract")
	pairOnce(t, name)

	code, _, stderr = runDaemon(t, "--socket", name, "--open-abstract")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "another broker is listening on "+name)
	pairOnce(t, name)

	require.Equal(t, 0, d.stop(syscall.SIGTERM))
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, ents)
	_, err = net.Dial("unix", name)
	assert.ErrorIs(t, err, unix.ECONNREFUSED, "the abstract name outlived the daemon")
}

func TestLogging(t *testing.T) {
	t.Run("info", func(t *testing.T) {
		path := sockPath(t)
		d := startDaemon(t, path, "--max-conns", "100")
		pairOnce(t, path)
		require.Equal(t, 0, d.stop(syscall.SIGTERM))
		out := d.stderr.String()

		var rl unix.Rlimit
		require.NoError(t, unix.Getrlimit(unix.RLIMIT_NOFILE, &rl))
		start := logLine(t, out, "one-socket started")
		for _, want := range []string{"level=INFO", "socket=" + path, "max_conns=100",
			fmt.Sprintf("nofile=%d", rl.Max), fmt.Sprintf("pid=%d", d.pid()), "version=" + testVersion} {
			assert.Contains(t, start, want)
		}
		assert.EqualValues(t, 1, logCounter(t, out, "paired"))
		assert.NotContains(t, out, "level=DEBUG")
		assert.NotContains(t, out, "level=WARN")
	})
	t.Run("debug", func(t *testing.T) {
		path := sockPath(t)
		d := startDaemon(t, path, "--log-level", "debug")
		pairOnce(t, path)
		require.Equal(t, 0, d.stop(syscall.SIGTERM))
		assert.Contains(t, d.stderr.String(), "level=DEBUG", "per-client events at debug level")
	})
	t.Run("error", func(t *testing.T) {
		path := sockPath(t)
		d := startDaemon(t, path, "--log-level", "error")
		pairOnce(t, path)
		require.Equal(t, 0, d.stop(syscall.SIGTERM))
		assert.Empty(t, d.stderr.String())
	})
}

func TestHandshakeTimeout(t *testing.T) {
	path := sockPath(t)
	d := startDaemon(t, path, "--handshake-timeout", "200ms")
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	defer c.Close()
	start := time.Now()
	c.SetReadDeadline(start.Add(10 * time.Second))
	_, err = c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "a silent client is disconnected")
	assert.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
	assert.EqualValues(t, 1, logCounter(t, d.stderr.String(), "timed_out"))
}
