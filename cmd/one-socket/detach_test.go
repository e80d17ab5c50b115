package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// procStat returns the fields of /proc/pid/stat after the command name:
// state is [0], the session id [3].
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:]), nil
}

// waitExited waits until pid is gone or a zombie; a detached daemon is not
// the test's child, so the test cannot wait for it.
func waitExited(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		f, err := procStat(pid)
		if errors.Is(err, os.ErrNotExist) || err == nil && f[0] == "Z" {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the detached daemon (pid %d) did not exit", pid)
}

// killOnCleanup makes sure a detached daemon does not outlive its test.
func killOnCleanup(t *testing.T, pid int) {
	t.Cleanup(func() {
		if f, err := procStat(pid); err == nil && f[0] != "Z" {
			unix.Kill(pid, unix.SIGKILL)
		}
	})
}

// TestDetach starts the daemon with --detach and checks that the parent
// returns 0 only once the daemon accepts, that the daemon is another
// process in a session of its own with its pid in the pid file, standard
// input on /dev/null and its log (and standard error) in --log-file, that
// it runs from / yet finds the relative paths it was given, and that
// SIGTERM stops it and removes its files.
func TestDetach(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	code, stdout, stderr := runDaemon(t, "--detach", "--socket", "one.socket", "--pidfile", "one-socket.pid",
		"--log-file", "one-socket.log")
	require.Equal(t, 0, code, "stderr: %s", stderr)
	assert.Empty(t, stdout)
	assert.Empty(t, stderr)

	// Listening already: no retry.
	path := filepath.Join(dir, "one.socket")
	c, err := net.Dial("unix", path)
	require.NoError(t, err, "--detach returned before the daemon listened")
	c.Close()

	pid := readPid(t, filepath.Join(dir, "one-socket.pid"))
	killOnCleanup(t, pid)
	st, err := procStat(pid)
	require.NoError(t, err)
	assert.Equal(t, strconv.Itoa(pid), st[3], "the daemon is not the leader of its own session")
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	require.NoError(t, err)
	assert.Equal(t, "/", cwd)
	logPath := filepath.Join(dir, "one-socket.log")
	for fd, want := range map[int]string{0: "/dev/null", 1: logPath, 2: logPath} {
		got, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
		require.NoError(t, err)
		assert.Equal(t, want, got, "descriptor %d", fd)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	require.NoError(t, err)
	for _, fd := range fds {
		target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		assert.NotContains(t, target, "pipe:", "descriptor %s: the report pipe is still open in the daemon", fd.Name())
	}

	pairOnce(t, path)
	ctl := filepath.Join(dir, "one-socket.ctl")
	requireSocket(t, ctl)

	require.NoError(t, unix.Kill(pid, unix.SIGTERM))
	waitExited(t, pid)
	requireGone(t, path, ctl, filepath.Join(dir, "one-socket.pid"))
	log, err := os.ReadFile(logPath)
	require.NoError(t, err)
	assert.Contains(t, logLine(t, string(log), "one-socket started"), "socket="+path)
	assert.Contains(t, logLine(t, string(log), "one-socket stopped"), "paired=1")
}

// TestDetachFailure checks that when the detached daemon cannot start the
// parent says why and exits with the daemon's status, and that nothing is
// left running or behind.
func TestDetachFailure(t *testing.T) {
	t.Run("missing directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "missing")
		pidPath := filepath.Join(t.TempDir(), "one-socket.pid")
		code, _, stderr := runDaemon(t, "--detach", "--socket", filepath.Join(dir, "one.socket"), "--pidfile", pidPath)
		assert.Equal(t, 1, code)
		assert.Equal(t, "one-socket: cannot start: cannot create "+filepath.Join(dir, "one.socket")+
			": directory "+dir+" does not exist\n", stderr)
		requireGone(t, pidPath)
	})
	t.Run("live broker", func(t *testing.T) {
		first := startDaemon(t, sockPath(t))
		code, _, stderr := runDaemon(t, "--detach", "--socket", first.path)
		assert.Equal(t, 1, code)
		assert.Contains(t, stderr, "another broker is listening on "+first.path)
		require.Equal(t, 0, first.stop(syscall.SIGTERM))
	})
	t.Run("pid file held", func(t *testing.T) {
		dir := t.TempDir()
		pidPath := filepath.Join(dir, "one-socket.pid")
		first := startDaemon(t, filepath.Join(dir, "one.socket"), "--pidfile", pidPath)
		code, _, stderr := runDaemon(t, "--detach", "--socket", filepath.Join(t.TempDir(), "two.socket"), "--pidfile", pidPath)
		assert.Equal(t, 1, code)
		assert.Contains(t, stderr, fmt.Sprintf("another one-socket (pid %d) holds %s", first.pid(), pidPath))
		require.Equal(t, 0, first.stop(syscall.SIGTERM))
	})
	t.Run("bad flag", func(t *testing.T) {
		// Refused by the parent, before anything runs in the background.
		code, _, stderr := runDaemon(t, "--detach", "--max-conns", "-1")
		assert.Equal(t, 2, code)
		assert.Contains(t, stderr, "Run 'one-socket --help' for usage.")
	})
}
