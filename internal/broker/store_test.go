package broker_test

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

// fakeStore is a broker.ConnStore that keeps a real duplicate of each
// connection, as systemd's store does: a client then sees end of file only
// once the engine has released the copy too.
type fakeStore struct {
	t    testing.TB
	mu   sync.Mutex
	next uint64
	kept map[uint64]int // id to the store's copy
	// unread counts copies that still held unread bytes when released:
	// the engine must consume a request before it lets the copy go.
	unread int
	fail   bool // Keep fails
	busy   bool // every call says the store is busy
	calls  int  // calls made while not busy
}

func newFakeStore(t testing.TB) *fakeStore {
	s := &fakeStore{t: t, next: 100, kept: map[uint64]int{}}
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, fd := range s.kept {
			unix.Close(fd)
		}
	})
	return s
}

func (s *fakeStore) Keep(fd int) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy {
		return 0, broker.ErrStoreBusy
	}
	s.calls++
	if s.fail {
		return 0, errors.New("store full")
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	s.next++
	s.kept[s.next] = dup
	return s.next, nil
}

func (s *fakeStore) Release(id uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy {
		return broker.ErrStoreBusy
	}
	s.calls++
	fd, ok := s.kept[id]
	if !ok {
		s.t.Errorf("release of id %d, which is not stored", id)
		return errors.New("not stored")
	}
	var b [1]byte
	if n, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT); err == nil && n > 0 {
		s.unread++
	}
	delete(s.kept, id)
	return unix.Close(fd)
}

// put stores a copy of fd as if an earlier process had, and returns its id.
func (s *fakeStore) put(fd int) uint64 {
	id, err := s.Keep(fd)
	require.NoError(s.t, err)
	return id
}

func (s *fakeStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.kept)
}

// waitCount waits until the store holds n copies.
func (s *fakeStore) waitCount(t testing.TB, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return s.count() == n }, ioTimeout, time.Millisecond, "want %d stored", n)
}

// TestStoreKeepsWaiters checks that each waiter is kept as it starts to
// wait, and released when paired, dropped, gone, expired or shut down,
// each time after its request was consumed; and that a paired client
// reads end of file after SET_PAIR, which needs the copy released.
func TestStoreKeepsWaiters(t *testing.T) {
	st := newFakeStore(t)
	e := startBroker(t, &broker.Config{Store: st, MaxWait: 400 * time.Millisecond})

	w := e.park(t, "paired", libspbroker.ModeServer)
	st.waitCount(t, 1)
	e.waitStats(t, "one kept", func(s broker.Stats) bool { return s.Kept == 1 })
	newcomer := e.request(t, "paired", libspbroker.ModeClient)
	pairBoth(t, w, newcomer) // each reads end of file after SET_PAIR
	st.waitCount(t, 0)

	dropped := e.park(t, "dropped", libspbroker.ModeServer)
	gone := e.park(t, "gone", libspbroker.ModeServer)
	st.waitCount(t, 2)
	n, err := e.Drop([]byte("dropped"))
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	dropped.expectClosed()
	gone.close()
	e.waitStats(t, "the hang-up", func(s broker.Stats) bool { return s.Vanished == 1 })
	st.waitCount(t, 0)

	expired := e.park(t, "expired", libspbroker.ModeServer)
	st.waitCount(t, 1)
	expired.expectClosed()
	st.waitCount(t, 0)

	e.park(t, "left", libspbroker.ModeServer)
	st.waitCount(t, 1)
	assert.Equal(t, 1, e.Stats().Kept)
	e.Shutdown()
	assert.Zero(t, e.Stats().Kept)
	st.waitCount(t, 0)
	assert.Zero(t, st.unread, "copies released with their request unread")
	assert.Zero(t, e.Stats().StoreFailed)
}

// TestStoreSkips checks what is not kept: a client that pairs at once, one
// whose request came in pieces (consumed, so no next process could read it
// again), and all of them when the store fails, which costs only the
// crash protection.
func TestStoreSkips(t *testing.T) {
	st := newFakeStore(t)
	e := startBroker(t, &broker.Config{Store: st})

	w := e.park(t, "at-once", libspbroker.ModeServer)
	st.waitCount(t, 1)
	pairBoth(t, w, e.request(t, "at-once", libspbroker.ModeClient))
	st.waitCount(t, 0)

	pieces := dial(t, e.path)
	_, err := pieces.sendBytewise(getPair("pieces", libspbroker.ModeServer))
	require.NoError(t, err)
	e.waitWaiting(t, 1)
	assert.Zero(t, st.count(), "a request consumed in pieces is not kept")
	pairBoth(t, pieces, e.request(t, "pieces", libspbroker.ModeClient))

	st.mu.Lock()
	st.fail = true
	st.mu.Unlock()
	unkept := e.park(t, "unkept", libspbroker.ModeServer)
	e.waitStats(t, "the failed keep", func(s broker.Stats) bool { return s.StoreFailed == 1 })
	pairBoth(t, unkept, e.request(t, "unkept", libspbroker.ModeClient))
	assert.Zero(t, st.count())
}

// storedConn is a connection as a process started after a crash gets it
// back: the broker's end, also in the store, and the client's end.
type storedConn struct {
	broker, client int
	id             uint64
}

func newStoredConn(t *testing.T, st *fakeStore, sent []byte, fds ...int) storedConn {
	t.Helper()
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(p[1]) })
	if len(sent) > 0 || len(fds) > 0 {
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		require.NoError(t, unix.Sendmsg(p[1], sent, oob, nil, 0))
	}
	return storedConn{broker: p[0], client: p[1], id: st.put(p[0])}
}

