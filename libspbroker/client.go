//go:build linux

package libspbroker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/scm"

	"github.com/one-socket/one-socket/internal/paths"
)

// restTimeout bounds the wait for the rest of a message once its first
// bytes have arrived. The broker writes a message with one sendmsg, so the
// rest is normally there already; a peer that stops half-way is broken, and
// an event-loop host must not be stuck on it. A variable for the tests.
var restTimeout = time.Second

// Conn is a client's connection to a SocketPair Broker.
//
// A Conn is safe for concurrent use to the extent a net.Conn is: Close and
// SetDeadline may be called while SendGetPair or ReceiveSetPair runs.
type Conn struct {
	c  *net.UnixConn
	rc syscall.RawConn

	mu       sync.Mutex
	deadline time.Time // the caller's deadline, restored after a bounded wait
}

// Dial connects to the broker socket at path. A path starting with '@'
// names a socket in Linux's abstract namespace.
func Dial(path string) (*Conn, error) {
	return DialContext(context.Background(), path)
}

// DialContext connects to the broker socket at path; ctx bounds the connect
// only, not the Conn's later use.
func DialContext(ctx context.Context, path string) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	uc := nc.(*net.UnixConn)
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, err
	}
	return &Conn{c: uc, rc: rc}, nil
}

// Close closes the connection to the broker. A broker that holds the
// connection's GET_PAIR forgets it; a pending call returns an error.
func (c *Conn) Close() error {
	return c.c.Close()
}

// SetDeadline sets the deadline for c's calls, as net.Conn's SetDeadline
// does. The zero time means none.
func (c *Conn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	return c.c.SetDeadline(t)
}

