package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/control"
	"github.com/one-socket/one-socket/libspbroker"
)

func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"help", "pair"}, {"status", "--help"}} {
		r := run(t, testEnv(), "", args...)
		assert.Equal(t, 0, r.code, "%v", args)
		assert.Empty(t, r.stderr)
		for _, c := range commands {
			assert.Contains(t, r.stdout, "\n  "+c.name, "%v lists %s", args, c.name)
		}
		assert.NotContains(t, r.stdout, shimCommand, "the shim is not for users")
	}
	r := run(t, testEnv(), "", "--version")
	assert.Equal(t, result{stdout: "one-socketctl " + testVersion + "\n"}, r)
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"reboot"}, `unknown command "reboot"`},
		{[]string{"--bogus", "status"}, "unknown flag --bogus"},
		{[]string{"status", "---json"}, "unknown flag ---json"},
		{[]string{"status", "now"}, `status: unexpected argument "now"`},
		{[]string{"status", "--ctl-socket"}, "flag --ctl-socket needs a value"},
		{[]string{"status", "--mode", "client"}, "status does not take --mode"},
		{[]string{"list", "--hex"}, "list does not take --hex"},
		{[]string{"stop", "--no-retry"}, "stop does not take --no-retry"},
		{[]string{"pair", "k", "--no-retry=maybe"}, `invalid value "maybe" for --no-retry`},
		{[]string{"drop"}, "drop needs KEY"},
		{[]string{"drop", "a", "b"}, `drop: unexpected argument "b"`},
		{[]string{"drop", "--hex", "zz"}, `drop: KEY "zz" is not hexadecimal`},
		{[]string{"drop", strings.Repeat("k", 1025)}, "drop: KEY must be 1 to 1024 bytes, not 1025"},
		{[]string{"drop", "--hex", "0x"}, "drop: KEY must be 1 to 1024 bytes, not 0"},
		{[]string{"log-level", "loud"}, `unknown log level "loud"`},
		{[]string{"log-level", "debug", "info"}, `log-level: unexpected argument "info"`},
		{[]string{"status", "--timeout", "0"}, `invalid value "0" for --timeout`},
		{[]string{"status", "--timeout=soon"}, `invalid value "soon" for --timeout`},
		{[]string{"pair"}, "pair needs KEY"},
		{[]string{"pair", "k", "--json"}, "pair does not take --json"},
		{[]string{"pair", "k", "--ctl-socket", "x"}, "pair does not take --ctl-socket"},
		{[]string{"pair", "k", "--mode", "peer"}, `invalid value "peer" for --mode: want none, client or server`},
		{[]string{"pair", "k", "--"}, "pair: no command after --"},
		{[]string{"pair", "k", "l"}, `pair: unexpected argument "l"`},
		{[]string{"help", "--json"}, "help does not take --json"},
		{[]string{"help", "a", "b"}, `help: unexpected argument "b"`},
	} {
		r := inProcess(0, nil, tc.args...)
		assert.Equal(t, exitUsage, r.code, "%q", tc.args)
		assert.Contains(t, r.stderr, tc.want, "%q", tc.args)
		assert.Contains(t, r.stderr, "Run 'one-socketctl --help' for usage.", "%q", tc.args)
		assert.Empty(t, r.stdout, "%q", tc.args)
	}
	// The same from a real process.
	r := run(t, testEnv(), "", "drop")
	assert.Equal(t, exitUsage, r.code)
	assert.Equal(t, "one-socketctl: drop needs KEY\nRun 'one-socketctl --help' for usage.\n", r.stderr)
}

func TestParseFlagsAnywhere(t *testing.T) {
	o, err := parse([]string{"--json", "drop", "--hex", "6b", "--ctl-socket=/c", "--timeout", "2s"})
	require.NoError(t, err)
	assert.Equal(t, "drop", o.command)
	assert.Equal(t, []string{"6b"}, o.args)
	assert.True(t, o.json)
	assert.True(t, o.hex)
	assert.Equal(t, "/c", o.ctlSocket)
	assert.Equal(t, 2*time.Second, o.timeout)

	// "--" ends the flags: a key may then start with a dash.
	o, err = parse([]string{"drop", "--", "-k"})
	require.NoError(t, err)
	assert.Equal(t, []string{"-k"}, o.args)

	// For pair, what follows "--" is the command, flags and all.
	o, err = parse([]string{"pair", "k", "--mode", "server", "--", "sh", "-c", "--mode"})
	require.NoError(t, err)
	assert.Equal(t, []string{"k"}, o.args)
	assert.Equal(t, libspbroker.ModeServer, o.mode)
	assert.Equal(t, []string{"sh", "-c", "--mode"}, o.exec)
	assert.False(t, o.noRetry, "pair asks again unless told not to")

	o, err = parse([]string{"pair", "--no-retry", "k"})
	require.NoError(t, err)
	assert.True(t, o.noRetry)
}

