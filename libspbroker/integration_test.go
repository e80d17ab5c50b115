package libspbroker_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/broker"
	spb "github.com/one-socket/one-socket/libspbroker"
)

// TestMain runs a broker for the examples, which find it the way programs
// find the daemon: in ONE_SOCKET_PATH.
func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "spbroker")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		defer removeDaemon()
		path := filepath.Join(dir, "one.socket")
		b, done, err := serveBroker(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer func() { b.Shutdown(); <-done }()
		os.Setenv("ONE_SOCKET_PATH", path)
		return m.Run()
	}())
}

// serveBroker runs the real pairing engine on a new socket at path.
func serveBroker(path string) (*broker.Broker, <-chan error, error) {
	return serveBrokerWith(path, &broker.Config{MaxConns: 1024})
}

// serveBrokerWith is serveBroker with the engine's configuration cfg.
func serveBrokerWith(path string, cfg *broker.Config) (*broker.Broker, <-chan error, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, nil, err
	}
	b, err := broker.New(cfg)
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	done := make(chan error, 1)
	go func() { done <- b.Serve(ln) }()
	// Serve sets up its loop, and the loop's descriptors (a spare one
	// among them), on its own goroutine: wait until it answers, or a test
	// that counts descriptors may count while they are being opened.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := b.Waiting(); err == nil {
			return b, done, nil
		}
		select {
		case err := <-done:
			return nil, nil, err
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Shutdown()
			return nil, nil, errors.New("the broker did not start serving")
		}
	}
}

// startBroker runs the real pairing engine for one test and returns it and
// its socket path.
func startBroker(t testing.TB) (*broker.Broker, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "one.socket")
	return startBrokerAt(t, path, &broker.Config{MaxConns: 1024}), path
}

// startBrokerAt runs the real pairing engine, configured by cfg, on a new
// socket at path until the test ends.
func startBrokerAt(t testing.TB, path string, cfg *broker.Config) *broker.Broker {
	t.Helper()
	b, done, err := serveBrokerWith(path, cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		b.Shutdown()
		require.ErrorIs(t, <-done, broker.ErrClosed)
	})
	return b
}

type pairResult struct {
	f   *os.File
	err error
}

// getPairAsync runs GetPair on its own goroutine.
func getPairAsync(ctx context.Context, path, key string, mode spb.Mode) <-chan pairResult {
	c := make(chan pairResult, 1)
	go func() {
		f, err := spb.GetPair(ctx, path, []byte(key), mode)
		c <- pairResult{f, err}
	}()
	return c
}

// waitFor polls cond for up to testTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "timed out waiting for %s", what)
		time.Sleep(2 * time.Millisecond)
	}
}

func TestIntegrationGetPair(t *testing.T) {
	b, path := startBroker(t)
	for _, modes := range [][2]spb.Mode{
		{spb.ModeClient, spb.ModeServer},
		{spb.ModeServer, spb.ModeClient},
		{spb.ModeNone, spb.ModeNone},
	} {
		t.Run(fmt.Sprintf("%v+%v", modes[0], modes[1]), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			first := getPairAsync(ctx, path, "key", modes[0])
			// The first waits in the broker before the second comes.
			waitFor(t, "the first client to wait", func() bool { return b.Stats().Waiting == 1 })
			second := getPairAsync(ctx, path, "key", modes[1])
			r1, r2 := <-first, <-second
			require.NoError(t, r1.err)
			require.NoError(t, r2.err)
			defer r1.f.Close()
			defer r2.f.Close()
			requireCloexec(t, int(r1.f.Fd()))
			requireFilesConnected(t, r1.f, r2.f)
		})
	}
	require.Zero(t, b.Stats().Waiting)
}

func TestIntegrationNoPair(t *testing.T) {
	b, path := startBroker(t)
	for _, tc := range []struct {
		key   [2]string
		modes [2]spb.Mode
	}{
		{[2]string{"k", "k"}, [2]spb.Mode{spb.ModeNone, spb.ModeClient}},
		{[2]string{"k", "k"}, [2]spb.Mode{spb.ModeServer, spb.ModeNone}},
		{[2]string{"k", "k"}, [2]spb.Mode{spb.ModeClient, spb.ModeClient}},
		{[2]string{"k", "k"}, [2]spb.Mode{spb.ModeServer, spb.ModeServer}},
		{[2]string{"k", "K"}, [2]spb.Mode{spb.ModeClient, spb.ModeServer}},
		{[2]string{"k", "k\x00"}, [2]spb.Mode{spb.ModeNone, spb.ModeNone}},
	} {
		t.Run(fmt.Sprintf("%q:%v+%q:%v", tc.key[0], tc.modes[0], tc.key[1], tc.modes[1]), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
			defer cancel()
			r1 := getPairAsync(ctx, path, tc.key[0], tc.modes[0])
			r2 := getPairAsync(ctx, path, tc.key[1], tc.modes[1])
			for _, r := range []pairResult{<-r1, <-r2} {
				require.Nil(t, r.f)
				require.ErrorIs(t, r.err, context.DeadlineExceeded)
			}
			// Closing the connections made the broker forget both.
			waitFor(t, "the broker to forget", func() bool { return b.Stats().Conns == 0 })
		})
	}
}

