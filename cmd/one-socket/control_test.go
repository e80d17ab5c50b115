package main

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestControlStop sends the control protocol's stop, as one-socketctl
// does, and checks that it stops the daemon as SIGTERM would: a reply
// first, then exit status 0 with every file removed.
func TestControlStop(t *testing.T) {
	dir := t.TempDir()
	path, ctl, pidPath := filepath.Join(dir, "one.socket"), filepath.Join(dir, "one-socket.ctl"), filepath.Join(dir, "pid")
	d := startDaemon(t, path, "--pidfile", pidPath)
	pairOnce(t, path)

	start := time.Now()
	reply := controlRequest(t, ctl, `{"command":"stop"}`)
	assert.Equal(t, map[string]any{"ok": true, "result": map[string]any{"stopping": true}}, reply)
	require.Equal(t, 0, d.wait())
	assert.Less(t, time.Since(start), time.Second, "the stop took too long")
	requireGone(t, path, ctl, pidPath)
	assert.Contains(t, logLine(t, d.stderr.String(), "one-socket stopped"), `reason="stop command"`)
	assert.EqualValues(t, 1, logCounter(t, d.stderr.String(), "paired"))
}

// TestControlLogLevel changes the log level through the control socket
// and checks that the daemon's log follows it.
func TestControlLogLevel(t *testing.T) {
	path := sockPath(t)
	ctl := filepath.Join(filepath.Dir(path), "one-socket.ctl")
	d := startDaemon(t, path, "--log-level", "warn")

	reply := controlRequest(t, ctl, `{"command":"log-level"}`)
	assert.Equal(t, map[string]any{"ok": true, "result": map[string]any{"level": "warn"}}, reply)
	pairOnce(t, path)
	assert.NotContains(t, d.stderr.String(), "level=DEBUG")

	reply = controlRequest(t, ctl, `{"command":"log-level","level":"debug"}`)
	assert.Equal(t, map[string]any{"ok": true, "result": map[string]any{"level": "debug"}}, reply)
	pairOnce(t, path)
	// The engine may write its lines just after the clients have their
	// pair.
	assert.Eventually(t, func() bool { return strings.Contains(d.stderr.String(), "level=DEBUG") },
		5*time.Second, 10*time.Millisecond, "per-client lines after the switch to debug")

	reply = controlRequest(t, ctl, `{"command":"status"}`)
	require.Equal(t, true, reply["ok"], "%v", reply)
	status := reply["result"].(map[string]any)
	assert.Equal(t, path, status["socket"])
	assert.Equal(t, ctl, status["control_socket"])
	assert.Equal(t, "debug", status["log_level"])
	assert.EqualValues(t, d.pid(), status["pid"])
	assert.Equal(t, testVersion, status["version"])

	require.Equal(t, 0, d.stop(syscall.SIGTERM))
}
