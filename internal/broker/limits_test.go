package broker_test

// Limits and lifecycle: many waiters, the connection limit, Shutdown, and
// the rules of New and Serve.

import (
	"errors"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/libspbroker"
)

// A thousand waiting clients stay waiting while others come and pair:
// nobody is evicted to make room, and each of them pairs in the end.
func TestManyWaitersNoEviction(t *testing.T) {
	const n = 1000
	e := startBroker(t, nil)
	bl := snapshot(t, e)
	keys := make([]string, n)
	waiters := make([]*client, n)
	for i := range waiters {
		keys[i] = newKey()
		waiters[i] = e.request(t, keys[i], libspbroker.ModeServer)
	}
	e.waitWaiting(t, n)

	for range 100 {
		assertPairs(t, e.path)
	}
	// Counters are read one by one: a pair is counted just before its two
	// connections are closed, so wait for both.
	s := e.waitStats(t, "100 pairs", func(s broker.Stats) bool { return s.Paired == 100 && s.Conns == n })
	assert.Equal(t, n, s.Waiting)
	assert.Zero(t, s.Vanished)

	// Not one waiter has heard from the broker: no data, no hang-up.
	pfds := make([]unix.PollFd, n)
	for i, w := range waiters {
		pfds[i] = unix.PollFd{Fd: int32(w.fd), Events: unix.POLLIN}
	}
	ready, err := unix.Poll(pfds, 0)
	require.NoError(t, err)
	require.Zero(t, ready, "waiting clients were disconnected or sent something")

	for i, w := range waiters {
		pairBoth(t, w, e.request(t, keys[i], libspbroker.ModeClient))
	}
	e.waitStats(t, "all paired", func(s broker.Stats) bool { return s.Paired == 100+n })
	bl.verify(t)
}

// At MaxConns the broker refuses new connections, closing them at once
// without reading them, and accepts again as soon as there is room.
// Clients still handshaking count against the limit as waiters do.
func TestConnectionLimit(t *testing.T) {
	const limit = 50
	// One user here: the per-user share (TestFairShare) is off.
	e := startBroker(t, &broker.Config{MaxConns: limit, MaxConnsPerUID: -1})
	require.Equal(t, limit, e.MaxConns())
	bl := snapshot(t, e)

	keys := make([]string, limit)
	waiters := make([]*client, limit)
	for i := range waiters {
		keys[i] = newKey()
		waiters[i] = e.request(t, keys[i], libspbroker.ModeServer)
	}
	e.waitWaiting(t, limit)

	// Refused, even with a request a waiter would pair with.
	for i := range 3 {
		c := dial(t, e.path)
		c.sendUnlessClosed(getPair(keys[i], libspbroker.ModeClient))
		c.expectClosed()
		c.close()
	}
	s := e.waitStats(t, "3 refused", func(s broker.Stats) bool { return s.Refused == 3 })
	assert.Equal(t, uint64(limit+3), s.Accepted, "refused connections are accepted, then closed")
	assert.Equal(t, limit, s.Conns)
	assert.Equal(t, limit, s.Waiting)
	assert.Zero(t, s.Paired)
	for _, w := range waiters {
		require.True(t, w.quiet(0), "a waiter was disturbed by a refused connection")
	}

	// Room again once some waiters leave.
	for _, w := range waiters[:5] {
		w.close()
	}
	e.waitStats(t, "5 waiters gone", func(s broker.Stats) bool { return s.Conns == limit-5 })
	assertPairs(t, e.path)

	// Handshaking clients take room too.
	silent := make([]*client, 5)
	for i := range silent {
		silent[i] = dial(t, e.path)
	}
	e.waitStats(t, "back at the limit", func(s broker.Stats) bool { return s.Conns == limit })
	c := dial(t, e.path)
	c.expectClosed()
	c.close()
	e.waitStats(t, "refused again", func(s broker.Stats) bool { return s.Refused == 4 })
	for _, c := range silent {
		c.close()
	}
	// Until the engine has seen them go, the broker is still full, and a
	// newcomer would be refused instead of pairing with its waiter.
	e.waitStats(t, "the silent gone", func(s broker.Stats) bool { return s.Conns == limit-5 })
	for i, w := range waiters[5:] {
		pairBoth(t, w, e.request(t, keys[5+i], libspbroker.ModeClient))
	}
	bl.verify(t)
	assertPairs(t, e.path)
	bl.verify(t)
}