// TestStoreReread serves connections taken back after a crash: a whole
// request waits or pairs as it would have; a connection without one (it
// was being paired when the crash came), with half of one, or with a bad
// or over-long one is closed; each copy is released, and none is kept
// again under a new id.
func TestStoreReread(t *testing.T) {
	st := newFakeStore(t)
	whole := getPair("reread", libspbroker.ModeServer)
	pr, pw := pipe(t)
	defer pw.close()
	conns := map[string]storedConn{
		"waits":        newStoredConn(t, st, whole),
		"mate-a":       newStoredConn(t, st, getPair("mates", libspbroker.ModeServer)),
		"mate-b":       newStoredConn(t, st, getPair("mates", libspbroker.ModeClient)),
		"being paired": newStoredConn(t, st, nil),
		"half":         newStoredConn(t, st, whole[:100]),
		"bad version":  newStoredConn(t, st, rawMsg(99, 0, msgSize, 1, 4, "oops")),
		"trailing":     newStoredConn(t, st, append(append([]byte{}, whole...), 1, 2, 3)),
		"descriptors":  newStoredConn(t, st, whole, pr.fd),
	}
	var handed []broker.HandedConn
	for _, c := range conns {
		handed = append(handed, broker.HandedConn{FD: c.broker, Stored: c.id, Reread: true})
	}
	e := serveState(t, &broker.Config{Store: st}, handed)

	e.waitWaiting(t, 1)
	st.waitCount(t, 1) // only "waits" is left in the store
	for name, c := range conns {
		if name == "waits" || name == "mate-a" || name == "mate-b" {
			continue
		}
		cl := &client{t: t, fd: c.client}
		require.NoError(t, setTimeouts(c.client, ioTimeout))
		assert.NoError(t, cl.readUntilClosed(), name)
	}
	for _, name := range []string{"mate-a", "mate-b"} {
		cl := &client{t: t, fd: conns[name].client}
		require.NoError(t, setTimeouts(cl.fd, ioTimeout))
		cl.recvSetPair().close()
	}
	s := e.Stats()
	assert.Equal(t, uint64(6), s.Restored, "requests of full length read again: all but the empty and the half one")
	assert.Equal(t, uint64(1), s.Paired)

	w := &client{t: t, fd: conns["waits"].client}
	require.NoError(t, setTimeouts(w.fd, ioTimeout))
	pairBoth(t, w, e.request(t, "reread", libspbroker.ModeClient))
	st.waitCount(t, 0)
	st.mu.Lock()
	assert.Equal(t, uint64(100+len(conns)), st.next, "nothing was kept again under a new id")
	// One recv consumes a request: only the over-long one's excess is
	// left, and that client gets the reset it asked for.
	assert.Equal(t, 1, st.unread)
	st.mu.Unlock()
}

// serveState runs an engine configured by cfg on a fresh socket, with
// conns handed to it, and shuts it down on cleanup.
func serveState(t *testing.T, cfg *broker.Config, conns []broker.HandedConn) *engine {
	t.Helper()
	path := filepath.Join(t.TempDir(), "b.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	f, err := ln.File()
	require.NoError(t, err)
	ln.SetUnlinkOnClose(false)
	require.NoError(t, ln.Close())
	lfd, err := unix.Dup(int(f.Fd()))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	b, err := broker.New(cfg)
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- b.ServeState(&broker.State{Listener: lfd, Conns: conns}) }()
	t.Cleanup(func() {
		b.Shutdown()
		assert.ErrorIs(t, <-served, broker.ErrClosed)
	})
	e := &engine{Broker: b, path: path}
	e.stall(t)()
	return e
}

func (s *fakeStore) setBusy(b bool) {
	s.mu.Lock()
	s.busy = b
	s.mu.Unlock()
}

// TestStoreBusy checks that a store that cannot keep up (systemd reads
// its messages one at a time) never holds up pairing: the calls wait in
// order and are made once it is free, and a waiter paired meanwhile costs
// no call at all. The releases still due when the engine stops are made.
func TestStoreBusy(t *testing.T) {
	st := newFakeStore(t)
	e := startBroker(t, &broker.Config{Store: st})
	st.setBusy(true)
	a := e.park(t, "a", libspbroker.ModeServer)
	b := e.park(t, "b", libspbroker.ModeServer)
	time.Sleep(5 * broker.PollDelay) // past the time to keep them
	pairBoth(t, a, e.request(t, "a", libspbroker.ModeClient))
	assert.Zero(t, st.count())
	st.setBusy(false)
	st.waitCount(t, 1) // b, kept late; a's keep was dropped
	st.mu.Lock()
	assert.Equal(t, 1, st.calls)
	st.mu.Unlock()

	// Busy again: b is paired, but its release waits, and the store's
	// copy keeps b's connection open until it is made, when the engine
	// stops.
	st.setBusy(true)
	newcomer := e.request(t, "b", libspbroker.ModeClient)
	for _, c := range []*client{b, newcomer} {
		buf := make([]byte, 2*msgSize)
		oob := make([]byte, unix.CmsgSpace(4))
		n, oobn, _, _, err := unix.Recvmsg(c.fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		require.NoError(t, err)
		require.NotZero(t, n)
		fds := parseRights(oob[:oobn])
		require.Len(t, fds, 1, "one end in the SET_PAIR")
		unix.Close(fds[0])
	}
	newcomer.expectClosed()
	assert.True(t, b.quiet(quietFor), "end of file before the store let go of its copy")
	assert.Equal(t, 1, st.count())
	go func() {
		time.Sleep(20 * time.Millisecond)
		st.setBusy(false)
	}()
	e.Shutdown()
	assert.Zero(t, st.count())
	b.expectClosed()
	assert.Zero(t, e.Stats().StoreFailed)
}
