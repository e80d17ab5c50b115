package libspbroker_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/internal/control"
	"github.com/one-socket/one-socket/internal/testutil"
	spb "github.com/one-socket/one-socket/libspbroker"
)

// retryWait bounds a GetPair that is expected to ride out a restart: long
// enough for a daemon to be built, killed and started again on a loaded
// machine. Nothing measures it.
const retryWait = time.Minute

// The backoff sequence, without the randomness: doubling from 10ms, capped,
// and cut by up to half by the jitter.
func TestBackoff(t *testing.T) {
	const ms = time.Millisecond
	seq := func(limit time.Duration, jitter float64, n int) []time.Duration {
		var out []time.Duration
		for i := 1; i <= n; i++ {
			out = append(out, spb.Backoff(i, limit, jitter))
		}
		return out
	}
	require.Equal(t, []time.Duration{10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 640 * ms, time.Second, time.Second, time.Second},
		seq(time.Second, 1, 10))
	require.Equal(t, []time.Duration{5 * ms, 10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 500 * ms, 500 * ms},
		seq(time.Second, 0, 9))
	require.Equal(t, []time.Duration{7500 * time.Microsecond, 15 * ms, 30 * ms, 37500 * time.Microsecond, 37500 * time.Microsecond},
		seq(50*ms, 0.5, 5))
	// A cap below the first wait is the wait.
	require.Equal(t, []time.Duration{3 * ms, 3 * ms, 3 * ms}, seq(3*ms, 1, 3))
	// Far attempts neither overflow nor take long to compute.
	require.Equal(t, time.Second, spb.Backoff(1<<40, time.Second, 1))
	// Jitter out of range is clamped.
	require.Equal(t, 5*ms, spb.Backoff(1, time.Second, -3))
	require.Equal(t, 10*ms, spb.Backoff(1, time.Second, 7))
	for _, limit := range []time.Duration{ms, 10 * ms, 333 * ms, time.Second, time.Minute} {
		for n := 1; n < 100; n++ {
			for _, j := range []float64{0, 0.25, 0.5, 0.999, 1} {
				d := spb.Backoff(n, limit, j)
				require.LessOrEqual(t, d, limit, "attempt %d, cap %v, jitter %v", n, limit, j)
				require.GreaterOrEqual(t, d, spb.Backoff(n, limit, 0), "attempt %d, cap %v, jitter %v", n, limit, j)
			}
		}
	}
}

func TestConfigMaxBackoff(t *testing.T) {
	require.Equal(t, spb.DefaultMaxBackoff, spb.MaxBackoffOf(nil))
	require.Equal(t, spb.DefaultMaxBackoff, spb.MaxBackoffOf(&spb.Config{}))
	require.Equal(t, spb.DefaultMaxBackoff, spb.MaxBackoffOf(&spb.Config{MaxBackoff: -time.Second}))
	require.Equal(t, 5*time.Millisecond, spb.MaxBackoffOf(&spb.Config{MaxBackoff: 5 * time.Millisecond}))
}

// Which errors GetPair asks again after: those a restarting broker causes,
// from the calls that really return them.
func TestRetryable(t *testing.T) {
	dir := shortDir(t)
	_, missing := spb.Dial(filepath.Join(dir, "missing.sock"))
	_, refused := spb.Dial(unlistenedSocket(t, filepath.Join(dir, "bound.sock")))
	_, closed := spb.ReadSetPairFrom(func(p, oob []byte, st int) (int, int, int, error) { return 0, 0, 0, nil })
	_, badVersion := spb.ReadSetPairFrom(func(p, oob []byte, st int) (int, int, int, error) {
		return copy(p, setPairWire(func(m *spb.Message) { m.Flags = 2 })), 0, 0, nil
	})
	_, ctxErr := spb.DialContext(canceled(), filepath.Join(dir, "missing.sock"))
	op := func(op string, errno unix.Errno) error {
		return &net.OpError{Op: op, Net: "unix", Err: os.NewSyscallError("x", errno)}
	}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"ENOENT", missing, true},
		{"ECONNREFUSED", refused, true},
		{"closed without a reply", closed, true},
		{"io.EOF", io.EOF, true},
		{"ECONNRESET", op(spb.OpReceive, unix.ECONNRESET), true},
		{"EPIPE", op(spb.OpSend, unix.EPIPE), true},
		{"EAGAIN on dial", op(spb.OpDial, unix.EAGAIN), true},
		{"EAGAIN on receive", op(spb.OpReceive, unix.EAGAIN), false},
		{"EACCES", op(spb.OpDial, unix.EACCES), false},
		{"ETIMEDOUT", op(spb.OpReceive, unix.ETIMEDOUT), false},
		{"protocol", badVersion, false},
		{"invalid key", spb.CheckKey(nil), false},
		{"canceled", ctxErr, false},
		{"deadline", context.DeadlineExceeded, false},
	} {
		require.Error(t, tc.err, tc.name)
		require.Equal(t, tc.want, spb.Retryable(tc.err), "%s: %v", tc.name, tc.err)
	}
}

