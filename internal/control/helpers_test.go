package control_test

// Test harness: a control server on a real socket in the test's temporary
// directory, a scriptable Handler, raw clients, and a leak check that every
// server start arms.

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/control"
)

// ioTimeout bounds every wait, so that a broken server fails a test rather
// than hanging it.
const ioTimeout = 5 * time.Second

// fakeHandler answers from fields a test sets, and records what it is
// asked to do.
type fakeHandler struct {
	mu      sync.Mutex
	level   string
	waiters []control.Waiter
	listErr error
	dropped [][]byte
	stops   int
	reloads int
	// reloadErr, if set, is what Reload fails with.
	reloadErr error

	listGate    chan struct{} // if set, List waits until it is closed
	listEntered chan struct{} // if set, List sends on it when called
	listPanics  bool
}

func newFake() *fakeHandler { return &fakeHandler{level: "info"} }

func (h *fakeHandler) Status() control.Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	return control.Status{Version: "v-test", PID: 42, LogLevel: h.level, Waiting: len(h.waiters),
		ProtocolErrors: map[string]uint64{"size": 3}}
}

func (h *fakeHandler) List() ([]control.Waiter, error) {
	if h.listEntered != nil {
		h.listEntered <- struct{}{}
	}
	if h.listGate != nil {
		<-h.listGate
	}
	if h.listPanics {
		panic("list exploded")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.waiters, h.listErr
}

func (h *fakeHandler) Drop(key []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropped = append(h.dropped, append([]byte(nil), key...))
	return 2, nil
}

func (h *fakeHandler) SetLogLevel(level string) error {
	if _, err := control.ParseLevel(level); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.level = level
	return nil
}

func (h *fakeHandler) Stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stops++
}

func (h *fakeHandler) Upgrade() error {
	return errors.New("fake handler cannot upgrade")
}

func (h *fakeHandler) Metrics() (string, error) {
	return "# TYPE one_socket_paired_total counter\none_socket_paired_total 3\n", nil
}

func (h *fakeHandler) Reload() (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reloads++
	if h.reloadErr != nil {
		return "", h.reloadErr
	}
	return "policy test: 1 rule (1 allow, 0 deny), default deny", nil
}

func (h *fakeHandler) stopCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stops
}

// server is a control.Server serving on path.
type server struct {
	*control.Server
	path   string
	served chan error
}

// options tune startServer.
type options struct {
	timeout    time.Duration // 0: control.RequestTimeout
	maxClients int           // 0: control.MaxClients
}

// startServer serves h on a fresh socket. On cleanup it closes the server,
// checks that Serve returned nil and that no descriptor or goroutine
// outlives it.
func startServer(t *testing.T, h control.Handler, opt options) *server {
	t.Helper()
	leakCheck(t)
	path := filepath.Join(t.TempDir(), "c.ctl")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	s := &server{Server: control.NewServer(h, nil), path: path, served: make(chan error, 1)}
	if opt.timeout != 0 || opt.maxClients != 0 {
		s.SetLimits(cmp.Or(opt.timeout, control.RequestTimeout), cmp.Or(opt.maxClients, control.MaxClients))
	}
	go func() { s.served <- s.Serve(ln) }()
	t.Cleanup(func() {
		assert.NoError(t, s.Close())
		select {
		case err := <-s.served:
			assert.NoError(t, err, "Serve's result after Close")
		case <-time.After(ioTimeout):
			t.Error("Serve did not return after Close")
		}
	})
	return s
}

var (
	warmOnce sync.Once
	checked  sync.Map // *testing.T: leakCheck armed
)

// leakCheck records the descriptors and goroutines open now and, on
// cleanup (after the cleanups registered later), checks that they are back
// to that. Only a test's first call counts. The first call warms the runtime's poller up so that its
// long-lived descriptors are in every baseline.
func leakCheck(t *testing.T) {
	t.Helper()
	if _, dup := checked.LoadOrStore(t, true); dup {
		return // the first call's baseline stands
	}
	warmOnce.Do(func() {
		ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "warm.sock"))
		require.NoError(t, err)
		ln.Close()
	})
	fds, gs := countFDs(t), runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(ioTimeout)
		for runtime.NumGoroutine() > gs && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		assert.LessOrEqual(t, runtime.NumGoroutine(), gs, "goroutines after the server closed vs. before it started")
		assert.Equal(t, fds, countFDs(t), "descriptors after the server closed vs. before it started")
	})
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

// call sends req with control.Call and a test-sized timeout.
func call(t *testing.T, path string, req control.Request) (json.RawMessage, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	return control.Call(ctx, path, req)
}

// mustCall sends req and decodes its result into out.
func mustCall(t *testing.T, path string, req control.Request, out any) {
	t.Helper()
	res, err := call(t, path, req)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(res, out), "result %s", res)
}

// serverError sends req and returns the server's refusal message.
func serverError(t *testing.T, path string, req control.Request) string {
	t.Helper()
	res, err := call(t, path, req)
	var se *control.ServerError
	require.True(t, errors.As(err, &se), "want a refusal, got result %s, error %v", res, err)
	return se.Message
}

// rawConn is a client that writes bytes as it likes.
type rawConn struct {
	t *testing.T
	c *net.UnixConn
}

func dialRaw(t *testing.T, path string) *rawConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(ioTimeout)))
	return &rawConn{t: t, c: c}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	_, err := r.c.Write([]byte(s))
	require.NoError(r.t, err)
}

// reply reads the server's reply line and checks that the server then
// closes the connection.
func (r *rawConn) reply() (ok bool, result json.RawMessage, msg string) {
	r.t.Helper()
	br := bufio.NewReader(r.c)
	line, err := br.ReadBytes('\n')
	require.NoError(r.t, err, "reading the reply (got %q)", line)
	var rep struct {
		OK     bool            `json:"ok"`
		Result json.RawMessage `json:"result"`
		Error  string          `json:"error"`
	}
	require.NoError(r.t, json.Unmarshal(line, &rep), "reply %q", line)
	_, err = br.ReadByte()
	require.Error(r.t, err, "the server must close after its reply")
	require.False(r.t, errors.Is(err, os.ErrDeadlineExceeded), "the server did not close after its reply")
	if rep.OK {
		assert.Empty(r.t, rep.Error)
	} else {
		assert.NotEmpty(r.t, rep.Error)
		assert.Empty(r.t, rep.Result)
	}
	return rep.OK, rep.Result, rep.Error
}
