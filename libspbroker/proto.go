package libspbroker

import (
	"encoding/binary"
	"fmt"
)

// Request is a message type (enum sp_broker_request).
type Request uint32

// Message types. Only GetPair and SetPair are valid on the wire.
const (
	RequestNone    Request = 0
	RequestGetPair Request = 1
	RequestSetPair Request = 2
	RequestMax     Request = 3
)

func (r Request) String() string {
	switch r {
	case RequestNone:
		return "NONE"
	case RequestGetPair:
		return "GET_PAIR"
	case RequestSetPair:
		return "SET_PAIR"
	}
	return fmt.Sprintf("Request(%d)", uint32(r))
}

// Mode is the pairing mode of a GET_PAIR (enum sp_broker_get_pair_mode).
// ModeNone pairs only with ModeNone; ModeClient pairs only with ModeServer.
type Mode uint16

// Pairing modes. ModeMax is not valid on the wire.
const (
	ModeNone   Mode = 0
	ModeClient Mode = 1
	ModeServer Mode = 2
	ModeMax    Mode = 3
)

func (m Mode) String() string {
	switch m {
	case ModeNone:
		return "none"
	case ModeClient:
		return "client"
	case ModeServer:
		return "server"
	}
	return fmt.Sprintf("Mode(%d)", uint16(m))
}

// Peer returns the mode a waiting client must have to pair with m.
func (m Mode) Peer() Mode {
	switch m {
	case ModeClient:
		return ModeServer
	case ModeServer:
		return ModeClient
	}
	return m
}

// Wire-format constants (proto.h).
const (
	ProtocolVersion = 0x1 // SP_BROKER_PROTOCOL_VERSION
	VersionMask     = 0xf // SP_BROKER_PROTOCOL_VERSION_MASK
	MaxKeyLength    = 1024
	MaxFDs          = 64 // SP_BROKER_PROTOCOL_MAX_FDS

	// HeaderSize is the size of request, flags and size together.
	HeaderSize = 12
	// GetPairPayloadSize and SetPairPayloadSize are the values of the size
	// field for each message type.
	GetPairPayloadSize = 1028
	SetPairPayloadSize = 8

	// DocumentedMessageSize is the message size in the protocol's document:
	// the header and the 1028-byte payload, packed.
	DocumentedMessageSize = HeaderSize + GetPairPayloadSize // 1040
	// MessageSize is what the original implementation puts on the wire
	// (SP_BROKER_MESSAGE_SIZE): its payload union is padded to 1032 bytes.
	MessageSize = DocumentedMessageSize + 4 // 1044
)

// Field offsets within a message.
const (
	offRequest = 0
	offFlags   = 4
	offSize    = 8
	offPayload = 12
	offMode    = 12
	offKeyLen  = 14
	offKey     = 16
)

// Message is one protocol message in decoded form (struct sp_broker_msg
// without its descriptors). Fields hold what was on the wire, valid or not;
// use [Validate] before trusting them.
type Message struct {
	Request Request
	Flags   uint32
	Size    uint32

	// GET_PAIR payload.
	Mode   Mode
	KeyLen uint16
	Key    [MaxKeyLength]byte

	// SET_PAIR payload: the payload's first 8 bytes, which must be zero.
	U64 uint64
}

// NewGetPair returns a GET_PAIR message for key and mode. It does not check
// the key's length: Validate does.
func NewGetPair(key []byte, mode Mode) *Message {
	m := &Message{
		Request: RequestGetPair,
		Flags:   ProtocolVersion,
		Size:    GetPairPayloadSize,
		Mode:    mode,
		KeyLen:  uint16(len(key)),
	}
	copy(m.Key[:], key)
	return m
}

// NewSetPair returns a SET_PAIR message.
func NewSetPair() *Message {
	return &Message{Request: RequestSetPair, Flags: ProtocolVersion, Size: SetPairPayloadSize}
}

// Version returns the protocol version carried in Flags.
func (m *Message) Version() uint32 { return m.Flags & VersionMask }

// PairKey returns the meaningful bytes of the GET_PAIR key, clipped to the
// key buffer if KeyLen is out of range. The slice aliases m.Key.
func (m *Message) PairKey() []byte {
	n := int(m.KeyLen)
	if n > MaxKeyLength {
		n = MaxKeyLength
	}
	return m.Key[:n]
}

// Encode writes m in wire format to b, which must hold at least MessageSize
// bytes, and returns MessageSize. The 4 padding bytes and the key bytes
// past KeyLen are zero; a SET_PAIR's payload is U64 followed by zeros.
func (m *Message) Encode(b []byte) int {
	b = b[:MessageSize]
	ne := binary.NativeEndian
	ne.PutUint32(b[offRequest:], uint32(m.Request))
	ne.PutUint32(b[offFlags:], m.Flags)
	ne.PutUint32(b[offSize:], m.Size)
	p := b[offPayload:]
	clear(p)
	if m.Request == RequestGetPair {
		ne.PutUint16(b[offMode:], uint16(m.Mode))
		ne.PutUint16(b[offKeyLen:], m.KeyLen)
		copy(b[offKey:], m.PairKey())
	} else {
		ne.PutUint64(p, m.U64)
	}
	return MessageSize
}