// SendGetPair sends a GET_PAIR for key (1 to 1024 bytes) and mode. An
// invalid key or mode is reported before anything is sent.
func (c *Conn) SendGetPair(key []byte, mode Mode) error {
	var buf [MessageSize]byte
	if err := encodeGetPair(&buf, key, mode); err != nil {
		return c.opError(OpSend, err)
	}
	sent := 0
	var serr error
	err := c.rc.Write(func(s uintptr) bool {
		for sent < len(buf) {
			n, err := unix.SendmsgN(int(s), buf[sent:], nil, nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
			switch err {
			case nil:
				sent += n
			case unix.EINTR:
			case unix.EAGAIN:
				return false // wait in the runtime's poller
			default:
				serr = os.NewSyscallError("sendmsg", err)
				return true
			}
		}
		return true
	})
	if err != nil {
		err = rawErr(err)
	} else {
		err = serr
	}
	return c.opError(OpSend, err)
}

// ReceiveSetPair waits for the broker's SET_PAIR and returns the descriptor
// it carried as a File, which the caller owns. The File is one end of a
// connected stream socketpair (net.FileConn makes a net.Conn of a copy).
// ReceiveSetPair does not close c. Its errors are those of the package-level
// ReceiveSetPair, and deadline errors.
func (c *Conn) ReceiveSetPair() (*os.File, error) {
	bounded := false
	fd, err := readSetPair(func(p, oob []byte, st stage) (n, oobn, flags int, err error) {
		if st == stageRest && !bounded {
			// The rest of the message gets restTimeout, or less if the
			// caller's deadline comes first.
			c.mu.Lock()
			rest := time.Now().Add(restTimeout)
			if c.deadline.IsZero() || rest.Before(c.deadline) {
				c.c.SetReadDeadline(rest)
				bounded = true
			}
			c.mu.Unlock()
		}
		var serr error
		rerr := c.rc.Read(func(s uintptr) bool {
			n, oobn, flags, serr = recvmsg(int(s), p, oob, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
			// Padding is taken only if it is there already.
			return serr != unix.EAGAIN || st == stagePadding
		})
		switch {
		case rerr != nil:
			if bounded && errors.Is(rerr, os.ErrDeadlineExceeded) {
				return 0, 0, 0, stalledError{}
			}
			return 0, 0, 0, rawErr(rerr)
		case serr != nil:
			return 0, 0, 0, os.NewSyscallError("recvmsg", serr)
		}
		return n, oobn, flags, nil
	})
	if bounded {
		c.mu.Lock()
		c.c.SetReadDeadline(c.deadline)
		c.mu.Unlock()
	}
	if err != nil {
		return nil, c.opError(OpReceive, err)
	}
	return os.NewFile(uintptr(fd), "spbroker-peer"), nil
}

// opError wraps err, if any, with op and c's broker address.
func (c *Conn) opError(op string, err error) error {
	if err == nil {
		return nil
	}
	return &net.OpError{Op: op, Net: "unix", Addr: c.c.RemoteAddr(), Err: err}
}

// rawErr unwraps the *net.OpError a RawConn wraps around its errors
// (Op "raw-read"/"raw-write"), which the caller's own OpError replaces.
func rawErr(err error) error {
	if oe, ok := err.(*net.OpError); ok {
		return oe.Err
	}
	return err
}

// GetPair asks the broker at path for the peer of key and mode and returns
// the descriptor received as a File, which the caller owns. It dials, sends
// GET_PAIR, waits for SET_PAIR and closes the broker connection. Canceling
// ctx closes the broker connection at once, so the broker forgets the
// request, and GetPair returns an error wrapping ctx.Err().
//
// GetPair rides out a broker restart: when the connection ends without a
// SET_PAIR, or cannot be made because no broker listens yet, it asks again,
// waiting longer each time (10ms, doubling, up to a second), until ctx
// ends; see [Config] for the errors it retries and for turning that off.
// A broker that refuses a request (its policy, a quota, --max-wait,
// one-socketctl drop) only closes the connection, which looks the same to
// the client: such a request is asked again until ctx ends, and the error
// then, a [*RetryError], wraps the last refusal. GetPair is
// (*Config)(nil).GetPair.
func GetPair(ctx context.Context, path string, key []byte, mode Mode) (*os.File, error) {
	return (*Config)(nil).GetPair(ctx, path, key, mode)
}

// getPairOnce is one attempt of GetPair, on a key and mode already
// checked: dial, send, receive, close. It returns the step it got to and,
// if ctx ended during the attempt, an error wrapping ctx.Err().
func getPairOnce(ctx context.Context, addr *net.UnixAddr, key []byte, mode Mode) (string, *os.File, error) {
	op := OpDial
	f, err := func() (*os.File, error) {
		c, err := DialContext(ctx, addr.Name)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		stop := context.AfterFunc(ctx, func() { c.Close() })
		defer stop()
		op = OpSend
		if err := c.SendGetPair(key, mode); err != nil {
			return nil, err
		}
		op = OpReceive
		return c.ReceiveSetPair()
	}()
	return op, f, err
}

// GetPairConn is GetPair for a caller that wants the connection to its
// peer as a *net.UnixConn, which the caller owns and closes. It is
// (*Config)(nil).GetPairConn.
func GetPairConn(ctx context.Context, path string, key []byte, mode Mode) (*net.UnixConn, error) {
	return (*Config)(nil).GetPairConn(ctx, path, key, mode)
}

// DefaultSocketPath returns the broker socket a program should use when
// nothing else says, as the daemon decides it: $ONE_SOCKET_PATH if set,
// else /run/one.socket for root, else $XDG_RUNTIME_DIR/one.socket. It
// fails for a user other than root without XDG_RUNTIME_DIR.
func DefaultSocketPath() (string, error) {
	return paths.BrokerSocket("", os.Getenv, os.Geteuid())
}

func checkGetPair(key []byte, mode Mode) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	return CheckMode(mode)
}

// encodeGetPair checks key and mode and writes their GET_PAIR to b.
func encodeGetPair(b *[MessageSize]byte, key []byte, mode Mode) error {
	if err := checkGetPair(key, mode); err != nil {
		return err
	}
	m := Message{
		Request: RequestGetPair,
		Flags:   ProtocolVersion,
		Size:    GetPairPayloadSize,
		Mode:    mode,
		KeyLen:  uint16(len(key)),
	}
	copy(m.Key[:], key)
	m.Encode(b[:])
	return nil
}

// stage tells a recvFunc how long it may wait.
type stage int

const (
	stageFirst   stage = iota // nothing has arrived yet: wait as the caller's descriptor or Conn does
	stageRest                 // the message has started: wait at most restTimeout in all
	stagePadding              // the message is whole: take only bytes already queued, never wait
)

// recvFunc receives into p and oob as recvmsg(2) with MSG_CMSG_CLOEXEC does,
// waiting as st allows. It returns n == 0 and no error at end of file.
type recvFunc func(p, oob []byte, st stage) (n, oobn, flags int, err error)

// readSetPair reads one SET_PAIR through recv, however its bytes are split,
// and returns the one descriptor it carried, which the caller owns. It reads
// nothing past the message and its padding. On error it has closed every
// descriptor that arrived. Both the raw-descriptor and the Conn receive
// paths use it; they differ only in how recv waits.
func readSetPair(recv recvFunc) (fd int, err error) {
	var (
		buf   [MessageSize]byte
		oob   [scm.OOBSize]byte
		n     int
		fds   []int
		trunc bool
	)
	defer func() {
		if err != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}()
	take := func(oobn, flags int) {
		got, _ := scm.Rights(oob[:oobn]) // whatever else came is not ours to act on
		fds = append(fds, got...)
		trunc = trunc || flags&unix.MSG_CTRUNC != 0
	}
	for st := stageFirst; n < DocumentedMessageSize; st = stageRest {
		m, oobn, flags, err := recv(buf[n:], oob[:], st)
		take(oobn, flags)
		if err != nil {
			return -1, err
		}
		if m == 0 {
			return -1, &closedError{got: n}
		}
		n += m
	}
	if n < MessageSize {
		// The padding belongs to this message if it is there; a failure to
		// read it (EAGAIN, end of file, a reset) does not spoil the message.
		m, oobn, flags, err := recv(buf[n:], oob[:], stagePadding)
		take(oobn, flags)
		if err == nil {
			n += m
		}
	}

	var msg Message
	msg.Decode(buf[:n]) // cannot fail: 1040 <= n <= 1044
	nfds := len(fds)
	if trunc {
		// Descriptors were dropped (no room, or refused by a security
		// module): the true count is unknown but is not the one received.
		nfds = max(nfds+1, 2)
	}
	if err := Validate(&msg, nfds, RequestSetPair); err != nil {
		if trunc && errors.Is(err, ErrFDCount) {
			err = fmt.Errorf("%w (control data truncated)", &ProtocolError{Field: "descriptors", Value: uint64(len(fds)), Err: ErrFDCount})
		}
		return -1, err
	}
	if msg.U64 != 0 {
		return -1, &ProtocolError{Field: "u64", Value: msg.U64, Err: ErrPayload}
	}
	return fds[0], nil
}

// closedError reports that the broker closed the connection before a whole
// SET_PAIR arrived: typically it refused the request or shut down. It
// matches both io.ErrUnexpectedEOF and, for callers that need an errno such
// as the C library, unix.ECONNRESET.
type closedError struct{ got int }

func (e *closedError) Error() string {
	if e.got == 0 {
		return "spbroker: broker closed the connection without a reply"
	}
	return fmt.Sprintf("spbroker: broker closed the connection after %d of %d bytes", e.got, DocumentedMessageSize)
}

func (e *closedError) Unwrap() []error { return []error{io.ErrUnexpectedEOF, unix.ECONNRESET} }

// stalledError reports that a message started but its rest did not arrive
// within restTimeout. It matches unix.ETIMEDOUT and os.ErrDeadlineExceeded.
type stalledError struct{}

func (stalledError) Error() string {
	return fmt.Sprintf("spbroker: message incomplete after %v", restTimeout)
}

func (stalledError) Unwrap() []error { return []error{unix.ETIMEDOUT, os.ErrDeadlineExceeded} }
func (stalledError) Timeout() bool   { return true }