// A client that starts before the broker's socket exists (ENOENT) pairs
// once the broker appears; so does GetPairConn.
func TestGetPairRetriesMissingSocket(t *testing.T) {
	retries := watchRetries(t)
	path := filepath.Join(shortDir(t), "one.socket")
	ctx, cancel := context.WithTimeout(context.Background(), retryWait)
	defer cancel()
	server := getPairAsync(ctx, path, "late", spb.ModeServer)
	retries.waitFor(t, unix.ENOENT)

	b := startBrokerAt(t, path, &broker.Config{MaxConns: 64})
	c, err := spb.GetPairConn(ctx, path, []byte("late"), spb.ModeClient)
	require.NoError(t, err)
	defer c.Close()
	r := <-server
	require.NoError(t, r.err)
	defer r.f.Close()
	cf, err := c.File()
	require.NoError(t, err)
	defer cf.Close()
	requireFilesConnected(t, r.f, cf)
	// The engine counts a pair after sending both SET_PAIRs, so the count
	// may lag the clients by a moment.
	require.Eventually(t, func() bool { return b.Stats().Paired == 1 }, retryWait, time.Millisecond,
		"the broker counted %d pairs, not 1", b.Stats().Paired)
}

// A socket file that nobody listens on (ECONNREFUSED, as after a crash) is
// asked again until someone does.
func TestGetPairRetriesRefused(t *testing.T) {
	retries := watchRetries(t)
	path := filepath.Join(shortDir(t), "one.socket")
	fd := unlistenedSocketFD(t, path)
	done := make(chan pairResult, 1)
	go func() {
		f, err := (&spb.Config{MaxBackoff: 20 * time.Millisecond}).GetPair(context.Background(), path, []byte("k"), spb.ModeNone)
		done <- pairResult{f, err}
	}()
	retries.waitFor(t, unix.ECONNREFUSED)

	require.NoError(t, unix.Listen(fd, 4))
	b := &fakeBroker{t: t, path: path, lfd: fd}
	p := b.accept()
	got, err := p.readN(spb.MessageSize)
	require.NoError(t, err)
	require.Equal(t, getPairWire([]byte("k"), spb.ModeNone), got)
	answerSetPair(t, p, done)
}

// answerSetPair sends a SET_PAIR with one end of a fresh socketpair on p,
// and checks that the GetPair reporting to done returns the other end.
func answerSetPair(t *testing.T, p *fakePeer, done <-chan pairResult) {
	t.Helper()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(pair[1])
	require.NoError(t, p.send(setPairWire(nil), pair[:1]))
	unix.Close(pair[0])
	r := <-done
	require.NoError(t, r.err)
	defer r.f.Close()
	requireConnected(t, int(r.f.Fd()), pair[1])
}

