package relay

import (
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/relay/yardstick"
	"github.com/one-socket/one-socket/internal/scm"
)

// Benchmarks of the relay in one process, beside a direct socketpair:
//
//	go test -run '^$' -bench . ./internal/relay/
//
// bench/relay.sh measures the same between processes, through
// one-socketctl; these isolate the relay's own cost for profiling
// (-cpuprofile, or perf record on the test binary). They time nothing
// against a limit.
//
// The two programs' ends are raw blocking descriptors driven by plain
// system calls on locked threads, standing for other processes. Each such
// thread keeps its P while it sleeps in a system call, so GOMAXPROCS is
// raised by two for the run, leaving the relay as many Ps as it has in
// one-socketctl.

// withProcs raises GOMAXPROCS by n until the benchmark ends.
func withProcs(b *testing.B, n int) {
	old := runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(old + n)
	b.Cleanup(func() { runtime.GOMAXPROCS(old) })
}

// How the two programs' ends are joined in a benchmark. Besides Relay,
// two relays that forward each read as one send, as any relay that does
// not look for where descriptors start would, bound what a relay costs:
// naive on Go's poller, as Relay is, and floor on two locked threads in
// blocking system calls, as a C relay would be. Neither keeps descriptors
// on their byte; they are yardsticks, not alternatives.
type joint string

const (
	direct joint = "direct"
	relay  joint = "relay"
	naive  joint = "naive-relay"
	floor  joint = "floor-relay"
)

// benchEnds returns two programs' raw blocking ends, x and y, joined by a
// direct socketpair or through a relay between two socketpairs.
func benchEnds(b *testing.B, j joint) (x, y int) {
	b.Helper()
	pair := func() (int, int) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		return fds[0], fds[1]
	}
	if j == direct {
		x, y = pair()
		b.Cleanup(func() { unix.Close(x); unix.Close(y) })
		return x, y
	}
	x, rx := pair()
	ry, y := pair()
	done := make(chan error, 2)
	var closeRelay func()
	switch j {
	case relay:
		ca, cb := benchConn(b, rx), benchConn(b, ry)
		go func() { done <- Relay(End{ca, "x"}, End{cb, "y"}); done <- nil }()
		closeRelay = func() { ca.Close(); cb.Close() }
	case naive:
		ca, cb := benchConn(b, rx), benchConn(b, ry)
		go func() { done <- yardstick.Naive(ca, cb, bufSize) }()
		go func() { done <- yardstick.Naive(cb, ca, bufSize) }()
		closeRelay = func() { ca.Close(); cb.Close() }
	case floor:
		go func() { done <- yardstick.Floor(rx, ry, bufSize) }()
		go func() { done <- yardstick.Floor(ry, rx, bufSize) }()
		closeRelay = func() { unix.Close(rx); unix.Close(ry) }
	}
	b.Cleanup(func() {
		unix.Close(x)
		unix.Close(y)
		for range 2 {
			select {
			case err := <-done:
				if err != nil && !PeerGone(err) {
					b.Error(err)
				}
			case <-time.After(10 * time.Second):
				b.Error("the relay did not end after both programs closed")
			}
		}
		closeRelay()
	})
	return x, y
}

// benchConn makes fd a *net.UnixConn, which then owns it.
func benchConn(b *testing.B, fd int) *net.UnixConn {
	f := os.NewFile(uintptr(fd), "relayed")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	return c.(*net.UnixConn)
}

// benchMemfd returns a memfd closed when the benchmark ends.
func benchMemfd(b *testing.B) int {
	fd, err := unix.MemfdCreate("relay-bench", unix.MFD_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(fd) })
	return fd
}

