package control_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/control"
)

func TestCommands(t *testing.T) {
	h := newFake()
	h.waiters = []control.Waiter{{Key: []byte("k"), KeyText: "k", KeyHex: "6b", Mode: "server", PID: 7}}
	s := startServer(t, h, options{})

	var st control.Status
	mustCall(t, s.path, control.Request{Command: "status"}, &st)
	assert.Equal(t, control.Status{Version: "v-test", PID: 42, LogLevel: "info", Waiting: 1,
		ProtocolErrors: map[string]uint64{"size": 3}}, st)

	var ws []control.Waiter
	mustCall(t, s.path, control.Request{Command: "list"}, &ws)
	assert.Equal(t, h.waiters, ws)

	binary := []byte{0, 0xff, '\n', 'x'}
	var dr control.DropResult
	mustCall(t, s.path, control.Request{Command: "drop", Key: binary}, &dr)
	assert.Equal(t, 2, dr.Dropped)
	assert.Equal(t, [][]byte{binary}, h.dropped, "the key reaches the handler byte for byte")

	var lr control.LevelResult
	mustCall(t, s.path, control.Request{Command: "log-level"}, &lr)
	assert.Equal(t, "info", lr.Level)
	mustCall(t, s.path, control.Request{Command: "log-level", Level: "debug"}, &lr)
	assert.Equal(t, "debug", lr.Level)
	assert.Contains(t, serverError(t, s.path, control.Request{Command: "log-level", Level: "loud"}), `unknown log level "loud"`)

	var sr control.StopResult
	mustCall(t, s.path, control.Request{Command: "stop"}, &sr)
	assert.True(t, sr.Stopping)
	require.Eventually(t, func() bool { return h.stopCount() == 1 }, ioTimeout, time.Millisecond)
}

func TestEmptyListIsAnArray(t *testing.T) {
	s := startServer(t, newFake(), options{})
	res, err := call(t, s.path, control.Request{Command: "list"})
	require.NoError(t, err)
	assert.JSONEq(t, `[]`, string(res))
}

func TestWireFormat(t *testing.T) {
	h := newFake()
	s := startServer(t, h, options{})

	c := dialRaw(t, s.path)
	c.send(`{"command":"drop","key":"aGk="}` + "\n")
	ok, res, _ := c.reply()
	require.True(t, ok)
	assert.JSONEq(t, `{"dropped":2}`, string(res))
	assert.Equal(t, [][]byte{[]byte("hi")}, h.dropped, "the key is base64 on the wire")

	// The end of the stream ends a request as well as a newline does.
	c = dialRaw(t, s.path)
	c.send(`  {"command":"status"}  `)
	require.NoError(t, c.c.CloseWrite())
	ok, res, _ = c.reply()
	require.True(t, ok)
	var st map[string]any
	require.NoError(t, json.Unmarshal(res, &st))
	for _, k := range []string{"version", "pid", "uptime_seconds", "socket", "control_socket", "log_level", "max_conns",
		"conns", "waiting", "accepted_total", "paired_total", "refused_total", "timed_out_total", "vanished_total", "protocol_errors"} {
		assert.Contains(t, st, k)
	}
}