// Shutdown closes every client, whatever its state: waiting, half-sent,
// silent, or still in the listen backlog. All of them see the connection
// close; Serve returns ErrClosed and every descriptor the engine held is
// closed (checked by startBroker's cleanup).
func TestShutdown(t *testing.T) {
	warmUp(t)
	fdsBefore := countFDs(t)
	e := startBroker(t, nil)
	var all []*client
	for range 5 {
		all = append(all, e.request(t, newKey(), libspbroker.ModeNone))
	}
	for range 3 {
		c := dial(t, e.path)
		c.send(getPair(newKey(), libspbroker.ModeNone)[:500])
		all = append(all, c)
	}
	for range 2 {
		all = append(all, dial(t, e.path))
	}
	e.waitStats(t, "all accepted", func(s broker.Stats) bool { return s.Conns == 10 && s.Waiting == 5 })

	// Three more reach the listen backlog while the loop is stalled.
	release := e.stall(t)
	for range 3 {
		all = append(all, e.request(t, newKey(), libspbroker.ModeNone))
	}
	done := make(chan struct{})
	go func() {
		e.Shutdown()
		close(done)
	}()
	release()
	select {
	case <-done:
	case <-time.After(ioTimeout):
		require.FailNow(t, "Shutdown did not return")
	}

	for i, c := range all {
		require.NoError(t, c.readUntilClosed(), "client %d", i)
		c.close()
	}
	s := e.Stats()
	assert.Zero(t, s.Conns)
	assert.Zero(t, s.Waiting)
	assert.Zero(t, s.Paired)
	assert.Equal(t, fdsBefore, countFDs(t), "descriptors left open after Shutdown")

	// Nobody listens any more.
	fd, err := tryDial(e.path)
	if err == nil {
		unix.Close(fd)
	}
	require.ErrorIs(t, err, unix.ECONNREFUSED)

	// Shutdown again is harmless, from several goroutines at once.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(e.Shutdown)
	}
	wg.Wait()
}

// Serve after Shutdown returns ErrClosed at once and closes the listener;
// Serve on a serving broker fails, closes the second listener, and leaves
// the first one serving.
func TestServeRules(t *testing.T) {
	listen := func(t *testing.T) *net.UnixListener {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "x.sock"), Net: "unix"})
		require.NoError(t, err)
		return ln
	}
	t.Run("after_Shutdown", func(t *testing.T) {
		warmUp(t)
		before := countFDs(t)
		b, err := broker.New(nil)
		require.NoError(t, err)
		b.Shutdown()
		require.ErrorIs(t, b.Serve(listen(t)), broker.ErrClosed)
		assert.Equal(t, before, countFDs(t), "the listener must be closed")
		b.Shutdown()
	})
	t.Run("twice", func(t *testing.T) {
		e := startBroker(t, nil)
		before := countFDs(t)
		err := e.Serve(listen(t))
		require.Error(t, err)
		assert.False(t, errors.Is(err, broker.ErrClosed), "the broker is not closed: %v", err)
		assert.Equal(t, before, countFDs(t), "the second listener must be closed")
		assertPairs(t, e.path)
	})
}

// New's configuration rules.
func TestNew(t *testing.T) {
	_, err := broker.New(&broker.Config{MaxConns: -1})
	require.Error(t, err)

	b, err := broker.New(nil)
	require.NoError(t, err)
	var rl unix.Rlimit
	require.NoError(t, unix.Getrlimit(unix.RLIMIT_NOFILE, &rl))
	assert.Positive(t, b.MaxConns())
	assert.Less(t, uint64(b.MaxConns()), rl.Cur, "the default limit leaves room for the engine's own descriptors")
	n, err := broker.DefaultMaxConns()
	require.NoError(t, err)
	assert.InDelta(t, n, b.MaxConns(), 8)

	b, err = broker.New(&broker.Config{MaxConns: 7})
	require.NoError(t, err)
	assert.Equal(t, 7, b.MaxConns())
}