// A connection that ends without a SET_PAIR, at once or after the request
// was read, is asked again on a new connection.
func TestGetPairRetriesClosedConnection(t *testing.T) {
	b := newFakeBroker(t)
	done := make(chan pairResult, 1)
	go func() {
		f, err := spb.GetPair(context.Background(), b.path, []byte("again"), spb.ModeClient)
		done <- pairResult{f, err}
	}()
	b.accept().close() // before the request: the client sees a reset or EOF
	p := b.accept()
	_, err := p.readN(spb.MessageSize)
	require.NoError(t, err)
	require.NoError(t, p.shutdown()) // after it: a plain end of file
	p = b.accept()
	got, err := p.readN(spb.MessageSize)
	require.NoError(t, err)
	require.Equal(t, getPairWire([]byte("again"), spb.ModeClient), got)
	answerSetPair(t, p, done)
}

// The daemon, a real process, is killed with SIGKILL while a client waits
// in it, and started again on the same path: the client asks the new one,
// and pairs.
func TestGetPairBrokerKilledAndRestarted(t *testing.T) {
	bin := buildDaemon(t)
	retries := watchRetries(t)
	dir := shortDir(t)
	sock := filepath.Join(dir, "one.socket")
	ctl := filepath.Join(dir, "one-socket.ctl")

	first := startDaemon(t, bin, sock, ctl)
	ctx, cancel := context.WithTimeout(context.Background(), retryWait)
	defer cancel()
	server := getPairAsync(ctx, sock, "survivor", spb.ModeServer)
	waitDaemonWaiting(t, first, ctl, 1)

	first.Kill() // SIGKILL: the socket file stays behind, with nobody listening
	retries.waitFor(t, unix.ECONNRESET, unix.ECONNREFUSED, io.ErrUnexpectedEOF)

	second := startDaemon(t, bin, sock, ctl)
	waitDaemonWaiting(t, second, ctl, 1) // the survivor asked again
	c, err := spb.GetPair(ctx, sock, []byte("survivor"), spb.ModeClient)
	require.NoError(t, err)
	defer c.Close()
	r := <-server
	require.NoError(t, r.err)
	defer r.f.Close()
	requireFilesConnected(t, r.f, c)
}

// When the context ends after failed attempts, the error says so and wraps
// both the context's error and the last failure.
func TestGetPairContextEndsAfterFailures(t *testing.T) {
	t.Run("deadline, nobody listening", func(t *testing.T) {
		path := unlistenedSocket(t, filepath.Join(shortDir(t), "one.socket"))
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		f, err := spb.GetPair(ctx, path, []byte("k"), spb.ModeNone)
		require.Nil(t, f)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, unix.ECONNREFUSED)
		var re *spb.RetryError
		require.ErrorAs(t, err, &re)
		require.GreaterOrEqual(t, re.Attempts, 1)
		require.True(t, re.Timeout())
		oe := requireOpError(t, re.Last, "dial")
		require.Equal(t, path, oe.Addr.String())
		require.Contains(t, err.Error(), "context deadline exceeded after")
		require.Contains(t, err.Error(), "connection refused")
		var ne net.Error
		require.ErrorAs(t, err, &ne)
		require.True(t, ne.Timeout())
	})

	t.Run("canceled, no socket", func(t *testing.T) {
		retries := watchRetries(t)
		path := filepath.Join(shortDir(t), "missing.sock")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := spb.GetPair(ctx, path, []byte("k"), spb.ModeNone)
			done <- err
		}()
		retries.waitFor(t, unix.ENOENT)
		cancel()
		err := <-done
		require.ErrorIs(t, err, context.Canceled)
		require.ErrorIs(t, err, unix.ENOENT)
		require.ErrorIs(t, err, os.ErrNotExist)
		var re *spb.RetryError
		require.ErrorAs(t, err, &re)
		require.False(t, re.Timeout())
	})

	// A broker that refuses the request (here its access policy) closes the
	// connection, which the client cannot tell from a restart: it asks
	// again until the deadline, and then says what the broker did.
	t.Run("refused by the policy", func(t *testing.T) {
		path := filepath.Join(shortDir(t), "one.socket")
		b := startBrokerAt(t, path, &broker.Config{MaxConns: 64, Authorizer: denyAll{}})
		retries := watchRetries(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, err := spb.GetPair(ctx, path, []byte("forbidden"), spb.ModeClient)
			done <- err
		}()
		retries.waitFor(t, unix.ECONNRESET)
		retries.waitFor(t, unix.ECONNRESET)
		cancel()
		err := <-done
		require.ErrorIs(t, err, context.Canceled)
		require.ErrorIs(t, err, unix.ECONNRESET)
		require.GreaterOrEqual(t, b.Stats().Denied, uint64(2))
	})

	t.Run("no failure: the plain context error", func(t *testing.T) {
		_, path := startBroker(t)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := spb.GetPair(ctx, path, []byte("lonely"), spb.ModeNone)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		var re *spb.RetryError
		require.False(t, errors.As(err, &re), "no attempt failed, yet: %v", err)
		requireOpError(t, err, "receive")
	})
}

