package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/scm"
	"github.com/one-socket/one-socket/internal/testutil"
)

// waitFor bounds a wait so that a broken relay fails a test rather than
// hanging it; nothing here measures speed.
const waitFor = 20 * time.Second

// socketPair returns the two ends of a fresh stream socketpair as raw
// descriptors.
func socketPair(t *testing.T) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	return fds[0], fds[1]
}

// unixConn makes fd a *net.UnixConn, which then owns it.
func unixConn(t *testing.T, fd int, name string) *net.UnixConn {
	t.Helper()
	f := os.NewFile(uintptr(fd), name)
	c, err := net.FileConn(f)
	f.Close()
	require.NoError(t, err)
	return c.(*net.UnixConn)
}

// rig is a relay between two programs' sockets: a and b are the programs'
// raw ends, blocking, which the test drives with plain system calls.
type rig struct {
	a, b int
	done chan error
	ra   *net.UnixConn
	rb   *net.UnixConn
}

// newRig makes the sockets; start runs the relay, so that a test can
// queue messages before it reads anything.
func newRig(t *testing.T) *rig {
	t.Helper()
	a, ra := socketPair(t)
	b, rb := socketPair(t)
	r := &rig{a: a, b: b, ra: unixConn(t, ra, "ra"), rb: unixConn(t, rb, "rb")}
	t.Cleanup(func() {
		unix.Close(r.a)
		unix.Close(r.b)
		if r.done != nil {
			select {
			case <-r.done:
			case <-time.After(waitFor):
				t.Errorf("the relay did not end after both programs closed")
			}
		}
		r.ra.Close()
		r.rb.Close()
	})
	return r
}

func (r *rig) start() {
	r.done = make(chan error, 1)
	go func() { r.done <- Relay(End{r.ra, "a"}, End{r.rb, "b"}) }()
}

// wait returns the relay's result.
func (r *rig) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done = nil
		return err
	case <-time.After(waitFor):
		t.Fatal("the relay did not end")
		return nil
	}
}

// memfds returns n new memfds, each holding its own tag.
func memfds(t *testing.T, n int, tag string) []int {
	t.Helper()
	fds := make([]int, n)
	for i := range fds {
		fd, err := unix.MemfdCreate("relay-test", unix.MFD_CLOEXEC)
		require.NoError(t, err)
		_, err = unix.Write(fd, []byte(fmt.Sprintf("%s/%d", tag, i)))
		require.NoError(t, err)
		fds[i] = fd
	}
	return fds
}

// checkTags reads each received descriptor's tag, expecting memfds made
// by memfds(n, tag), and closes them.
func checkTags(t *testing.T, fds []int, tag string) {
	t.Helper()
	for i, fd := range fds {
		buf := make([]byte, 64)
		n, err := unix.Pread(fd, buf, 0)
		assert.NoError(t, err)
		assert.Equal(t, fmt.Sprintf("%s/%d", tag, i), string(buf[:n]), "descriptor %d", i)
		unix.Close(fd)
	}
}

func sendRights(t *testing.T, fd int, data []byte, fds []int) {
	t.Helper()
	require.NoError(t, trySend(fd, data, fds))
}

// trySend sends data with fds on its first byte; for goroutines, which
// must not stop the test.
func trySend(fd int, data []byte, fds []int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	for len(data) > 0 {
		n, err := unix.SendmsgN(fd, data, oob, nil, unix.MSG_NOSIGNAL)
		if err != nil {
			return err
		}
		data, oob = data[n:], nil
	}
	return nil
}

// recvSome reads up to len(buf) bytes and the descriptors that come with
// them.
func recvSome(t *testing.T, fd int, buf []byte) (int, []int) {
	t.Helper()
	oob := make([]byte, unix.CmsgSpace(scm.MaxFD*4))
	n, oobn, flags, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
	require.NoError(t, err)
	require.Zero(t, flags&unix.MSG_CTRUNC, "control data truncated")
	fds, err := parseRights(oob[:oobn])
	require.NoError(t, err)
	return n, fds
}

