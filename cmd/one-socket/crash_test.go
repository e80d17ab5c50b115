package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	spb "github.com/one-socket/one-socket/libspbroker"
)

// rawWaiter is a waiting client on a plain connection, so that the test
// can read on after its SET_PAIR, to end of file.
type rawWaiter struct {
	key  []byte
	conn *net.UnixConn
}

// parkRaw connects n raw clients that each send a GET_PAIR in server mode.
func parkRaw(t *testing.T, path string, n int) []rawWaiter {
	t.Helper()
	ws := make([]rawWaiter, n)
	for i := range ws {
		c, err := net.Dial("unix", path)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		ws[i] = rawWaiter{uniqueKey("crash"), c.(*net.UnixConn)}
		_, err = c.Write(getPairWire(ws[i].key, spb.ModeServer))
		require.NoError(t, err)
	}
	return ws
}

// kill SIGKILLs the daemon, as the OOM killer would, and waits for it.
func (d *daemon) kill() {
	d.t.Helper()
	require.NoError(d.t, d.cmd.Process.Signal(syscall.SIGKILL))
	<-d.done
}

// readToEOF reads c until end of file and fails on anything else: a client
// reading on after its SET_PAIR must see the broker hang up cleanly, with
// no second SET_PAIR.
func readToEOF(t *testing.T, c *net.UnixConn, what string) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Second)))
	buf := make([]byte, 2*spb.MessageSize)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	assert.Zero(t, oobn, "%s: a descriptor after the SET_PAIR", what)
	assert.Zero(t, n, "%s: bytes after the SET_PAIR", what)
	assert.ErrorIs(t, err, io.EOF, what)
}

// TestIntegrationCrashKeepsWaiters kills a daemon that has waiting clients
// with SIGKILL: the next instance the manager starts takes every one of
// them back from the file descriptor store and pairs it, and each reads
// end of file after its SET_PAIR. A client still sending its request was
// not kept, and sees the broker hang up.
func TestIntegrationCrashKeepsWaiters(t *testing.T) {
	m := newManager(t, true)
	d1 := m.start("--fdstore")
	ws := parkRaw(t, m.BrokerPath, 30)
	half, err := net.Dial("unix", m.BrokerPath)
	require.NoError(t, err)
	defer half.Close()
	_, err = half.Write(getPairWire(uniqueKey("half"), spb.ModeServer)[:100])
	require.NoError(t, err)
	waitWaiting(t, m.CtlPath, 30)
	require.Eventually(t, func() bool { return m.waiters() == 30 }, 10*time.Second, time.Millisecond)
	assert.Equal(t, float64(30), status(t, m.CtlPath)["kept"])

	d1.kill()
	require.NoError(t, half.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = half.Read(make([]byte, 1))
	assert.Error(t, err, "the half-sent client was not kept")

	d2 := m.start("--fdstore")
	assert.Contains(t, d2.waitLog("clients taken back from the service manager"), "clients=30 stored=0 kept=30 hung_up=0 unknown=0 after=crash counters=zeroed policy=none")
	for _, w := range ws {
		f, err := spb.GetPair(t.Context(), m.BrokerPath, w.key, spb.ModeClient)
		require.NoError(t, err)
		g := receiveSetPair(t, w.conn)
		expectConnected(t, f, g)
		f.Close()
		g.Close()
		readToEOF(t, w.conn, "waiter")
	}
	m.waitNames() // each copy removed once its client was paired
	st := status(t, m.CtlPath)
	assert.Equal(t, float64(30), st["paired_total"], "the counters start again after a crash")
	assert.Equal(t, float64(30), st["restored_total"])
	assert.Equal(t, float64(0), st["kept"])
	require.Equal(t, 0, d2.stop(syscall.SIGTERM))
}

// TestIntegrationCrashStoredConnections starts a daemon on a store that
// holds, under waiters' names, what a crash can leave and what a hostile
// client can make of it: a whole request, none (the client was being
// paired), half of one, a bad one, one with trailing bytes, one with a
// descriptor, and a copy that is no socket. Only the whole request waits;
// every other connection is closed and its copy removed; the daemon
// numbers new copies above the highest it found.
func TestIntegrationCrashStoredConnections(t *testing.T) {
	m := newManager(t, true)
	good := uniqueKey("good")
	whole := getPairWire(good, spb.ModeServer)
	bad := getPairWire(uniqueKey("bad"), spb.ModeServer)
	bad[0] = 9 // no such request
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	defer pr.Close()
	defer pw.Close()
	type entry struct {
		sent []byte
		fds  []int
	}
	entries := map[string]entry{
		"w3":  {sent: whole},
		"w4":  {},
		"w5":  {sent: whole[:200]},
		"w6":  {sent: bad},
		"w7":  {sent: append(append([]byte{}, whole...), 'x')},
		"w41": {sent: getPairWire(uniqueKey("fd"), spb.ModeServer), fds: []int{int(pr.Fd())}},
	}
	clients := map[string]*net.UnixConn{}
	for name, e := range entries {
		p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		if len(e.sent) > 0 {
			var oob []byte
			if len(e.fds) > 0 {
				oob = unix.UnixRights(e.fds...)
			}
			require.NoError(t, unix.Sendmsg(p[1], e.sent, oob, nil, 0))
		}
		m.Add(os.NewFile(uintptr(p[0]), name), name)
		f := os.NewFile(uintptr(p[1]), name)
		c, err := net.FileConn(f)
		f.Close()
		require.NoError(t, err)
		defer c.Close()
		clients[name] = c.(*net.UnixConn)
	}
	mfd, err := unix.MemfdCreate("not-a-socket", unix.MFD_CLOEXEC)
	require.NoError(t, err)
	m.Add(os.NewFile(uintptr(mfd), "w8"), "w8")

	d := m.start("--fdstore")
	assert.Contains(t, d.waitLog("clients taken back from the service manager"), "clients=6 stored=0 kept=6 hung_up=0 unknown=1")
	waitWaiting(t, m.CtlPath, 1)
	for name, c := range clients {
		if name == "w3" {
			continue
		}
		require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
		n, err := c.Read(make([]byte, 2*spb.MessageSize))
		assert.Zero(t, n, name)
		if name == "w7" {
			// One byte past the request stays unread: the reset it asked for.
			assert.True(t, errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET), "%s: %v", name, err)
		} else {
			assert.ErrorIs(t, err, io.EOF, name)
		}
	}
	m.waitNames("w3")

	late := parkRaw(t, m.BrokerPath, 1)
	waitWaiting(t, m.CtlPath, 2)
	m.waitNames("w3", "w42")

	for _, w := range []rawWaiter{{good, clients["w3"]}, late[0]} {
		f, err := spb.GetPair(t.Context(), m.BrokerPath, w.key, spb.ModeClient)
		require.NoError(t, err)
		g := receiveSetPair(t, w.conn)
		expectConnected(t, f, g)
		f.Close()
		g.Close()
		readToEOF(t, w.conn, string(w.key))
	}
	m.waitNames()
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
}