// A canceled GetPair leaves nothing behind: a later pair for the same key
// and mode gets a live peer, not the canceled one.
func TestIntegrationCanceledForgotten(t *testing.T) {
	b, path := startBroker(t)
	ctx, cancel := context.WithCancel(context.Background())
	gone := getPairAsync(ctx, path, "key", spb.ModeServer)
	waitFor(t, "the server to wait", func() bool { return b.Stats().Waiting == 1 })
	cancel()
	r := <-gone
	require.ErrorIs(t, r.err, context.Canceled)
	waitFor(t, "the broker to forget", func() bool { return b.Stats().Waiting == 0 })

	ctx, cancel = context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c := getPairAsync(ctx, path, "key", spb.ModeClient)
	waitFor(t, "the client to wait", func() bool { return b.Stats().Waiting == 1 })
	s := getPairAsync(ctx, path, "key", spb.ModeServer)
	rc, rs := <-c, <-s
	require.NoError(t, rc.err)
	require.NoError(t, rs.err)
	defer rc.f.Close()
	defer rs.f.Close()
	requireFilesConnected(t, rc.f, rs.f)
}

// The raw functions as an event-loop host uses them: nonblocking connect,
// send, EAGAIN while waiting, receive once readable.
func TestIntegrationRawEventLoop(t *testing.T) {
	b, path := startBroker(t)
	var conns, peers [2]int
	for i, mode := range []spb.Mode{spb.ModeServer, spb.ModeClient} {
		fd, err := spb.Connect(path, true)
		require.NoError(t, err)
		defer unix.Close(fd)
		conns[i] = fd
		require.NoError(t, spb.SendGetPair(fd, []byte("vhost0"), mode))
		if i == 0 {
			waitFor(t, "the server to wait", func() bool { return b.Stats().Waiting == 1 })
			_, err := spb.ReceiveSetPair(fd)
			require.ErrorIs(t, err, unix.EAGAIN)
		}
	}
	for i, fd := range conns {
		require.True(t, waitReadable(fd, testTimeout))
		peer, err := spb.ReceiveSetPair(fd)
		require.NoError(t, err)
		defer unix.Close(peer)
		requireCloexec(t, peer)
		peers[i] = peer
	}
	requireConnected(t, peers[0], peers[1])
}

func BenchmarkGetPair(b *testing.B) {
	_, path := startBroker(b)
	ctx := context.Background()
	key := []byte("benchmark")
	b.ReportAllocs()
	for b.Loop() {
		r := getPairAsync(ctx, path, string(key), spb.ModeServer)
		f, err := spb.GetPair(ctx, path, key, spb.ModeClient)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
		s := <-r
		if s.err != nil {
			b.Fatal(s.err)
		}
		s.f.Close()
	}
}

// GetPairConn gives the pair as a *net.UnixConn, connected to the peer's.
func TestGetPairConn(t *testing.T) {
	_, path := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	server := getPairAsync(ctx, path, "conn", spb.ModeServer)
	c, err := spb.GetPairConn(ctx, path, []byte("conn"), spb.ModeClient)
	require.NoError(t, err)
	defer c.Close()
	r := <-server
	require.NoError(t, r.err)
	defer r.f.Close()
	_, err = c.Write([]byte("ping"))
	require.NoError(t, err)
	buf := make([]byte, 4)
	_, err = r.f.Read(buf)
	require.NoError(t, err)
	require.Equal(t, "ping", string(buf))

	// Its errors are GetPair's.
	_, err = spb.GetPairConn(ctx, path, nil, spb.ModeClient)
	require.ErrorIs(t, err, spb.ErrInvalidKey)
}

// DefaultSocketPath decides as the daemon does.
func TestDefaultSocketPath(t *testing.T) {
	t.Setenv("ONE_SOCKET_PATH", "/tmp/explicit.socket")
	p, err := spb.DefaultSocketPath()
	require.NoError(t, err)
	require.Equal(t, "/tmp/explicit.socket", p)

	t.Setenv("ONE_SOCKET_PATH", "")
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/4242")
	p, err = spb.DefaultSocketPath()
	if os.Geteuid() == 0 {
		require.NoError(t, err)
		require.Equal(t, "/run/one.socket", p)
	} else {
		require.NoError(t, err)
		require.Equal(t, "/run/user/4242/one.socket", p)
		t.Setenv("XDG_RUNTIME_DIR", "")
		_, err = spb.DefaultSocketPath()
		require.Error(t, err)
	}
}