// recvFull reads exactly len(buf) bytes and returns every descriptor that
// came with any of them.
func recvFull(t *testing.T, fd int, buf []byte) []int {
	t.Helper()
	var all []int
	for got := 0; got < len(buf); {
		n, fds := recvSome(t, fd, buf[got:])
		require.NotZero(t, n, "end of stream after %d of %d bytes", got, len(buf))
		got += n
		all = append(all, fds...)
	}
	return all
}

// The trap: a plain send, a send with a descriptor, and another plain send
// queue up before the relay reads. One recvmsg returns the first two sends'
// bytes with the descriptor; forwarded as they came, the descriptor would
// arrive with byte 0. Read one byte at a time, it must arrive with byte 10,
// the first of the send that carried it.
func TestDescriptorStaysOnItsByte(t *testing.T) {
	r := newRig(t)
	fds := memfds(t, 1, "B")
	sendRights(t, r.a, []byte("AAAAAAAAAA"), nil)
	sendRights(t, r.a, []byte("BBBBBBBBBB"), fds)
	sendRights(t, r.a, []byte("CCCCCCCCCC"), nil)
	unix.Close(fds[0])
	r.start()

	var got []byte
	at := -1
	one := make([]byte, 1)
	for len(got) < 30 {
		n, fds := recvSome(t, r.b, one)
		require.Equal(t, 1, n)
		if len(fds) > 0 {
			require.Equal(t, -1, at, "descriptors arrived twice")
			at = len(got)
			checkTags(t, fds, "B")
		}
		got = append(got, one[0])
	}
	assert.Equal(t, "AAAAAAAAAABBBBBBBBBBCCCCCCCCCC", string(got))
	assert.Equal(t, 10, at, "the descriptor came with the wrong byte")
}

// frame is one message of the framed stream the next test sends: a header
// of its length and descriptor count, then the payload. Descriptors go
// with the header's first byte.
type frame struct {
	size int // payload bytes
	nfds int
}

const headerSize = 8

func (f frame) header() []byte {
	h := make([]byte, headerSize)
	binary.LittleEndian.PutUint32(h, uint32(f.size))
	binary.LittleEndian.PutUint32(h[4:], uint32(f.nfds))
	return h
}

func payload(i, size int) []byte {
	p := make([]byte, size)
	rng := rand.New(rand.NewPCG(uint64(i), 7))
	for j := range p {
		p[j] = byte(rng.Uint32())
	}
	return p
}