// When accept fails for lack of descriptors, the engine uses its spare
// descriptor to accept and close the connection (counted as refused),
// recovers the spare, and accepts again once there is room. The test
// lowers this process's RLIMIT_NOFILE so that the table fills up.
func TestOutOfDescriptors(t *testing.T) {
	e := startBroker(t, &broker.Config{MaxConns: 1 << 20}) // the limit is not what refuses
	bl := snapshot(t, e)
	filler, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	fillerFD := own(t, filler)

	var saved unix.Rlimit
	require.NoError(t, unix.Getrlimit(unix.RLIMIT_NOFILE, &saved))
	restore := sync.OnceFunc(func() { require.NoError(t, unix.Setrlimit(unix.RLIMIT_NOFILE, &saved)) })
	t.Cleanup(restore)
	low := saved
	low.Cur = uint64(countFDs(t) + 20)
	require.NoError(t, unix.Setrlimit(unix.RLIMIT_NOFILE, &low))

	// Park waiters (two descriptors each: ours and the engine's) until one
	// connection finds the engine without room. No descriptor may be opened
	// in this process meanwhile, other than by dial.
	var waiters []*client
	var keys []string
	var refused *client
	for refused == nil {
		require.Less(t, len(waiters), 40, "the engine never ran out of descriptors")
		key := newKey()
		fd, err := tryDial(e.path)
		if errors.Is(err, unix.EMFILE) && fillerFD.fd >= 0 {
			// Our own table is full, with the engine's last accept: free one
			// slot so that our next socket takes it and the engine has none.
			fillerFD.close()
			continue
		}
		require.NoError(t, err)
		c := &client{t: t, fd: fd}
		t.Cleanup(c.close)
		c.sendUnlessClosed(getPair(key, libspbroker.ModeServer))
		before := len(waiters)
		s := e.waitStats(t, "parked or refused", func(s broker.Stats) bool {
			return s.Waiting == before+1 || s.Refused == 1
		})
		if s.Refused == 1 {
			refused = c
			break
		}
		waiters = append(waiters, c)
		keys = append(keys, key)
	}
	refused.expectClosed()
	refused.close()
	fillerFD.close()
	restore()
	t.Logf("the engine ran out of descriptors with %d clients waiting", len(waiters))

	s := e.Stats()
	assert.Equal(t, uint64(len(waiters)+1), s.Accepted)
	assert.Equal(t, len(waiters), s.Waiting)
	// There is room again: the engine accepts and pairs.
	for i, w := range waiters {
		require.True(t, w.quiet(0))
		pairBoth(t, w, e.request(t, keys[i], libspbroker.ModeClient))
	}
	assertPairs(t, e.path)
	// The spare descriptor is open again: back to the baseline exactly.
	bl.verify(t)
}

// Without its spare descriptor (lost when the table filled up again
// before it could be reopened) the engine cannot refuse the client that
// finds it out of descriptors: it pauses the listener instead of spinning
// on accept, takes the spare back once there is room, and then accepts the
// client that waited in the backlog.
func TestOutOfDescriptorsWithoutSpare(t *testing.T) {
	e := startBroker(t, &broker.Config{MaxConns: 1 << 20})
	bl := snapshot(t, e)
	require.True(t, e.DropSpare())

	var saved unix.Rlimit
	require.NoError(t, unix.Getrlimit(unix.RLIMIT_NOFILE, &saved))
	restore := sync.OnceFunc(func() { require.NoError(t, unix.Setrlimit(unix.RLIMIT_NOFILE, &saved)) })
	t.Cleanup(restore)
	low := saved
	low.Cur = uint64(countFDs(t) + 8)
	require.NoError(t, unix.Setrlimit(unix.RLIMIT_NOFILE, &low))
	// Fill the table but for one slot, which the client's socket takes:
	// the engine's accept then has none.
	var fillers []int
	closeFillers := sync.OnceFunc(func() {
		for _, fd := range fillers {
			unix.Close(fd)
		}
	})
	t.Cleanup(closeFillers)
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.EMFILE) {
			break
		}
		require.NoError(t, err)
		fillers = append(fillers, fd)
	}
	require.NotEmpty(t, fillers)
	unix.Close(fillers[len(fillers)-1])
	fillers = fillers[:len(fillers)-1]
	fd, err := tryDial(e.path)
	require.NoError(t, err)
	c := &client{t: t, fd: fd}
	t.Cleanup(c.close)

	// A loop spinning on the listener would burn the whole second; a
	// paused one wakes ten times.
	var r0, r1 unix.Rusage
	require.NoError(t, unix.Getrusage(unix.RUSAGE_SELF, &r0))
	time.Sleep(time.Second)
	require.NoError(t, unix.Getrusage(unix.RUSAGE_SELF, &r1))
	cpu := time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
	t.Logf("CPU used in the second out of descriptors: %v", cpu)
	assert.Less(t, cpu, 500*time.Millisecond, "the engine spun on a listener it could not accept from")
	assert.Zero(t, e.Stats().Accepted, "a connection was accepted without a descriptor")

	closeFillers()
	restore()
	// The client waited in the backlog: it is accepted and pairs.
	c.sendUnlessClosed(getPair("no-spare", libspbroker.ModeServer))
	e.waitWaiting(t, 1)
	pairBoth(t, c, e.request(t, "no-spare", libspbroker.ModeClient))
	c.close()
	// The spare is open again: back to the baseline exactly.
	bl.verify(t)
}
