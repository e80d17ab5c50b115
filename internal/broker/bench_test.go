package broker_test

// Engine benchmarks: pairings against an in-process engine, driven by raw
// system calls that allocate nothing, so that allocs/op is the engine's.
// pairs/s includes the clients' work and shares the CPU with them: compare
// runs with each other, not with the separate-process figures of
// performance-notes.md.

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/libspbroker"
)

// rawClient makes pairings with preallocated buffers and message headers.
type rawClient struct {
	sa    unix.RawSockaddrUnix
	salen uintptr
	tv    unix.Timeval
	srv   []byte // GET_PAIR, server side
	cli   []byte // GET_PAIR, client side
	buf   [2 * msgSize]byte
	oob   [64]byte
	iov   unix.Iovec
	hdr   unix.Msghdr
}

func newRawClient(tb testing.TB, path, key string) *rawClient {
	rc := &rawClient{
		srv: getPair(key, libspbroker.ModeServer),
		cli: getPair(key, libspbroker.ModeClient),
		tv:  unix.NsecToTimeval(ioTimeout.Nanoseconds()),
	}
	require.Less(tb, len(path), len(rc.sa.Path))
	rc.sa.Family = unix.AF_UNIX
	for i := range len(path) {
		rc.sa.Path[i] = int8(path[i])
	}
	rc.salen = uintptr(unsafe.Offsetof(rc.sa.Path)) + uintptr(len(path)) + 1
	rc.iov.Base = &rc.buf[0]
	rc.hdr.Iov = &rc.iov
	rc.hdr.SetIovlen(1)
	rc.hdr.Control = &rc.oob[0]
	return rc
}

// dial connects, with a receive timeout so that a broken engine fails the
// benchmark instead of hanging it, and sends req.
func (rc *rawClient) dial(req []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_SOCKET, unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, fmt.Errorf("socket: %w", e)
	}
	fd := int(r)
	_, _, e = unix.RawSyscall6(unix.SYS_SETSOCKOPT, r, unix.SOL_SOCKET, unix.SO_RCVTIMEO,
		uintptr(unsafe.Pointer(&rc.tv)), unsafe.Sizeof(rc.tv), 0)
	for e == 0 || e == unix.EINTR {
		_, _, e = unix.Syscall(unix.SYS_CONNECT, r, uintptr(unsafe.Pointer(&rc.sa)), rc.salen)
		if e == 0 {
			break
		}
	}
	if e != 0 {
		unix.Close(fd)
		return -1, fmt.Errorf("connect: %w", e)
	}
	if _, err := unix.Write(fd, req); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("write: %w", err)
	}
	return fd, nil
}

// recv reads a SET_PAIR from fd and returns the socket it carries.
func (rc *rawClient) recv(fd int) (int, error) {
	got, passed := 0, -1
	for got < msgSize {
		rc.iov.Base = &rc.buf[got]
		rc.iov.SetLen(len(rc.buf) - got)
		rc.hdr.SetControllen(len(rc.oob))
		r, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&rc.hdr)), unix.MSG_CMSG_CLOEXEC)
		switch {
		case e == unix.EINTR:
			continue
		case e != 0:
			return -1, fmt.Errorf("recvmsg: %w", e)
		case r == 0:
			return -1, fmt.Errorf("closed after %d bytes", got)
		}
		if rc.hdr.Controllen >= uint64(unix.CmsgLen(4)) {
			h := (*unix.Cmsghdr)(unsafe.Pointer(&rc.oob[0]))
			if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_RIGHTS {
				passed = int(*(*int32)(unsafe.Pointer(&rc.oob[unix.SizeofCmsghdr])))
			}
		}
		got += int(r)
	}
	if passed < 0 {
		return -1, fmt.Errorf("SET_PAIR without a descriptor")
	}
	return passed, nil
}

// pair makes one pairing and closes everything it got.
func (rc *rawClient) pair() error {
	a, err := rc.dial(rc.srv)
	if err != nil {
		return err
	}
	defer unix.Close(a)
	c, err := rc.dial(rc.cli)
	if err != nil {
		return err
	}
	defer unix.Close(c)
	fa, err := rc.recv(a)
	if err != nil {
		return err
	}
	unix.Close(fa)
	fc, err := rc.recv(c)
	if err != nil {
		return err
	}
	unix.Close(fc)
	return nil
}