// Many framed messages, sizes up to 1 MiB, interleaved with messages of 1,
// 8 and 253 descriptors, written as fast as possible while the reader is
// slow at first so that they queue in front of the relay. The receiver
// reads the first byte of each header on its own, then the rest: every
// descriptor must come with that first byte and with no other read.
func TestFramedStreamKeepsEveryDescriptorInPlace(t *testing.T) {
	r := newRig(t)
	rng := rand.New(rand.NewPCG(1, 2))
	var frames []frame
	for i := 0; i < 300; i++ {
		f := frame{size: rng.IntN(64)}
		switch rng.IntN(6) {
		case 0:
			f.size = rng.IntN(1 << 20)
		case 1:
			f.nfds = 1
		case 2:
			f.nfds = 8
		}
		if i%50 == 25 {
			f.nfds = scm.MaxFD
		}
		if i%100 == 99 {
			f.size = 1 << 20
		}
		frames = append(frames, f)
	}

	r.start()
	sent := make(chan error, 1)
	// The descriptors are made here: memfds may not stop the test from
	// the sending goroutine.
	rights := make([][]int, len(frames))
	for i, f := range frames {
		if f.nfds > 0 {
			rights[i] = memfds(t, f.nfds, fmt.Sprint(i))
		}
	}
	go func() {
		for i, f := range frames {
			fds := rights[i]
			// Header and payload as separate sends half the time, so
			// that descriptor-carrying sends also follow plain ones of
			// the same message.
			var err error
			if i%2 == 0 {
				err = trySend(r.a, append(f.header(), payload(i, f.size)...), fds)
			} else if err = trySend(r.a, f.header(), fds); err == nil && f.size > 0 {
				err = trySend(r.a, payload(i, f.size), nil)
			}
			closeAll(fds)
			if err != nil {
				sent <- err
				return
			}
		}
		sent <- unix.Shutdown(r.a, unix.SHUT_WR)
	}()

	time.Sleep(100 * time.Millisecond) // let messages queue up in front of the relay
	one := make([]byte, 1)
	for i, f := range frames {
		h := make([]byte, headerSize)
		n, fds := recvSome(t, r.b, one)
		require.Equal(t, 1, n)
		h[0] = one[0]
		rest := recvFull(t, r.b, h[1:])
		require.Empty(t, rest, "frame %d: descriptors came with the header's later bytes", i)
		require.Equal(t, f.header(), h, "frame %d", i)
		require.Len(t, fds, f.nfds, "frame %d: descriptors with its first byte", i)
		checkTags(t, fds, fmt.Sprint(i))
		if f.size > 0 {
			p := make([]byte, f.size)
			stray := recvFull(t, r.b, p)
			require.Empty(t, stray, "frame %d: descriptors came with the payload", i)
			require.Equal(t, payload(i, f.size), p, "frame %d", i)
		}
	}
	n, _ := recvSome(t, r.b, one)
	assert.Zero(t, n, "the sender's end of stream did not come through")
	require.NoError(t, <-sent)
	unix.Close(r.b)
	r.b = -1
	// b's program closed with nothing unread: the relay ends cleanly.
	assert.NoError(t, r.wait(t))
}

// Half-closes carry over each way, and each direction goes on after the
// other ended.
func TestHalfCloseEachWay(t *testing.T) {
	for _, first := range []string{"a", "b"} {
		t.Run("first "+first, func(t *testing.T) {
			r := newRig(t)
			r.start()
			x, y := r.a, r.b
			if first == "b" {
				x, y = r.b, r.a
			}
			sendRights(t, x, []byte("last words"), nil)
			require.NoError(t, unix.Shutdown(x, unix.SHUT_WR))
			buf := make([]byte, 10)
			recvFull(t, y, buf)
			assert.Equal(t, "last words", string(buf))
			n, _ := recvSome(t, y, buf)
			assert.Zero(t, n, "no end of stream after the half-close")

			// The other way still works, descriptors included.
			fds := memfds(t, 2, "reply")
			sendRights(t, y, []byte("reply"), fds)
			closeAll(fds)
			require.NoError(t, unix.Shutdown(y, unix.SHUT_WR))
			n, got := recvSome(t, x, buf)
			assert.Equal(t, "reply", string(buf[:n]))
			checkTags(t, got, "reply")
			n, _ = recvSome(t, x, buf)
			assert.Zero(t, n)
			assert.NoError(t, r.wait(t))
		})
	}
}

// A program that dies half-way through a message: the other gets the
// half it sent, then the end of the stream; a silent peer on the other
// side does not keep the relay alive.
func TestPeerDiesMidMessage(t *testing.T) {
	r := newRig(t)
	r.start()
	f := frame{size: 1000, nfds: 1}
	fds := memfds(t, 1, "half")
	sendRights(t, r.a, append(f.header(), payload(0, 400)...), fds)
	closeAll(fds)
	unix.Close(r.a)
	r.a = -1

	fb := os.NewFile(uintptr(r.b), "b")
	r.b = -1 // fb owns it now
	got, err := io.ReadAll(fb)
	fb.Close()
	require.NoError(t, err)
	assert.Equal(t, append(f.header(), payload(0, 400)...), got)
	assert.NoError(t, r.wait(t))
}