func TestMalformedRequests(t *testing.T) {
	h := newFake()
	s := startServer(t, h, options{})
	for _, tc := range []struct {
		name, send, want string
	}{
		{"not JSON", "hello\n", "malformed request"},
		{"empty line", "\n", "malformed request"},
		{"an array", "[1,2]\n", "malformed request"},
		{"null", "null\n", "no command"},
		{"no command", "{}\n", "no command"},
		{"unknown command", `{"command":"reboot"}` + "\n", `unknown command "reboot"`},
		{"unknown field", `{"command":"status","force":true}` + "\n", `unknown field "force"`},
		{"two objects", `{"command":"status"}{"command":"stop"}` + "\n", "data after the JSON object"},
		{"unfinished", `{"command":"sta` + "\n", "malformed request"},
		{"wrong type", `{"command":7}` + "\n", "malformed request"},
		{"drop without key", `{"command":"drop"}` + "\n", "key must be 1 to 1024 bytes"},
		{"drop with a long key", fmt.Sprintf(`{"command":"drop","key":"%s"}`+"\n", strings.Repeat("QUFB", 342)), "key must be 1 to 1024 bytes"},
		{"bad base64", `{"command":"drop","key":"!!"}` + "\n", "malformed request"},
		{"key where none belongs", `{"command":"status","key":"YQ=="}` + "\n", `"status" takes no key`},
		{"level where none belongs", `{"command":"list","level":"debug"}` + "\n", `"list" takes no level`},
		{"nothing at all", "", "empty request"},
		// The decoder keeps the last of two: a check of the first must
		// not let the second through.
		{"command twice", `{"command":"status","command":"stop"}` + "\n", `field "command" given twice`},
		{"key twice", `{"command":"drop","key":"YQ==","key":"Yg=="}` + "\n", `field "key" given twice`},
		{"command twice, in two cases", `{"command":"status","Command":"stop"}` + "\n", `unknown field "Command"`},
		{"command twice, escaped", `{"command":"status","comman\u0064":"stop"}` + "\n", `field "command" given twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, s.path)
			c.send(tc.send)
			require.NoError(t, c.c.CloseWrite())
			ok, _, msg := c.reply()
			assert.False(t, ok)
			assert.Contains(t, msg, tc.want)
		})
	}
	assert.Empty(t, h.dropped, "no refused request reached the handler")
	assert.Zero(t, h.stopCount())
	var st control.Status
	mustCall(t, s.path, control.Request{Command: "status"}, &st)
	assert.Equal(t, 42, st.PID, "the server still serves")
}

func TestRequestSizeLimit(t *testing.T) {
	s := startServer(t, newFake(), options{})

	// Exactly MaxRequestSize bytes before the newline is accepted.
	req := `{"command":"status"}`
	c := dialRaw(t, s.path)
	c.send(req + strings.Repeat(" ", control.MaxRequestSize-len(req)) + "\n")
	ok, _, msg := c.reply()
	assert.True(t, ok, msg)

	// One more is refused, however it is cut.
	for _, tail := range []string{"\n", "", strings.Repeat(" ", 1<<20)} {
		c := dialRaw(t, s.path)
		big := req + strings.Repeat(" ", control.MaxRequestSize+1-len(req)) + tail
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			// The server stops reading at the limit: the rest of a
			// large request may fail to go out.
			c.c.Write([]byte(big))
			c.c.CloseWrite()
		}()
		ok, _, msg = c.reply()
		<-wrote
		assert.False(t, ok)
		assert.Equal(t, fmt.Sprintf("request larger than %d bytes", control.MaxRequestSize), msg)
	}

	// Call refuses to send one.
	_, err := call(t, s.path, control.Request{Command: "drop", Key: make([]byte, control.MaxRequestSize)})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "request larger than")
}

func TestSlowClient(t *testing.T) {
	const timeout = 150 * time.Millisecond
	s := startServer(t, newFake(), options{timeout: timeout})

	for _, part := range []string{"", `{"command":"sta`} {
		c := dialRaw(t, s.path)
		start := time.Now()
		c.send(part)
		ok, _, msg := c.reply()
		assert.False(t, ok)
		assert.Equal(t, "no complete request within 150ms", msg)
		assert.GreaterOrEqual(t, time.Since(start), timeout-10*time.Millisecond)
	}

	// A client that sends its request in pieces within the time is served.
	c := dialRaw(t, s.path)
	for _, piece := range []string{`{"comm`, `and":"st`, `atus"}`, "\n"} {
		c.send(piece)
		time.Sleep(10 * time.Millisecond)
	}
	ok, _, msg := c.reply()
	assert.True(t, ok, msg)
}

func TestConcurrencyCap(t *testing.T) {
	const max = 3
	s := startServer(t, newFake(), options{maxClients: max})

	// max clients connect and say nothing yet: they hold every slot.
	var held []*rawConn
	for range max {
		held = append(held, dialRaw(t, s.path))
	}
	// The server accepts in order, so the next client comes after them.
	msg := serverError(t, s.path, control.Request{Command: "status"})
	assert.Equal(t, fmt.Sprintf("busy: %d control requests in progress; try again", max), msg)

	// The held clients are still served, all at once.
	var wg sync.WaitGroup
	for _, c := range held {
		wg.Go(func() {
			c.send(`{"command":"status"}` + "\n")
			ok, _, msg := c.reply()
			assert.True(t, ok, msg)
		})
	}
	wg.Wait()

	// Their slots are free again.
	require.Eventually(t, func() bool {
		_, err := call(t, s.path, control.Request{Command: "status"})
		return err == nil
	}, ioTimeout, time.Millisecond)
}

func TestCloseWaitsForRequestInProgress(t *testing.T) {
	h := newFake()
	h.listGate = make(chan struct{})
	h.listEntered = make(chan struct{}, 1)
	h.waiters = []control.Waiter{{Key: []byte("late"), Mode: "none"}}
	s := startServer(t, h, options{})

	type result struct {
		res json.RawMessage
		err error
	}
	listed := make(chan result, 1)
	go func() {
		res, err := call(t, s.path, control.Request{Command: "list"})
		listed <- result{res, err}
	}()
	select {
	case <-h.listEntered:
	case <-time.After(ioTimeout):
		t.Fatal("List was never called")
	}
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(h.listGate) }) }) // a failed test must not hang in Close
	idle := dialRaw(t, s.path)                                     // connected; its request never comes
	require.Eventually(t, func() bool { return s.Reading() == 1 }, ioTimeout, time.Millisecond,
		"the server must have accepted the idle client before Close")

	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()

	// A client still sending its request is told at once.
	ok, _, msg := idle.reply()
	assert.False(t, ok)
	assert.Equal(t, "the control server is shutting down", msg)

	// Nobody new gets in; Close waits for the request in progress.
	require.Eventually(t, func() bool {
		c, err := net.Dial("unix", s.path)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, ioTimeout, time.Millisecond)
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) with a request in progress", err)
	case <-time.After(50 * time.Millisecond):
	}

	release.Do(func() { close(h.listGate) })
	r := <-listed
	require.NoError(t, r.err)
	assert.JSONEq(t, `[{"key":"bGF0ZQ==","key_hex":"","mode":"none","waited_seconds":0,"pid":0,"uid":0,"gid":0}]`, string(r.res))
	select {
	case err := <-closed:
		assert.NoError(t, err)
	case <-time.After(ioTimeout):
		t.Fatal("Close did not return after the request was answered")
	}
	select {
	case err := <-s.served:
		assert.NoError(t, err)
		s.served <- err // for the cleanup
	case <-time.After(ioTimeout):
		t.Fatal("Serve did not return after Close")
	}
}