func TestStatus(t *testing.T) {
	be := startBackend(t)
	be.park(t, []byte("k"), libspbroker.ModeServer)
	be.waitWaiting(t, 1)

	r := be.ctl(t, "status")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Empty(t, r.stderr)
	assert.Regexp(t, regexp.MustCompile(`^one-socket v-backend, pid \d+, up \d+s\n`), r.stdout)
	for _, line := range []string{
		"broker socket:    " + be.socket,
		"control socket:   " + be.ctlPath,
		"log level:        info",
		"connections:      1 open, 1 waiting, limit 64, 32 per user",
		"shed:             0",
		"accepted:         1",
		"paired:           0",
		"protocol errors:  0",
	} {
		assert.Contains(t, r.stdout, line+"\n")
	}

	r = be.ctl(t, "status", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, 1, strings.Count(r.stdout, "\n"), "one JSON object on one line")
	var st control.Status
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st))
	assert.Equal(t, os.Getpid(), st.PID)
	assert.Equal(t, be.socket, st.Socket)
	assert.Equal(t, 1, st.Waiting)
	assert.Equal(t, uint64(1), st.AcceptedTotal)
	assert.Contains(t, st.ProtocolErrors, "size")
}

func TestStatusProtocolErrors(t *testing.T) {
	var buf strings.Builder
	writeStatus(&buf, &control.Status{Version: "v1", PID: 1, UptimeSeconds: 3725.4,
		ProtocolErrors: map[string]uint64{"size": 2, "truncated": 1, "mode": 0}})
	assert.Contains(t, buf.String(), "one-socket v1, pid 1, up 1h2m5s\n")
	assert.Contains(t, buf.String(), "protocol errors:  3 (size 2, truncated 1)\n")
}

func TestList(t *testing.T) {
	be := startBackend(t)
	r := be.ctl(t, "list")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "no clients waiting\n", r.stdout)
	r = be.ctl(t, "list", "--json")
	assert.Equal(t, "[]\n", r.stdout)

	be.park(t, []byte("vhost user 1"), libspbroker.ModeServer)
	be.waitWaiting(t, 1)
	be.park(t, []byte{0, 1, 0xfe}, libspbroker.ModeClient)
	be.waitWaiting(t, 2)

	r = be.ctl(t, "list")
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	require.Len(t, lines, 3, r.stdout)
	assert.Regexp(t, `^KEY +MODE +AGE +PID +UID +GID$`, lines[0])
	ids := fmt.Sprintf("%d +%d +%d", os.Getpid(), os.Getuid(), os.Getgid())
	assert.Regexp(t, `^vhost user 1 +server +\d+\.\ds +`+ids+`$`, lines[1])
	assert.Regexp(t, `^0x0001fe +client +\d+\.\ds +`+ids+`$`, lines[2])

	r = be.ctl(t, "list", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var ws []control.Waiter
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &ws))
	require.Len(t, ws, 2)
	assert.Equal(t, "vhost user 1", ws[0].KeyText)
	assert.Equal(t, []byte{0, 1, 0xfe}, ws[1].Key)
	assert.Equal(t, "client", ws[1].Mode)
}

func TestAge(t *testing.T) {
	assert.Equal(t, "0.0s", age(0.01))
	assert.Equal(t, "59.9s", age(59.94))
	assert.Equal(t, "1m30s", age(90.2))
	assert.Equal(t, "2h0m0s", age(7200))
}

func TestDrop(t *testing.T) {
	be := startBackend(t)
	be.park(t, []byte("victim"), libspbroker.ModeServer)
	be.park(t, []byte("victim"), libspbroker.ModeNone)
	be.park(t, []byte{0xde, 0xad}, libspbroker.ModeNone)
	be.park(t, []byte("bystander"), libspbroker.ModeNone)
	be.waitWaiting(t, 4)

	r := be.ctl(t, "drop", "victim")
	assert.Equal(t, result{stdout: "dropped 2 waiting clients\n"}, r)
	r = be.ctl(t, "drop", "--hex", "0xDEAD")
	assert.Equal(t, result{stdout: "dropped 1 waiting client\n"}, r)
	r = be.ctl(t, "--json", "drop", "victim")
	assert.Equal(t, result{stdout: "{\"dropped\":0}\n"}, r)
	be.waitWaiting(t, 1)
}