// sendBench writes all of p with oob on its first byte.
func sendBench(fd int, p, oob []byte) error {
	for len(p) > 0 {
		n, err := unix.SendmsgN(fd, p, oob, nil, unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		p, oob = p[n:], nil
	}
	return nil
}

// recvBench reads exactly len(p) bytes, closing the descriptors that come
// with them and counting them; ok is false at the end of the stream.
func recvBench(fd int, p, oob []byte) (ok bool, nfds int, err error) {
	for got := 0; got < len(p); {
		n, oobn, _, _, err := unix.Recvmsg(fd, p[got:], oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return false, nfds, err
		}
		fds, err := parseRights(oob[:oobn])
		closeAll(fds)
		if err != nil {
			return false, nfds, err
		}
		nfds += len(fds)
		got += n
	}
	return true, nfds, nil
}

// BenchmarkRoundTrip: a 64-byte message carrying a memfd, echoed with the
// descriptor it brought; one op is one round trip.
func BenchmarkRoundTrip(b *testing.B) {
	for _, j := range []joint{direct, relay, naive, floor} {
		b.Run(string(j), func(b *testing.B) {
			withProcs(b, 4)
			x, y := benchEnds(b, j)
			echoed := make(chan error, 1)
			go func() {
				runtime.LockOSThread()
				msg := make([]byte, 64)
				oob := make([]byte, unix.CmsgSpace(4))
				for {
					n, oobn, _, _, err := unix.Recvmsg(y, msg, oob, unix.MSG_CMSG_CLOEXEC|unix.MSG_WAITALL)
					if err != nil || n == 0 {
						echoed <- err
						return
					}
					fds, err := parseRights(oob[:oobn])
					if err == nil {
						err = sendBench(y, msg[:n], unix.UnixRights(fds...))
					}
					closeAll(fds)
					if err != nil {
						echoed <- err
						return
					}
				}
			}()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			oob := unix.UnixRights(benchMemfd(b))
			msg, back, roob := make([]byte, 64), make([]byte, 64), make([]byte, unix.CmsgSpace(4))
			for b.Loop() {
				if err := sendBench(x, msg, oob); err != nil {
					b.Fatal(err)
				}
				ok, nfds, err := recvBench(x, back, roob)
				if !ok || nfds != 1 {
					b.Fatalf("round trip: ok %v, %d descriptors, %v", ok, nfds, err)
				}
			}
			unix.Shutdown(x, unix.SHUT_WR)
			if err := <-echoed; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkStream: 64 KiB writes one way, every fdEvery-th carrying a
// memfd (none for 0); one op is one write, so MB/s is the throughput.
func BenchmarkStream(b *testing.B) {
	for _, c := range []struct {
		j       joint
		fdEvery int
	}{
		{direct, 0}, {relay, 0}, {naive, 0}, {floor, 0},
		{direct, 16}, {relay, 16},
	} {
		name := string(c.j)
		if c.fdEvery > 0 {
			name += "+fd/1MiB"
		}
		b.Run(name, func(b *testing.B) {
			withProcs(b, 4)
			x, y := benchEnds(b, c.j)
			const size = 64 << 10
			b.SetBytes(size)
			total := int64(b.N) * size
			read := make(chan error, 1)
			go func() {
				runtime.LockOSThread()
				buf := make([]byte, size)
				oob := make([]byte, unix.CmsgSpace(4*4))
				var got int64
				for got < total {
					n, oobn, _, _, err := unix.Recvmsg(y, buf, oob, unix.MSG_CMSG_CLOEXEC)
					if err == unix.EINTR {
						continue
					}
					if err != nil || n == 0 {
						read <- io.ErrUnexpectedEOF
						return
					}
					fds, _ := parseRights(oob[:oobn])
					closeAll(fds)
					got += int64(n)
				}
				read <- nil
			}()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			oob := unix.UnixRights(benchMemfd(b))
			buf := make([]byte, size)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var o []byte
				if c.fdEvery > 0 && i%c.fdEvery == 0 {
					o = oob
				}
				if err := sendBench(x, buf, o); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-read; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkRead: the reader alone, on a queue that holds queued plain
// bytes and then a 64-byte send, with a memfd or without; one op is one
// such queue filled and read to its end. "raw" reads it with plain
// recvmsg calls, the least any reader pays (and inexact: it glues the
// plain bytes to the descriptor's send). The difference per queued byte is
// the cost of finding where the send with descriptors starts.
func BenchmarkRead(b *testing.B) {
	for _, queued := range []int{0, 64, 1024, 16 << 10, 64 << 10} {
		for _, withFD := range []bool{false, true} {
			for _, raw := range []bool{false, true} {
				name := "plain"
				if withFD {
					name = "fd"
				}
				name += "/queued=" + strconv.Itoa(queued)
				if raw {
					name += "/raw"
				}
				b.Run(name, func(b *testing.B) { benchRead(b, queued, withFD, raw) })
			}
		}
	}
}

func benchRead(b *testing.B, queued int, withFD, raw bool) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	w := fds[0]
	defer unix.Close(w)
	c := benchConn(b, fds[1])
	defer c.Close()
	r, err := newReader(c)
	if err != nil {
		b.Fatal(err)
	}
	var oob []byte
	if withFD {
		oob = unix.UnixRights(benchMemfd(b))
	}
	front, msg := make([]byte, queued), make([]byte, 64)
	rfd := -1
	rc, _ := c.SyscallConn()
	rc.Control(func(fd uintptr) { rfd = int(fd) })
	rbuf, roob := make([]byte, bufSize), make([]byte, scm.OOBSize)
	for b.Loop() {
		if queued > 0 {
			if err := sendBench(w, front, nil); err != nil {
				b.Fatal(err)
			}
		}
		if err := sendBench(w, msg, oob); err != nil {
			b.Fatal(err)
		}
		nfds := 0
		for got := 0; got < queued+len(msg); {
			if raw {
				n, oobn, _, _, err := unix.Recvmsg(rfd, rbuf, roob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
				if err != nil {
					b.Fatal(err)
				}
				rfds, _ := parseRights(roob[:oobn])
				nfds += len(rfds)
				closeAll(rfds)
				got += n
				continue
			}
			ch, err := r.read()
			if err != nil {
				b.Fatal(err)
			}
			nfds += len(ch.fds)
			closeAll(ch.fds)
			got += len(ch.data)
		}
		if withFD && nfds != 1 {
			b.Fatalf("%d descriptors read, 1 sent", nfds)
		}
	}
	if queued > 0 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(queued), "ns/queued-byte")
	}
}

// BenchmarkCall: what each system call of a read costs on its own, on a
// socket holding one 64-byte send with a memfd (plain: without), or on an
// empty one: the price list for counting a read's calls.
func BenchmarkCall(b *testing.B) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	empty, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(empty[0])
	defer unix.Close(empty[1])
	if err := sendBench(fds[0], make([]byte, 64), unix.UnixRights(benchMemfd(b))); err != nil {
		b.Fatal(err)
	}
	plain, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(plain[0])
	defer unix.Close(plain[1])
	if err := sendBench(plain[0], make([]byte, 64), nil); err != nil {
		b.Fatal(err)
	}
	s := fds[1]
	buf := make([]byte, bufSize)
	b.Run("ioctl-SIOCINQ", func(b *testing.B) {
		for b.Loop() {
			if _, err := unix.IoctlGetInt(s, unix.SIOCINQ); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("peek-1", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := peek(s, buf[:1]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("peek-1-plain", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := peek(plain[1], buf[:1]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("peek-64KiB", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := peek(s, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("peek-empty-EAGAIN", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := peek(empty[1], buf[:1]); err != unix.EAGAIN {
				b.Fatal(err)
			}
		}
	})
	b.Run("recvmsg-empty-EAGAIN", func(b *testing.B) {
		for b.Loop() {
			if _, _, _, _, err := unix.Recvmsg(empty[1], buf, nil, unix.MSG_DONTWAIT); err != unix.EAGAIN {
				b.Fatal(err)
			}
		}
	})
}