// crashRetry asks for the peer of key until ctx ends, again whenever the
// broker hangs up or cannot be reached, as a client riding out a crash
// does.
func crashRetry(ctx context.Context, path string, key []byte, mode spb.Mode) (*os.File, error) {
	for {
		f, err := spb.GetPair(ctx, path, key, mode)
		if err == nil || ctx.Err() != nil {
			return f, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// awaitSetPair reads the SET_PAIR on c until ctx ends, without failing
// the test from the goroutine it runs on.
func awaitSetPair(ctx context.Context, c *net.UnixConn) (*os.File, error) {
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
	defer stop()
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd, rerr := -1, error(nil)
	if err := rc.Read(func(s uintptr) bool {
		fd, rerr = spb.ReceiveSetPair(int(s))
		return !errors.Is(rerr, unix.EAGAIN)
	}); err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	return os.NewFile(uintptr(fd), "pair"), nil
}

// eofAfter checks that c ends after its SET_PAIR, with nothing more.
func eofAfter(c *net.UnixConn) error {
	if err := c.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		return err
	}
	buf := make([]byte, 2*spb.MessageSize)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if n > 0 || oobn > 0 {
		return fmt.Errorf("%d bytes and %d of ancillary data after the SET_PAIR: paired twice", n, oobn)
	}
	if !errors.Is(err, io.EOF) {
		return fmt.Errorf("after the SET_PAIR: %v, not end of file", err)
	}
	return nil
}

// exchangeByte sends a byte each way across two ends of a pair.
func exchangeByte(fa, fb *os.File) error {
	a, err := net.FileConn(fa)
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := net.FileConn(fb)
	if err != nil {
		return err
	}
	defer b.Close()
	for _, dir := range [][2]net.Conn{{a, b}, {b, a}} {
		if _, err := dir[0].Write([]byte{'x'}); err != nil {
			return err
		}
		if err := dir[1].SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			return err
		}
		var buf [1]byte
		if _, err := dir[1].Read(buf[:]); err != nil {
			return err
		}
	}
	return nil
}

// TestIntegrationCrashUnderLoad SIGKILLs the daemon at random moments
// while pairs are made without pause, hostile clients misbehave, and 150
// clients wait, whose peers arrive during the crashes. Every one of the
// waiting clients must be paired exactly once with its own peer, and no
// newcomer may be handed a dead end. The one exception is the window
// between a pairing's two SET_PAIRs (internal/broker/store.go): a crash
// there hands the waiter an end whose peer died with the broker, and its
// newcomer, which got nothing, waits on. At most one pairing is in that
// window per crash.
func TestIntegrationCrashUnderLoad(t *testing.T) {
	const parked, crashes = 150, 6
	m := newManager(t, true)
	d := m.start("--fdstore")
	ws := parkRaw(t, m.BrokerPath, parked)
	waitWaiting(t, m.CtlPath, parked)
	require.Eventually(t, func() bool { return m.waiters() == parked }, 10*time.Second, time.Millisecond)

	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var load sync.WaitGroup
	var loadPairs, loadDead, loadCrossed atomic.Int64
	for p := range 3 {
		load.Add(1)
		go func() {
			defer load.Done()
			for i := 0; ctx.Err() == nil; i++ {
				key := fmt.Appendf(nil, "load-%d-%d-%d", os.Getpid(), p, i)
				actx, cancel := context.WithTimeout(ctx, 3*time.Second)
				res := make(chan *os.File, 2)
				for _, mode := range []spb.Mode{spb.ModeServer, spb.ModeClient} {
					go func() {
						f, _ := crashRetry(actx, m.BrokerPath, key, mode)
						res <- f
					}()
				}
				a, b := <-res, <-res
				cancel()
				switch {
				case a != nil && b != nil:
					if exchangeByte(a, b) != nil {
						loadCrossed.Add(1) // each got an end, but not of one pair
					}
					loadPairs.Add(1)
				case a != nil || b != nil:
					loadDead.Add(1) // one side's peer died with the broker
				}
				for _, f := range []*os.File{a, b} {
					if f != nil {
						f.Close()
					}
				}
			}
		}()
	}
	load.Add(1)
	go func() { // hostile clients throughout
		defer load.Done()
		for ctx.Err() == nil {
			c, err := net.Dial("unix", m.BrokerPath)
			if err != nil {
				time.Sleep(time.Millisecond)
				continue
			}
			msg := getPairWire(uniqueKey("hostile"), spb.ModeServer)
			switch rand.IntN(4) {
			case 0:
				c.Write(msg[:rand.IntN(len(msg))])
			case 1:
				msg[4] = 7
				c.Write(msg)
			case 2:
				c.Write(append(msg, "more"...))
			case 3:
				c.Write(msg) // a valid request, then gone
			}
			c.Close()
		}
	}()

	// The waiters' peers arrive at random moments during the crashes. A
	// waiter whose connection ends without a SET_PAIR (it was being paired
	// when a crash came, and the next process closed it) asks again, as
	// GetPair would.
	type outcome struct {
		end   *os.File
		err   error
		again bool // the waiter had to ask again
	}
	peers := make([]outcome, parked)
	waiters := make([]outcome, parked)
	pctx, cancelPeers := context.WithCancel(context.Background())
	defer cancelPeers()
	var peersDone sync.WaitGroup
	for i, w := range ws {
		peersDone.Add(2)
		go func() {
			defer peersDone.Done()
			time.Sleep(time.Duration(rand.IntN(1500)) * time.Millisecond)
			f, err := crashRetry(pctx, m.BrokerPath, w.key, spb.ModeClient)
			peers[i] = outcome{end: f, err: err}
		}()
		go func() {
			defer peersDone.Done()
			f, err := awaitSetPair(pctx, w.conn)
			if err == nil {
				err = eofAfter(w.conn)
			} else if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				waiters[i].again = true
				f, err = crashRetry(pctx, m.BrokerPath, w.key, spb.ModeServer)
			}
			waiters[i].end, waiters[i].err = f, err
		}()
	}

	for range crashes {
		time.Sleep(time.Duration(100+rand.IntN(300)) * time.Millisecond)
		d.kill()
		d = m.start("--fdstore")
	}
	// A client still asking long after the last crash has no peer left.
	stopped := make(chan struct{})
	go func() { peersDone.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		cancelPeers()
		<-stopped
	}
	stopLoad()
	load.Wait()

	window, again := 0, 0
	for i := range ws {
		p, w := peers[i], waiters[i]
		if w.again {
			again++
		}
		switch {
		case p.err == nil && w.err == nil:
			assert.NoError(t, exchangeByte(p.end, w.end), "waiter %d and its peer are not connected to each other", i)
		case p.err != nil && w.err == nil:
			// The window: the waiter's end must be dead, not another's.
			window++
			require.NoError(t, w.end.SetReadDeadline(time.Now().Add(5*time.Second)))
			n, err := w.end.Read(make([]byte, 1))
			assert.Zero(t, n)
			assert.ErrorIs(t, err, io.EOF, "waiter %d: its peer never paired, yet its end is not dead", i)
		default:
			t.Errorf("waiter %d: %v; its peer: %v", i, w.err, p.err)
		}
		for _, f := range []*os.File{p.end, w.end} {
			if f != nil {
				f.Close()
			}
		}
	}
	t.Logf("%d crashes; %d load pairs made; a crash between two SET_PAIRs: %d load pairs, %d waiters; %d waiters asked again",
		crashes, loadPairs.Load(), loadDead.Load(), window, again)
	assert.LessOrEqual(t, window+int(loadDead.Load()), crashes, "more pairings in the window than crashes")
	assert.LessOrEqual(t, again, 2*crashes, "more waiters asked again than crashes could close")
	assert.NotZero(t, loadPairs.Load())
	assert.Zero(t, loadCrossed.Load(), "pairs whose ends were not connected to each other")
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
	assert.NotContains(t, d.stderr.String(), "level=ERROR")
	assert.False(t, strings.Contains(d.stderr.String(), "panic"))
}