// With NoRetry, GetPair and GetPairConn return the first failure as it is.
func TestGetPairNoRetry(t *testing.T) {
	retries := watchRetries(t)
	noRetry := &spb.Config{NoRetry: true}
	dir := shortDir(t)
	ctx := context.Background()

	missing := filepath.Join(dir, "missing.sock")
	_, err := noRetry.GetPair(ctx, missing, []byte("k"), spb.ModeNone)
	require.ErrorIs(t, err, unix.ENOENT)
	requireOpError(t, err, "dial")
	_, err = noRetry.GetPairConn(ctx, missing, []byte("k"), spb.ModeNone)
	require.ErrorIs(t, err, unix.ENOENT)

	refused := unlistenedSocket(t, filepath.Join(dir, "bound.sock"))
	_, err = noRetry.GetPair(ctx, refused, []byte("k"), spb.ModeNone)
	require.ErrorIs(t, err, unix.ECONNREFUSED)
	var re *spb.RetryError
	require.False(t, errors.As(err, &re))

	b := newFakeBroker(t)
	done := make(chan error, 1)
	go func() {
		_, err := noRetry.GetPair(ctx, b.path, []byte("k"), spb.ModeNone)
		done <- err
	}()
	p := b.accept()
	_, err = p.readN(spb.MessageSize)
	require.NoError(t, err)
	require.NoError(t, p.shutdown())
	err = <-done
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	requireOpError(t, err, "receive")
	require.Empty(t, retries.seen(), "NoRetry retried")
}

// Errors that are not a restart's are returned at once, even with retries
// on: a protocol violation, a reply that stops half-way, a bad key.
func TestGetPairDoesNotRetryOtherErrors(t *testing.T) {
	defer spb.SetRestTimeout(100 * time.Millisecond)()
	retries := watchRetries(t)
	for _, tc := range []struct {
		name  string
		wire  []byte
		close bool
		want  error
	}{
		{"wrong version", setPairWire(func(m *spb.Message) { m.Flags = 2 }), true, spb.ErrVersion},
		{"GET_PAIR for a reply", getPairWire([]byte("k"), spb.ModeNone), true, spb.ErrProtocol},
		{"stalled reply", setPairWire(nil)[:100], false, unix.ETIMEDOUT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newFakeBroker(t)
			done := make(chan error, 1)
			go func() {
				_, err := spb.GetPair(context.Background(), b.path, []byte("k"), spb.ModeNone)
				done <- err
			}()
			p := b.accept()
			_, err := p.readN(spb.MessageSize)
			require.NoError(t, err)
			require.NoError(t, p.send(tc.wire, nil))
			if tc.close {
				require.NoError(t, p.shutdown())
			}
			err = <-done
			require.ErrorIs(t, err, tc.want)
			requireOpError(t, err, "receive")
		})
	}
	b := newFakeBroker(t)
	_, err := spb.GetPair(context.Background(), b.path, nil, spb.ModeNone)
	require.ErrorIs(t, err, spb.ErrInvalidKey)
	require.Empty(t, retries.seen(), "an error was retried")
}

// retryWatch records the failures GetPair retries, for the tests to wait
// on instead of guessing how long a retry takes.
type retryWatch struct {
	mu   sync.Mutex
	errs []error
	more chan struct{} // closed and replaced at each failure
}