// AppendEncode appends the wire form of m (MessageSize bytes) to b.
func (m *Message) AppendEncode(b []byte) []byte {
	n := len(b)
	b = append(b, make([]byte, MessageSize)...)
	m.Encode(b[n:])
	return b
}

// Decode parses a message from b, which must hold DocumentedMessageSize
// (1040) to MessageSize (1044) bytes: bytes past 1040 are padding and ignored.
// Both payload views are decoded whatever the request type; key bytes past
// KeyLen are zeroed. Decode checks only the length: call Validate next.
func (m *Message) Decode(b []byte) error {
	if len(b) < DocumentedMessageSize || len(b) > MessageSize {
		return &ProtocolError{Field: "length", Value: uint64(len(b)), Err: ErrLength}
	}
	ne := binary.NativeEndian
	m.Request = Request(ne.Uint32(b[offRequest:]))
	m.Flags = ne.Uint32(b[offFlags:])
	m.Size = ne.Uint32(b[offSize:])
	m.Mode = Mode(ne.Uint16(b[offMode:]))
	m.KeyLen = ne.Uint16(b[offKeyLen:])
	m.U64 = ne.Uint64(b[offPayload:])
	n := copy(m.Key[:], b[offKey : offKey+MaxKeyLength][:min(int(m.KeyLen), MaxKeyLength)])
	clear(m.Key[n:])
	return nil
}

// payloadSize is the value the size field must have for each request.
func payloadSize(r Request) uint32 {
	if r == RequestGetPair {
		return GetPairPayloadSize
	}
	return SetPairPayloadSize
}

// fdCount is the number of descriptors each request carries.
func fdCount(r Request) int {
	if r == RequestSetPair {
		return 1
	}
	return 0
}

// Validate checks m, received with nfds descriptors, against the protocol's
// rules in the protocol's order: version, other flag bits, request, size,
// descriptor count, expected type, and for GET_PAIR the mode and key
// length. The type check applies when expected is not nil: a non-nil empty
// list accepts no type, as a C caller's empty array does. It returns nil or a *ProtocolError that
// errors.Is matches against ErrVersion, ErrFlags, ... and ErrProtocol.
func Validate(m *Message, nfds int, expected ...Request) error {
	if v := m.Flags & VersionMask; v != ProtocolVersion {
		return &ProtocolError{Field: "version", Value: uint64(v), Err: ErrVersion}
	}
	if f := m.Flags &^ VersionMask; f != 0 {
		return &ProtocolError{Field: "flags", Value: uint64(m.Flags), Err: ErrFlags}
	}
	if m.Request != RequestGetPair && m.Request != RequestSetPair {
		return &ProtocolError{Field: "request", Value: uint64(m.Request), Err: ErrRequest}
	}
	if m.Size != payloadSize(m.Request) {
		return &ProtocolError{Field: "size", Value: uint64(m.Size), Err: ErrSize}
	}
	if nfds != fdCount(m.Request) {
		return &ProtocolError{Field: "descriptors", Value: uint64(nfds), Err: ErrFDCount}
	}
	if expected != nil && !isExpected(m.Request, expected) {
		return &ProtocolError{Field: "request", Value: uint64(m.Request), Err: ErrUnexpected}
	}
	if m.Request == RequestGetPair {
		if m.Mode >= ModeMax {
			return &ProtocolError{Field: "mode", Value: uint64(m.Mode), Err: ErrMode}
		}
		if m.KeyLen < 1 || m.KeyLen > MaxKeyLength {
			return &ProtocolError{Field: "key_len", Value: uint64(m.KeyLen), Err: ErrKeyLength}
		}
	}
	return nil
}

func isExpected(r Request, expected []Request) bool {
	for _, e := range expected {
		if e == r {
			return true
		}
	}
	return false
}

// CheckKey reports whether key has a valid length for a GET_PAIR (1..1024).
func CheckKey(key []byte) error {
	if len(key) < 1 || len(key) > MaxKeyLength {
		return fmt.Errorf("spbroker: key of %d bytes: %w", len(key), ErrInvalidKey)
	}
	return nil
}

// CheckMode reports whether mode is valid for a GET_PAIR.
func CheckMode(mode Mode) error {
	if mode >= ModeMax {
		return fmt.Errorf("spbroker: %v: %w", mode, ErrInvalidMode)
	}
	return nil
}
