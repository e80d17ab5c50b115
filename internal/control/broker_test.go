package control_test

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/internal/control"
	"github.com/one-socket/one-socket/libspbroker"
)

// startBroker runs a real pairing engine on a fresh socket until the
// test's cleanup.
func startBroker(t *testing.T) (*broker.Broker, string) {
	t.Helper()
	leakCheck(t) // first, so that it runs after the broker's cleanup
	path := filepath.Join(t.TempDir(), "b.sock")
	b, err := broker.New(&broker.Config{MaxConns: 100})
	require.NoError(t, err)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- b.Serve(ln) }()
	t.Cleanup(func() {
		b.Shutdown()
		assert.ErrorIs(t, <-served, broker.ErrClosed)
	})
	// Serve starts the engine on its own goroutine.
	require.Eventually(t, func() bool { _, err := b.Waiting(); return err == nil }, ioTimeout, time.Millisecond)
	return b, path
}

// park connects to the broker and sends a GET_PAIR that nobody answers.
func park(t *testing.T, path string, key []byte, mode libspbroker.Mode) *libspbroker.Conn {
	t.Helper()
	c, err := libspbroker.Dial(path)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SendGetPair(key, mode))
	return c
}

func waitWaiting(t *testing.T, b *broker.Broker, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return b.Stats().Waiting == n }, ioTimeout, time.Millisecond,
		"waiting clients never became %d", n)
}

func TestBrokerHandler(t *testing.T) {
	b, bpath := startBroker(t)
	level := new(slog.LevelVar)
	stops := make(chan struct{}, 2)
	h := control.BrokerHandler(b, control.DaemonInfo{
		Version:       "v9.9.9",
		Socket:        bpath,
		ControlSocket: "/run/test.ctl",
		Start:         time.Now().Add(-time.Minute),
		Level:         level,
		Stop:          func() { stops <- struct{}{} },
	})
	s := startServer(t, h, options{})

	alpha := park(t, bpath, []byte("alpha"), libspbroker.ModeServer)
	waitWaiting(t, b, 1)
	park(t, bpath, []byte{0, 1, 0xfe}, libspbroker.ModeNone)
	waitWaiting(t, b, 2)

	var st control.Status
	mustCall(t, s.path, control.Request{Command: "status"}, &st)
	assert.Equal(t, "v9.9.9", st.Version)
	assert.Equal(t, os.Getpid(), st.PID)
	assert.InDelta(t, 60, st.UptimeSeconds, 30)
	assert.Equal(t, bpath, st.Socket)
	assert.Equal(t, "/run/test.ctl", st.ControlSocket)
	assert.Equal(t, "info", st.LogLevel)
	assert.Equal(t, 100, st.MaxConns)
	assert.Equal(t, 2, st.Conns)
	assert.Equal(t, 2, st.Waiting)
	assert.Equal(t, uint64(2), st.AcceptedTotal)
	assert.Zero(t, st.PairedTotal+st.RefusedTotal+st.TimedOutTotal+st.VanishedTotal)
	assert.Len(t, st.ProtocolErrors, 10)
	assert.Contains(t, st.ProtocolErrors, "key_len")

	var ws []control.Waiter
	mustCall(t, s.path, control.Request{Command: "list"}, &ws)
	require.Len(t, ws, 2)
	assert.Equal(t, []byte("alpha"), ws[0].Key, "longest waiting first")
	assert.Equal(t, "alpha", ws[0].KeyText)
	assert.Equal(t, "616c706861", ws[0].KeyHex)
	assert.Equal(t, "server", ws[0].Mode)
	assert.Equal(t, []byte{0, 1, 0xfe}, ws[1].Key)
	assert.Empty(t, ws[1].KeyText, "a key that is not printable has no text")
	assert.Equal(t, "0001fe", ws[1].KeyHex)
	assert.Equal(t, "none", ws[1].Mode)
	for _, w := range ws {
		assert.Equal(t, int32(os.Getpid()), w.PID)
		assert.Equal(t, uint32(os.Getuid()), w.UID)
		assert.Equal(t, uint32(os.Getgid()), w.GID)
		assert.Greater(t, w.WaitedSeconds, 0.0)
	}
	assert.GreaterOrEqual(t, ws[0].WaitedSeconds, ws[1].WaitedSeconds)

	var dr control.DropResult
	mustCall(t, s.path, control.Request{Command: "drop", Key: []byte("alpha")}, &dr)
	assert.Equal(t, 1, dr.Dropped)
	require.NoError(t, alpha.SetDeadline(time.Now().Add(ioTimeout)))
	_, err := alpha.ReceiveSetPair()
	assert.ErrorIs(t, err, unix.ECONNRESET, "the dropped client's connection ends without a pair")
	waitWaiting(t, b, 1)
	mustCall(t, s.path, control.Request{Command: "drop", Key: []byte("alpha")}, &dr)
	assert.Zero(t, dr.Dropped)

	var lr control.LevelResult
	mustCall(t, s.path, control.Request{Command: "log-level", Level: "DEBUG"}, &lr)
	assert.Equal(t, "debug", lr.Level)
	assert.Equal(t, slog.LevelDebug, level.Level())
	mustCall(t, s.path, control.Request{Command: "log-level", Level: "warning"}, &lr)
	assert.Equal(t, "warn", lr.Level)
	assert.Contains(t, serverError(t, s.path, control.Request{Command: "log-level", Level: "trace"}), "unknown log level")
	assert.Equal(t, slog.LevelWarn, level.Level(), "a bad level changes nothing")

	var sr control.StopResult
	mustCall(t, s.path, control.Request{Command: "stop"}, &sr)
	assert.True(t, sr.Stopping)
	select {
	case <-stops:
	case <-time.After(ioTimeout):
		t.Fatal("DaemonInfo.Stop was not called")
	}

	// Once the broker has stopped, list and drop say so; status still
	// answers.
	b.Shutdown()
	assert.Equal(t, broker.ErrClosed.Error(), serverError(t, s.path, control.Request{Command: "list"}))
	assert.Equal(t, broker.ErrClosed.Error(), serverError(t, s.path, control.Request{Command: "drop", Key: []byte("x")}))
	mustCall(t, s.path, control.Request{Command: "status"}, &st)
	assert.Zero(t, st.Waiting)
}