func TestLogLevel(t *testing.T) {
	be := startBackend(t)
	assert.Equal(t, result{stdout: "info\n"}, be.ctl(t, "log-level"))
	assert.Equal(t, result{stdout: "debug\n"}, be.ctl(t, "log-level", "debug"))
	assert.Equal(t, slog.LevelDebug, be.level.Level())
	assert.Equal(t, result{stdout: "{\"level\":\"error\"}\n"}, be.ctl(t, "log-level", "ERROR", "--json"))
	assert.Equal(t, slog.LevelError, be.level.Level())
}

func TestStop(t *testing.T) {
	be := startBackend(t)
	assert.Equal(t, result{stdout: "one-socket is stopping\n"}, be.ctl(t, "stop"))
	select {
	case <-be.stops:
	case <-time.After(waitFor):
		t.Fatal("the daemon's Stop was not called")
	}
	assert.Equal(t, result{stdout: "{\"stopping\":true}\n"}, be.ctl(t, "stop", "--json"))
}

func TestVersionCommand(t *testing.T) {
	be := startBackend(t)
	assert.Equal(t, result{stdout: "one-socketctl " + testVersion + "\none-socket v-backend\n"}, be.ctl(t, "version"))
	assert.Equal(t, result{stdout: `{"one_socket":"v-backend","one_socketctl":"` + testVersion + "\"}\n"}, be.ctl(t, "version", "--json"))

	// Without a daemon it still says its own version, then fails.
	r := run(t, testEnv(), "", "--ctl-socket", filepath.Join(shortTempDir(t), "none.ctl"), "version")
	assert.Equal(t, exitFailure, r.code)
	assert.Equal(t, "one-socketctl "+testVersion+"\n", r.stdout)
	assert.Contains(t, r.stderr, "no control socket at")
}

func TestFindsTheControlSocket(t *testing.T) {
	be := startBackend(t)
	// Beside the broker socket named by --socket or ONE_SOCKET_PATH.
	for _, r := range []result{
		run(t, testEnv(), "", "--socket", be.socket, "log-level"),
		run(t, testEnv("ONE_SOCKET_PATH="+be.socket), "", "log-level"),
		run(t, testEnv("ONE_SOCKET_CTL_PATH="+be.ctlPath, "ONE_SOCKET_PATH=/nonexistent/one.socket"), "", "log-level"),
		run(t, testEnv("ONE_SOCKET_CTL_PATH=/nonexistent/x.ctl"), "", "--ctl-socket", be.ctlPath, "log-level"),
	} {
		assert.Equal(t, result{stdout: "info\n"}, r)
	}

	// The defaults, for root and for another user, in-process since the
	// tests may run as either.
	r := inProcess(0, nil, "status")
	assert.Equal(t, exitFailure, r.code)
	assert.Contains(t, r.stderr, "/run/one-socket.ctl")
	r = inProcess(1000, map[string]string{"XDG_RUNTIME_DIR": "/nonexistent/run/user/1000"}, "status")
	assert.Equal(t, "one-socketctl: no control socket at /nonexistent/run/user/1000/one-socket.ctl: is one-socket running?\n", r.stderr)
	r = inProcess(1000, nil, "status")
	assert.Equal(t, exitFailure, r.code)
	assert.Contains(t, r.stderr, "no control socket path: no socket path: XDG_RUNTIME_DIR is not set")
	r = inProcess(1000, nil, "--socket", "@one", "status")
	assert.Equal(t, exitFailure, r.code)
	assert.Contains(t, r.stderr, "no default control socket beside the abstract broker socket @one")
}

func TestControlFailures(t *testing.T) {
	dir := shortTempDir(t)

	missing := filepath.Join(dir, "missing.ctl")
	r := run(t, testEnv(), "", "--ctl-socket", missing, "status")
	assert.Equal(t, result{stderr: "one-socketctl: no control socket at " + missing + ": is one-socket running?\n", code: 1}, r)

	stale := filepath.Join(dir, "stale.ctl")
	staleSocket(t, stale)
	r = run(t, testEnv(), "", "--ctl-socket", stale, "list")
	assert.Equal(t, result{stderr: "one-socketctl: nobody answers on " + stale + "\n", code: 1}, r)

	mute := filepath.Join(dir, "mute.ctl")
	listenMute(t, mute)
	start := time.Now()
	r = run(t, testEnv(), "", "--ctl-socket", mute, "--timeout", "200ms", "stop")
	assert.Equal(t, result{stderr: "one-socketctl: no answer from " + mute + " within 200ms\n", code: 1}, r)
	assert.Less(t, time.Since(start), waitFor/2)

	// A refusal carries the server's message.
	be := startBackend(t)
	be.Shutdown()
	r = be.ctl(t, "list")
	assert.Equal(t, result{stderr: "one-socketctl: list: broker: closed\n", code: 1}, r)
}
