package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// readPid returns the pid written in a pid file.
func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(string(b), "\n"), "pid file %q lacks its newline", b)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err, "pid file holds %q", b)
	return pid
}

// TestPidFile checks that the pid file holds the daemon's pid while it
// runs, that a second daemon with the same pid file refuses to start and
// leaves the file alone, and that the file is gone after the stop.
func TestPidFile(t *testing.T) {
	dir := t.TempDir()
	pidPath := filepath.Join(dir, "one-socket.pid")
	d := startDaemon(t, filepath.Join(dir, "one.socket"), "--pidfile", pidPath)
	assert.Equal(t, d.pid(), readPid(t, pidPath))

	// Another socket, so that only the pid file can be what stops it.
	other := filepath.Join(t.TempDir(), "two.socket")
	code, _, stderr := runDaemon(t, "--socket", other, "--pidfile", pidPath)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, fmt.Sprintf("another one-socket (pid %d) holds %s", d.pid(), pidPath))
	assert.Equal(t, d.pid(), readPid(t, pidPath), "the refused daemon changed the pid file")
	requireGone(t, other, filepath.Join(filepath.Dir(other), "one-socket.ctl"))

	pairOnce(t, d.path)
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
	requireGone(t, pidPath)
}

// TestPidFileStale checks that a pid file nobody holds locked (its daemon
// was killed) is taken over, and that a killed daemon's pid file is too.
func TestPidFileStale(t *testing.T) {
	dir := t.TempDir()
	pidPath := filepath.Join(dir, "one-socket.pid")
	// A pid that is not ours and longer than ours: the file must be
	// truncated, not just overwritten.
	require.NoError(t, os.WriteFile(pidPath, []byte("4194304999\n"), 0o644))
	d := startDaemon(t, filepath.Join(dir, "one.socket"), "--pidfile", pidPath)
	assert.Equal(t, d.pid(), readPid(t, pidPath))

	// SIGKILL leaves the file behind, unlocked.
	require.NoError(t, d.cmd.Process.Kill())
	d.wait()
	assert.Equal(t, d.pid(), readPid(t, pidPath))

	d2 := startDaemon(t, filepath.Join(dir, "one.socket"), "--pidfile", pidPath)
	assert.Equal(t, d2.pid(), readPid(t, pidPath))
	require.Equal(t, 0, d2.stop(syscall.SIGTERM))
	requireGone(t, pidPath)
}

// TestPidFileLockedByOther checks the lock, not the content, decides: a
// file locked by another process refuses the daemon even if it names no
// pid.
func TestPidFileLockedByOther(t *testing.T) {
	dir := t.TempDir()
	pidPath := filepath.Join(dir, "one-socket.pid")
	f, err := os.Create(pidPath)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB))

	code, _, stderr := runDaemon(t, "--socket", filepath.Join(dir, "one.socket"), "--pidfile", pidPath)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "another one-socket holds "+pidPath)
	requireGone(t, filepath.Join(dir, "one.socket"))
	_, err = os.Lstat(pidPath)
	assert.NoError(t, err, "the refused daemon removed a pid file it did not hold")
}

// TestPidFileRemovedOnFailedStart checks that a daemon that takes the pid
// file and then cannot listen removes it again.
func TestPidFileRemovedOnFailedStart(t *testing.T) {
	dir := t.TempDir()
	pidPath := filepath.Join(dir, "one-socket.pid")
	first := startDaemon(t, filepath.Join(dir, "one.socket"))
	code, _, stderr := runDaemon(t, "--socket", first.path, "--pidfile", pidPath)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "another broker is listening on "+first.path)
	requireGone(t, pidPath)
	require.Equal(t, 0, first.stop(syscall.SIGTERM))
}

func TestPidFileMissingDirectory(t *testing.T) {
	dir := t.TempDir()
	pidPath := filepath.Join(dir, "missing", "one-socket.pid")
	code, _, stderr := runDaemon(t, "--socket", filepath.Join(dir, "one.socket"), "--pidfile", pidPath)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "pid file "+pidPath)
	requireGone(t, filepath.Join(dir, "one.socket"))
}