func TestBrokerHandlerWithoutLevel(t *testing.T) {
	b, _ := startBroker(t)
	h := control.BrokerHandler(b, control.DaemonInfo{Start: time.Now()})
	assert.Empty(t, h.Status().LogLevel)
	assert.EqualError(t, h.SetLogLevel("debug"), "the log level cannot be changed")
	h.Stop() // no Stop function: nothing happens
	ws, err := h.List()
	require.NoError(t, err)
	assert.Empty(t, ws)
	assert.NotNil(t, ws)
	n, err := h.Drop([]byte("k"))
	require.NoError(t, err)
	assert.Zero(t, n)
	summary, err := h.Reload()
	require.NoError(t, err)
	assert.Equal(t, "no policy configured", summary)
	assert.Equal(t, "none", h.Status().Policy)
}

func TestBrokerHandlerReload(t *testing.T) {
	b, _ := startBroker(t)
	fail := false
	h := control.BrokerHandler(b, control.DaemonInfo{
		Start:  time.Now(),
		Policy: func() string { return "policy p: 1 rule" },
		Reload: func() (string, error) {
			if fail {
				return "", errors.New("p:3: unknown mode")
			}
			return "policy p: 2 rules", nil
		},
	})
	assert.Equal(t, "policy p: 1 rule", h.Status().Policy)
	summary, err := h.Reload()
	require.NoError(t, err)
	assert.Equal(t, "policy p: 2 rules", summary)
	fail = true
	_, err = h.Reload()
	assert.EqualError(t, err, "p:3: unknown mode")
}

func TestKeyText(t *testing.T) {
	for key, want := range map[string]string{
		"vhost-user-1": "vhost-user-1",
		"with space":   "with space",
		"größe ✓":      "größe ✓",
		"tab\there":    "",
		"nul\x00":      "",
		"\xff\xfe":     "",
		"":             "",
		"line\n":       "",
		"\u200bhidden": "",
	} {
		assert.Equal(t, want, control.KeyText([]byte(key)), "key %q", key)
	}
}

func TestLevels(t *testing.T) {
	for name, want := range map[string]slog.Level{
		"debug": slog.LevelDebug, "INFO": slog.LevelInfo, "Warn": slog.LevelWarn,
		"warning": slog.LevelWarn, "error": slog.LevelError,
	} {
		l, err := control.ParseLevel(name)
		require.NoError(t, err, name)
		assert.Equal(t, want, l, name)
	}
	_, err := control.ParseLevel("verbose")
	assert.Error(t, err)
	assert.Equal(t, "warn", control.LevelName(slog.LevelWarn))
	assert.Equal(t, "info+2", control.LevelName(slog.LevelInfo+2))
}
