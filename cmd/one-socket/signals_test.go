package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStopRemovesFiles checks SIGTERM and SIGINT with every file the
// daemon makes: exit status 0 within a second, and the broker socket, the
// control socket and the pid file all gone.
func TestStopRemovesFiles(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			path, ctl, pidPath := filepath.Join(dir, "one.socket"), filepath.Join(dir, "one-socket.ctl"), filepath.Join(dir, "pid")
			d := startDaemon(t, path, "--pidfile", pidPath)
			requireSocket(t, ctl)
			fi, err := os.Lstat(ctl)
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "control socket mode")
			pairOnce(t, path)

			start := time.Now()
			require.NoError(t, d.cmd.Process.Signal(sig))
			require.Equal(t, 0, d.wait())
			assert.Less(t, time.Since(start), time.Second, "the stop took too long")
			requireGone(t, path, ctl, pidPath)
		})
	}
}

// TestCtlSocketFlag covers where the control socket goes: --ctl-socket,
// $ONE_SOCKET_CTL_PATH, and "none" or "" to have none.
func TestCtlSocketFlag(t *testing.T) {
	for _, tt := range []struct {
		name string
		args func(dir string) []string
		env  func(dir string) []string
		want string // file name in dir, "" for no control socket
	}{
		{"flag", func(dir string) []string { return []string{"--ctl-socket", filepath.Join(dir, "x.ctl")} }, nil, "x.ctl"},
		{"env", nil, func(dir string) []string { return []string{envCtlPath + "=" + filepath.Join(dir, "e.ctl")} }, "e.ctl"},
		{"flag over env", func(dir string) []string { return []string{"--ctl-socket", filepath.Join(dir, "x.ctl")} },
			func(dir string) []string { return []string{envCtlPath + "=" + filepath.Join(dir, "e.ctl")} }, "x.ctl"},
		{"flag none", func(string) []string { return []string{"--ctl-socket", "none"} }, nil, ""},
		{"flag empty", func(string) []string { return []string{"--ctl-socket="} }, nil, ""},
		{"env none", nil, func(string) []string { return []string{envCtlPath + "=none"} }, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "one.socket")
			var args, env []string
			if tt.args != nil {
				args = tt.args(dir)
			}
			if tt.env != nil {
				env = tt.env(dir)
			}
			d := spawn(t, daemonEnv(env...), append([]string{"--socket", path}, args...)...)
			d.path = path
			d.waitAccepting()
			ents, err := os.ReadDir(dir)
			require.NoError(t, err)
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			want := []string{"one.socket"}
			if tt.want != "" {
				want = append(want, tt.want)
				requireSocket(t, filepath.Join(dir, tt.want))
			}
			assert.ElementsMatch(t, want, names)
			require.Equal(t, 0, d.stop(syscall.SIGTERM))
			requireGone(t, path)
			if tt.want != "" {
				requireGone(t, filepath.Join(dir, tt.want))
			}
		})
	}
}

// TestCtlSocketRefused checks that the control socket follows the broker
// socket's rules: a live one refuses the start, and the broker socket
// just created is removed again.
func TestCtlSocketRefused(t *testing.T) {
	dir := t.TempDir()
	first := startDaemon(t, filepath.Join(dir, "one.socket"))
	ctl := filepath.Join(dir, "one-socket.ctl")
	second := filepath.Join(t.TempDir(), "two.socket")
	code, _, stderr := runDaemon(t, "--socket", second, "--ctl-socket", ctl)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "control socket: another broker is listening on "+ctl)
	requireGone(t, second)
	requireSocket(t, ctl)

	notSocket := filepath.Join(t.TempDir(), "file.ctl")
	require.NoError(t, os.WriteFile(notSocket, nil, 0o644))
	code, _, stderr = runDaemon(t, "--socket", second, "--ctl-socket", notSocket)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, notSocket+" exists and is not a socket (a regular file)")
	requireGone(t, second)
	require.Equal(t, 0, first.stop(syscall.SIGTERM))
}

// TestHangUpReopensLogFile does what logrotate does: rename the log file,
// send SIGHUP, and check that the daemon writes to a new file at the old
// path from then on.
func TestHangUpReopensLogFile(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "one-socket.log")
	d := startDaemon(t, filepath.Join(dir, "one.socket"), "--log-file", logPath)
	assert.Empty(t, d.stderr.String(), "with --log-file, nothing goes to stderr")
	fi, err := os.Stat(logPath)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(logFileMode), fi.Mode().Perm())

	rotated := logPath + ".1"
	require.NoError(t, os.Rename(logPath, rotated))
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGHUP))
	waitFile(t, logPath, "log file reopened")
	pairOnce(t, d.path)
	require.Equal(t, 0, d.stop(syscall.SIGTERM))

	old, err := os.ReadFile(rotated)
	require.NoError(t, err)
	logLine(t, string(old), "one-socket started")
	assert.NotContains(t, string(old), "one-socket stopped")
	cur, err := os.ReadFile(logPath)
	require.NoError(t, err)
	assert.Contains(t, logLine(t, string(cur), "one-socket stopped"), "paired=1")
	assert.NotContains(t, string(cur), "one-socket started")
}

// waitFile waits until the file at path contains want.
func waitFile(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never contained %q; it holds:\n%s", path, want, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHangUpWithoutLogFile checks that SIGHUP never stops a daemon that
// logs to stderr: it says so at debug level and carries on.
func TestHangUpWithoutLogFile(t *testing.T) {
	d := startDaemon(t, sockPath(t), "--log-level", "debug")
	for range 3 {
		require.NoError(t, d.cmd.Process.Signal(syscall.SIGHUP))
	}
	d.waitLog("SIGHUP ignored: there is no --log-file to reopen")
	pairOnce(t, d.path)
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
}