// watchRetries installs a retryWatch until the test ends.
func watchRetries(t *testing.T) *retryWatch {
	w := &retryWatch{more: make(chan struct{})}
	t.Cleanup(spb.SetRetryHook(func(err error) {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.errs = append(w.errs, err)
		close(w.more)
		w.more = make(chan struct{})
	}))
	return w
}

func (w *retryWatch) seen() []error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]error(nil), w.errs...)
}

// waitFor waits for a retried failure not seen by an earlier waitFor that
// matches one of targets; failures that match none are skipped.
func (w *retryWatch) waitFor(t *testing.T, targets ...error) {
	t.Helper()
	deadline := time.After(retryWait)
	for {
		w.mu.Lock()
		for len(w.errs) > 0 {
			err := w.errs[0]
			w.errs = w.errs[1:]
			for _, target := range targets {
				if errors.Is(err, target) {
					w.mu.Unlock()
					return
				}
			}
		}
		more := w.more
		w.mu.Unlock()
		select {
		case <-more:
		case <-deadline:
			t.Fatalf("no retried failure matching %v", targets)
		}
	}
}

// denyAll is an access policy that refuses every request.
type denyAll struct{}

func (denyAll) Authorize(broker.Peer, []byte, spb.Mode) error {
	return errors.New("denied by the test")
}

// shortDir returns a temporary directory whose socket paths fit in
// sun_path whatever the test's name.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "spbr")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// unlistenedSocketFD binds a socket at path without listening on it, so
// that a connect there fails with ECONNREFUSED; it returns the descriptor,
// closed at cleanup.
func unlistenedSocketFD(t *testing.T, path string) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	require.NoError(t, unix.Bind(fd, &unix.SockaddrUnix{Name: path}))
	return fd
}

// unlistenedSocket is unlistenedSocketFD for a test that needs only the path.
func unlistenedSocket(t *testing.T, path string) string {
	unlistenedSocketFD(t, path)
	return path
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

var (
	daemonOnce sync.Once
	daemonDir  string
	daemonErr  error
)

// buildDaemon builds cmd/one-socket once per run; TestMain's cleanup does
// not know of it, so it lives in a directory of its own, removed by
// removeDaemon.
func buildDaemon(t *testing.T) string {
	t.Helper()
	daemonOnce.Do(func() {
		daemonDir, daemonErr = os.MkdirTemp("", "spbroker-daemon")
		if daemonErr == nil {
			daemonErr = testutil.Build(filepath.Join(daemonDir, "one-socket"), nil, "../cmd/one-socket")
		}
	})
	require.NoError(t, daemonErr, "building the daemon")
	return filepath.Join(daemonDir, "one-socket")
}

// removeDaemon removes what buildDaemon built, if it ran.
func removeDaemon() {
	if daemonDir != "" {
		os.RemoveAll(daemonDir)
	}
}

// startDaemon runs the daemon on sock and ctl and waits until its control
// socket answers.
func startDaemon(t *testing.T, bin, sock, ctl string) *testutil.Proc {
	t.Helper()
	cmd := exec.Command(bin, "--socket", sock, "--ctl-socket", ctl)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	p := testutil.StartProc(t, "one-socket", cmd)
	p.WaitFor(t, "the control socket to answer", func() bool {
		_, err := daemonStatus(ctl)
		return err == nil
	})
	return p
}

// waitDaemonWaiting waits until n clients wait in the daemon.
func waitDaemonWaiting(t *testing.T, p *testutil.Proc, ctl string, n int) {
	t.Helper()
	p.WaitFor(t, "clients to wait", func() bool {
		st, err := daemonStatus(ctl)
		return err == nil && st.Waiting == n
	})
}

func daemonStatus(ctl string) (*control.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	raw, err := control.Call(ctx, ctl, control.Request{Command: "status"})
	if err != nil {
		return nil, err
	}
	var st control.Status
	return &st, json.Unmarshal(raw, &st)
}