func TestServeAndCloseOrder(t *testing.T) {
	leakCheck(t)
	newListener := func() *net.UnixListener {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: t.TempDir() + "/c.ctl", Net: "unix"})
		require.NoError(t, err)
		return ln
	}

	// Close before Serve: Serve closes its listener and returns nil.
	s := control.NewServer(newFake(), nil)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "a second Close")
	assert.NoError(t, s.Serve(newListener()))

	// Serve twice.
	s = control.NewServer(newFake(), nil)
	first := newListener()
	served := make(chan error, 1)
	go func() { served <- s.Serve(first) }()
	_, err := call(t, first.Addr().String(), control.Request{Command: "status"})
	require.NoError(t, err, "the first Serve serves")
	assert.EqualError(t, s.Serve(newListener()), "control: Serve called twice")
	require.NoError(t, s.Close())
	assert.NoError(t, <-served)
}

func TestHandlerPanicIsContained(t *testing.T) {
	h := newFake()
	h.listPanics = true
	s := startServer(t, h, options{})
	assert.Equal(t, "internal error", serverError(t, s.path, control.Request{Command: "list"}))
	var st control.Status
	mustCall(t, s.path, control.Request{Command: "status"}, &st)
	assert.Equal(t, 42, st.PID)
}

func TestHandlerErrorIsReplied(t *testing.T) {
	h := newFake()
	h.listErr = errors.New("broker: closed")
	s := startServer(t, h, options{})
	assert.Equal(t, "broker: closed", serverError(t, s.path, control.Request{Command: "list"}))
}

func TestCallErrors(t *testing.T) {
	leakCheck(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()

	// No socket at all.
	_, err := control.Call(ctx, dir+"/missing.ctl", control.Request{Command: "status"})
	assert.ErrorIs(t, err, syscall.ENOENT)
	var oe *net.OpError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, "dial", oe.Op)

	// A socket nobody listens on.
	stale := dir + "/stale.ctl"
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	require.NoError(t, err)
	ln.SetUnlinkOnClose(false)
	require.NoError(t, ln.Close())
	_, err = control.Call(ctx, stale, control.Request{Command: "status"})
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)

	// A listener that never answers; and one that hangs up.
	mute := dir + "/mute.ctl"
	ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: mute, Net: "unix"})
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan *net.UnixConn, 4)
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	_, err = control.Call(short, mute, control.Request{Command: "status"})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	(<-accepted).Close()

	canceled, cancelNow := context.WithCancel(ctx)
	go func() {
		c := <-accepted
		cancelNow()
		defer c.Close()
	}()
	_, err = control.Call(canceled, mute, control.Request{Command: "status"})
	assert.ErrorIs(t, err, context.Canceled)

	go func() {
		c := <-accepted
		io.ReadAll(c)
		c.Close()
	}()
	_, err = control.Call(ctx, mute, control.Request{Command: "status"})
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)

	go func() {
		c := <-accepted
		c.Write([]byte("{\"ok\":tru\n"))
		c.Close()
	}()
	_, err = control.Call(ctx, mute, control.Request{Command: "status"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "malformed reply")

	require.NoError(t, ln.Close())
	for range accepted {
	}
}

func TestReload(t *testing.T) {
	h := newFake()
	s := startServer(t, h, options{})
	var rr control.ReloadResult
	mustCall(t, s.path, control.Request{Command: control.CmdReload}, &rr)
	assert.Equal(t, "policy test: 1 rule (1 allow, 0 deny), default deny", rr.Policy)

	h.mu.Lock()
	h.reloadErr = errors.New("policy.conf:2: unknown mode \"srv\"")
	h.mu.Unlock()
	assert.Equal(t, `policy.conf:2: unknown mode "srv"`, serverError(t, s.path, control.Request{Command: control.CmdReload}))
	h.mu.Lock()
	defer h.mu.Unlock()
	assert.Equal(t, 2, h.reloads)
}

func TestMetrics(t *testing.T) {
	s := startServer(t, newFake(), options{})
	var mr control.MetricsResult
	mustCall(t, s.path, control.Request{Command: control.CmdMetrics}, &mr)
	assert.Equal(t, "# TYPE one_socket_paired_total counter\none_socket_paired_total 3\n", mr.Text)
	assert.Contains(t, serverError(t, s.path, control.Request{Command: control.CmdMetrics, Level: "debug"}), "level")
}