// When one program closes altogether, the relay stops reading the other's
// socket, whose sends then fail as on a direct connection.
func TestHangUpEndsTheOtherWay(t *testing.T) {
	r := newRig(t)
	r.start()
	unix.Close(r.a)
	r.a = -1
	buf := make([]byte, 1)
	n, _ := recvSome(t, r.b, buf)
	assert.Zero(t, n)
	assert.NoError(t, r.wait(t))
	_, err := unix.SendmsgN(r.b, []byte("anyone?"), nil, nil, unix.MSG_NOSIGNAL)
	assert.ErrorIs(t, err, syscall.EPIPE)
}

// A program that closes with data unread makes the relay's read of its
// socket fail with ECONNRESET: PeerGone says that is the program's doing.
func TestResetIsPeerGone(t *testing.T) {
	r := newRig(t)
	r.start()
	sendRights(t, r.b, []byte("never read"), nil)
	// Wait until the relay has handed it to a, then close a unread.
	pfd := []unix.PollFd{{Fd: int32(r.a), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, int(waitFor/time.Millisecond))
	require.NoError(t, err)
	require.Equal(t, 1, n, "the data never reached a")
	unix.Close(r.a)
	r.a = -1
	err = r.wait(t)
	require.Error(t, err)
	assert.True(t, PeerGone(err), "%v", err)
	var re *Error
	require.True(t, errors.As(err, &re))
	assert.Equal(t, "read", re.Op)
	assert.Equal(t, "a", re.End)
}

// A sender may not pass more than SCM_MAX_FD descriptors in one message:
// the kernel refuses it there, and the relay goes on undisturbed.
func TestTooManyDescriptorsRefusedAtTheSender(t *testing.T) {
	r := newRig(t)
	r.start()
	fds := memfds(t, scm.MaxFD+1, "many")
	_, err := unix.SendmsgN(r.a, []byte("x"), unix.UnixRights(fds...), nil, unix.MSG_NOSIGNAL)
	assert.ErrorIs(t, err, syscall.EINVAL)
	sendRights(t, r.a, []byte("y"), fds[:scm.MaxFD])
	closeAll(fds)
	buf := make([]byte, 1)
	n, got := recvSome(t, r.b, buf)
	assert.Equal(t, "y", string(buf[:n]))
	assert.Len(t, got, scm.MaxFD)
	checkTags(t, got, "many")
}

// A program that floods while the other reads nothing: the relay holds at
// most its buffer, the sockets' queues fill, and the sender is pushed back
// (its nonblocking send says EAGAIN) instead of the relay growing.
func TestFloodIsPushedBack(t *testing.T) {
	r := newRig(t)
	r.start()
	require.NoError(t, unix.SetNonblock(r.a, true))
	block := make([]byte, 64<<10)
	total := 0
	deadline := time.Now().Add(waitFor)
	for {
		n, err := unix.Write(r.a, block)
		if err == unix.EAGAIN {
			// The relay may still be draining a; give it a moment and
			// look again, until a stays full.
			time.Sleep(50 * time.Millisecond)
			if n, err = unix.Write(r.a, block); err == unix.EAGAIN {
				break
			}
		}
		require.NoError(t, err)
		total += n
		require.True(t, time.Now().Before(deadline), "sends never blocked after %d bytes", total)
	}
	// Two sockets' queues and one buffer: a few MiB at most.
	assert.Less(t, total, 16<<20, "the relay took far more than its buffer")

	// Idle while blocked: the relay's CPU time stays near zero.
	var before, after unix.Rusage
	require.NoError(t, unix.Getrusage(unix.RUSAGE_SELF, &before))
	time.Sleep(300 * time.Millisecond)
	require.NoError(t, unix.Getrusage(unix.RUSAGE_SELF, &after))
	used := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) * time.Nanosecond
	assert.Less(t, used, 150*time.Millisecond, "the relay spins while blocked")

	// Everything arrives once b reads.
	require.NoError(t, unix.Shutdown(r.a, unix.SHUT_WR))
	var wg sync.WaitGroup
	wg.Add(1)
	var got int64
	go func() {
		defer wg.Done()
		fb := os.NewFile(uintptr(r.b), "b")
		got, _ = io.Copy(io.Discard, fb)
		fb.Close()
	}()
	wg.Wait()
	r.b = -1
	assert.Equal(t, int64(total), got)
}