func reportPairs(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}

// One pairing at a time: connect a server and a client, receive both ends.
func BenchmarkPairSequential(b *testing.B) {
	e := startBroker(b, nil)
	rc := newRawClient(b, e.path, newKey())
	b.ReportAllocs()
	for b.Loop() {
		if err := rc.pair(); err != nil {
			b.Fatal(err)
		}
	}
	reportPairs(b)
}

// Pairings from GOMAXPROCS goroutines at once, each with its own key.
func BenchmarkPairParallel(b *testing.B) {
	e := startBroker(b, nil)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rc := newRawClient(b, e.path, newKey())
		for pb.Next() {
			if err := rc.pair(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportPairs(b)
}

// Sequential pairings while 10,000 other clients wait, each with its own
// key: matching must not scan them. The waiters live in a child process
// (this test binary, see TestMain), so that this process stays well below
// its descriptor limit while the engine holds 10,000 connections. (Parking
// their ends in flight in a socketpair instead would make the kernel queue
// its Unix-socket garbage collector on every close and slow every pair.)
func BenchmarkMatchWithWaiting(b *testing.B) {
	const waiting = 10000
	e := startBroker(b, nil)
	host := exec.Command(os.Args[0])
	host.Env = append(os.Environ(), waiterHostEnv+"="+e.path, waiterCountEnv+"="+strconv.Itoa(waiting))
	host.Stderr = os.Stderr
	stdin, err := host.StdinPipe()
	require.NoError(b, err)
	stdout, err := host.StdoutPipe()
	require.NoError(b, err)
	require.NoError(b, host.Start())
	exited := false
	b.Cleanup(func() {
		stdin.Close()
		if !exited {
			host.Wait()
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(b, err, "waiter host: %q", line)
	require.Equal(b, "ready\n", line)
	e.waitWaiting(b, waiting)

	rc := newRawClient(b, e.path, newKey())
	b.ReportAllocs()
	for b.Loop() {
		if err := rc.pair(); err != nil {
			b.Fatal(err)
		}
	}
	reportPairs(b)
	b.StopTimer()
	if s := e.Stats(); s.Waiting != waiting {
		b.Fatalf("%d clients waiting after the benchmark, want %d", s.Waiting, waiting)
	}
	// The host exits when its stdin closes, hanging the waiters up.
	stdin.Close()
	exited = true
	require.NoError(b, host.Wait())
	e.waitStats(b, "waiters gone", func(s broker.Stats) bool { return s.Conns == 0 && s.Waiting == 0 })
}

const (
	waiterHostEnv  = "ONE_SOCKET_TEST_WAITER_HOST"
	waiterCountEnv = "ONE_SOCKET_TEST_WAITER_COUNT"
)

// TestMain runs the tests, or, in the child process of
// BenchmarkMatchWithWaiting, hosts its waiting clients.
func TestMain(m *testing.M) {
	if path := os.Getenv(waiterHostEnv); path != "" {
		os.Exit(hostWaiters(path, os.Getenv(waiterCountEnv)))
	}
	os.Exit(m.Run())
}

// hostWaiters connects count clients to the broker at path, each sending a
// GET_PAIR with a key of its own, reports "ready" on stdout, and keeps them
// until stdin closes.
func hostWaiters(path, count string) int {
	n, err := strconv.Atoi(count)
	if err != nil {
		fmt.Fprintln(os.Stderr, "waiter host:", err)
		return 2
	}
	fds := make([]int, 0, n)
	for i := range n {
		fd, err := tryDial(path)
		if err == nil {
			_, err = unix.Write(fd, getPair(fmt.Sprintf("waiter-%08d-%s", i, newKey()), libspbroker.ModeServer))
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "waiter host: client %d: %v\n", i, err)
			return 1
		}
		fds = append(fds, fd)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, fd := range fds {
		unix.Close(fd)
	}
	return 0
}
