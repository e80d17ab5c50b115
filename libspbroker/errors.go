package libspbroker

import (
	"errors"
	"fmt"
)

// The Op of the *net.OpError values this package returns: which step of
// getting a pair failed.
const (
	OpDial    = "dial"    // connecting to the broker (GetPair, Dial)
	OpConnect = "connect" // connecting to the broker (Connect)
	OpSend    = "send"    // sending GET_PAIR, or checking what it would send
	OpReceive = "receive" // receiving SET_PAIR and its descriptor
)

// ErrProtocol matches every protocol violation: a message that breaks one
// of the protocol's rules, whichever side sent it.
var ErrProtocol = errors.New("socketpair broker protocol error")

// protocolKind is a kind of protocol violation; each one unwraps to
// ErrProtocol, so errors.Is(err, ErrProtocol) holds for all of them.
type protocolKind struct{ text string }

func (k *protocolKind) Error() string { return k.text }
func (k *protocolKind) Unwrap() error { return ErrProtocol }

// Kinds of protocol violation, in the order Validate checks them.
var (
	ErrVersion    error = &protocolKind{"unsupported protocol version"}
	ErrFlags      error = &protocolKind{"reserved flag bits set"}
	ErrRequest    error = &protocolKind{"invalid request type"}
	ErrSize       error = &protocolKind{"wrong payload size"}
	ErrFDCount    error = &protocolKind{"wrong number of descriptors"}
	ErrUnexpected error = &protocolKind{"unexpected request type"}
	ErrMode       error = &protocolKind{"invalid pairing mode"}
	ErrKeyLength  error = &protocolKind{"key length out of range 1..1024"}

	// ErrPayload is a SET_PAIR whose 64-bit payload is not zero. Validate
	// does not check it (the protocol's rules do not list it); the client's
	// receive path does.
	ErrPayload error = &protocolKind{"non-zero SET_PAIR payload"}

	// ErrLength is a message of the wrong number of bytes: cut short by the
	// end of the stream, or followed by more data than padding.
	ErrLength error = &protocolKind{"wrong message length"}
)

// Caller errors: nothing was sent.
var (
	ErrInvalidKey  = errors.New("key must be 1 to 1024 bytes")
	ErrInvalidMode = errors.New("invalid pairing mode")
)

// ProtocolError describes a message that broke a rule of the protocol:
// which field, the value found, and the kind of violation in Err.
type ProtocolError struct {
	Field string // "version", "flags", "request", "size", "descriptors", "mode", "key_len", "u64" or "length"
	Value uint64 // the offending value
	Err   error  // one of ErrVersion, ErrFlags, ... ErrPayload, ErrLength
}

func (e *ProtocolError) Error() string {
	switch e.Field {
	case "flags", "request":
		if e.Err == ErrUnexpected {
			return fmt.Sprintf("spbroker: %v: %s %v", e.Err, e.Field, Request(e.Value))
		}
		return fmt.Sprintf("spbroker: %v: %s 0x%x", e.Err, e.Field, e.Value)
	}
	return fmt.Sprintf("spbroker: %v: %s %d", e.Err, e.Field, e.Value)
}

// Unwrap returns the kind of violation.
func (e *ProtocolError) Unwrap() error { return e.Err }