// The relay closes every descriptor it received and every one of its own.
func TestNoDescriptorLeaks(t *testing.T) {
	before, err := testutil.CountFDs()
	require.NoError(t, err)
	func() {
		r := newRig(t)
		r.start()
		fds := memfds(t, 8, "leak")
		sendRights(t, r.a, []byte("x"), fds)
		closeAll(fds)
		buf := make([]byte, 1)
		_, got := recvSome(t, r.b, buf)
		checkTags(t, got, "leak")
		unix.Close(r.a)
		unix.Close(r.b)
		r.a, r.b = -1, -1
		r.wait(t)
		r.ra.Close()
		r.rb.Close()
	}()
	after, err := testutil.CountFDs()
	require.NoError(t, err)
	assert.Equal(t, before, after)
}

// The kernel facts the reader relies on (recv_linux.go): a peek without
// control room reports MSG_CTRUNC for a send with descriptors anywhere in
// the queue, and stops copying at that send's end; a consuming read brings
// the descriptors with the first read that touches the send. A kernel that
// changes them fails here, not in a relay.
func TestKernelFactsTheReaderNeeds(t *testing.T) {
	a, b := socketPair(t)
	defer unix.Close(a)
	defer unix.Close(b)
	fds := memfds(t, 1, "k")
	sendRights(t, a, []byte("0123456789"), nil)
	sendRights(t, a, []byte("abcdefghij"), fds)
	sendRights(t, a, []byte("KLMNOPQRST"), nil)
	closeAll(fds)

	buf := make([]byte, 100)
	n, rights, err := peek(b, buf[:1])
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.True(t, rights, "a one-byte peek sees the descriptors queued behind it")
	n, rights, err = peek(b, buf)
	require.NoError(t, err)
	assert.True(t, rights)
	assert.Equal(t, 20, n, "a peek stops at the end of the send with descriptors")

	for i := 0; i < 10; i++ {
		n, got := recvSome(t, b, buf[:1])
		require.Equal(t, 1, n)
		require.Empty(t, got, "byte %d", i)
	}
	n, got := recvSome(t, b, buf[:1])
	require.Equal(t, 1, n)
	assert.Equal(t, "a", string(buf[:1]))
	checkTags(t, got, "k")
	n, rights, err = peek(b, buf)
	require.NoError(t, err)
	assert.False(t, rights, "descriptors once taken are gone from the queue")
	assert.Equal(t, 19, n)
}

// A receiver that goes while a bulk stream is spliced to it: the relay
// ends with the peer gone (EPIPE or ECONNRESET), and the process lives on
// (the kernel's SIGPIPE for a splice is the Go runtime's to ignore).
func TestBulkReceiverGoes(t *testing.T) {
	r := newRig(t)
	r.start()
	block := make([]byte, 256<<10)
	sent := make(chan error, 1)
	go func() {
		for i := 0; i < 64; i++ {
			if _, err := unix.Write(r.a, block); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	buf := make([]byte, 64<<10)
	_, err := unix.Read(r.b, buf)
	require.NoError(t, err)
	unix.Close(r.b)
	r.b = -1
	err = r.wait(t)
	require.Error(t, err)
	assert.True(t, PeerGone(err), "%v", err)
	// The sender is told too, once the relay stops reading.
	assert.ErrorIs(t, <-sent, syscall.EPIPE)
}
