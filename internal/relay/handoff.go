package relay

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/scm"
)

// Handoff lets two one-socketctl processes that got a brokered socket join
// their programs without staying in the data path: one sends its
// connection to its program over the brokered socket, and the other gives
// that connection to its own program (or, if it too holds a connection to
// a program, relays the two itself, so one relay remains instead of two).
//
// Both ends must opt in. HandoffKey changes the key they present to the
// broker, so a --handoff end pairs only with another --handoff end: a
// program that is not one-socketctl never pairs with it and never sees
// the hello, a byte it did not send.
//
// The exchange on the brokered socket: each end sends a 16-byte hello
// (magic "OSHO", version 1, its role, two zero bytes, a random nonce) and
// reads the other's, exactly 16 bytes, so that whatever a program sends
// after it stays queued for the program. The giver then sends one byte,
// 'C', carrying its connection with SCM_RIGHTS.

// HandoffSuffix is appended to the key of an end that opts in to Handoff.
const HandoffSuffix = "#handoff"

// HandoffKey returns the key a --handoff end presents to the broker.
func HandoffKey(key []byte) []byte {
	return append(append([]byte(nil), key...), HandoffSuffix...)
}

// A Role says what one end brings to a handoff.
type Role byte

const (
	// Takes: the end's program takes a connected socket as it is, so it
	// can be given any connection.
	Takes Role = 't'
	// Holds: the end holds a connection to its program (one it made to a
	// listening program, or accepted from a connecting one).
	Holds Role = 'h'
)

func (r Role) String() string {
	switch r {
	case Takes:
		return "takes a connection"
	case Holds:
		return "holds a connection"
	}
	return fmt.Sprintf("role %#x", byte(r))
}

const (
	helloSize    = 16
	helloVersion = 1
	giveByte     = 'C'
)

var helloMagic = []byte("OSHO")

// handoffTimeout bounds each read of the exchange: the other end is
// one-socketctl, which sends at once. A variable for the tests.
var handoffTimeout = 10 * time.Second

// A HandoffResult says how an end's program is to be joined.
type HandoffResult struct {
	// Gave: this end sent its connection to the other; nothing is left
	// for it to do but wait for its program.
	Gave bool
	// Conn, unless Gave, is the connection this end's program is to use:
	// given to a Takes end's program, relayed with a Holds end's own
	// connection. It is the brokered socket itself when both ends take
	// one. The caller owns it.
	Conn *net.UnixConn
}

// Handoff runs the exchange on the brokered socket conn, for an end of
// role role whose connection to its program is own (nil for Takes). It
// consumes conn: it either returns it as the result's Conn or closes it.
// own stays the caller's; after Gave the caller closes it, as the program's
// peer now lives in the other process.
func Handoff(conn *net.UnixConn, role Role, own *net.UnixConn) (HandoffResult, error) {
	res, err := handoff(conn, role, own)
	if err != nil || res.Conn != conn {
		conn.Close()
	}
	if err != nil {
		return HandoffResult{}, fmt.Errorf("handoff: %w", err)
	}
	return res, nil
}

func handoff(conn *net.UnixConn, role Role, own *net.UnixConn) (HandoffResult, error) {
	if (role == Holds) != (own != nil) {
		return HandoffResult{}, errors.New("a Holds end needs its connection, a Takes end has none")
	}
	var mine [helloSize]byte
	copy(mine[:], helloMagic)
	mine[4], mine[5] = helloVersion, byte(role)
	if _, err := rand.Read(mine[8:]); err != nil {
		return HandoffResult{}, err
	}
	if err := conn.SetDeadline(time.Now().Add(handoffTimeout)); err != nil {
		return HandoffResult{}, err
	}
	if _, err := conn.Write(mine[:]); err != nil {
		if PeerGone(err) {
			return HandoffResult{}, errClosedEarly
		}
		return HandoffResult{}, fmt.Errorf("sending the hello: %w", err)
	}
	theirs, err := readHello(conn)
	if err != nil {
		return HandoffResult{}, err
	}
	peer := Role(theirs[5])
	switch {
	case role == Takes && peer == Takes:
		// Both programs take a connected socket: the brokered one joins
		// them directly.
		return HandoffResult{Conn: conn}, conn.SetDeadline(time.Time{})
	case role == Takes:
		c, err := receiveConn(conn)
		return HandoffResult{Conn: c}, err
	case peer == Takes:
		return HandoffResult{Gave: true}, giveConn(conn, own)
	}
	// Both hold one: the larger nonce gives.
	switch bytes.Compare(mine[8:], theirs[8:]) {
	case 1:
		return HandoffResult{Gave: true}, giveConn(conn, own)
	case -1:
		c, err := receiveConn(conn)
		return HandoffResult{Conn: c}, err
	}
	return HandoffResult{}, errors.New("both ends drew the same nonce")
}

var errClosedEarly = errors.New("the other end closed before its hello: is it one-socketctl with --handoff?")

// readHello reads exactly the other end's hello and checks it.
func readHello(conn *net.UnixConn) ([]byte, error) {
	h := make([]byte, helloSize)
	for got := 0; got < helloSize; {
		// No room for control data: a hello carries none, and none that
		// follows may be taken with it.
		n, _, flags, _, err := conn.ReadMsgUnix(h[got:], nil)
		if err != nil {
			return nil, fmt.Errorf("reading the other end's hello: %w", err)
		}
		if n == 0 {
			return nil, errClosedEarly
		}
		if flags&unix.MSG_CTRUNC != 0 {
			return nil, errors.New("the other end's hello carried descriptors")
		}
		got += n
	}
	switch {
	case !bytes.Equal(h[:4], helloMagic):
		return nil, fmt.Errorf("the other end is not one-socketctl --handoff (it sent %q)", h)
	case h[4] != helloVersion:
		return nil, fmt.Errorf("the other end speaks handoff version %d, this one %d", h[4], helloVersion)
	case Role(h[5]) != Takes && Role(h[5]) != Holds:
		return nil, fmt.Errorf("the other end sent an unknown role %#x", h[5])
	}
	return h, nil
}

// giveConn sends own over conn.
func giveConn(conn, own *net.UnixConn) error {
	f, err := own.File()
	if err != nil {
		return err
	}
	defer f.Close()
	if _, _, err := conn.WriteMsgUnix([]byte{giveByte}, unix.UnixRights(int(f.Fd())), nil); err != nil {
		return fmt.Errorf("sending the connection: %w", err)
	}
	return nil
}

// receiveConn receives the other end's connection.
func receiveConn(conn *net.UnixConn) (*net.UnixConn, error) {
	b := make([]byte, 1)
	oob := make([]byte, scm.OOBSize)
	n, oobn, flags, _, err := conn.ReadMsgUnix(b, oob)
	if err != nil {
		return nil, fmt.Errorf("receiving the connection: %w", err)
	}
	fds, perr := parseRights(oob[:oobn])
	if perr == nil && (n != 1 || b[0] != giveByte || len(fds) != 1 || flags&unix.MSG_CTRUNC != 0) {
		perr = fmt.Errorf("the other end sent %d bytes and %d descriptors where one connection was due", n, len(fds))
	}
	if perr != nil {
		closeAll(fds)
		return nil, perr
	}
	typ, err := unix.GetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_STREAM {
		unix.Close(fds[0])
		return nil, errors.New("the other end sent a descriptor that is not a stream socket")
	}
	return scm.UnixConn(os.NewFile(uintptr(fds[0]), "handed-off connection"))
}
