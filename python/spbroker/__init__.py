"""spbroker: a pure-Python client of the SocketPair Broker (One Socket).

A SocketPair Broker listens on one Unix stream socket. Two clients that
send a GET_PAIR with the same key and compatible modes (CLIENT with
SERVER, or NONE with NONE) each receive one end of a fresh socketpair in a
SET_PAIR, and from then on talk to each other directly.

This package mirrors the Go package ``libspbroker``: the wire format
(``Message``, ``encode``, ``decode``, ``validate`` and the constants) and a
client (``get_pair``, and its steps ``connect``, ``send_get_pair`` and
``receive_set_pair`` for event loops). It needs only the standard library
and Linux.

    import spbroker

    with spbroker.get_pair("/run/one.socket", b"my-key", spbroker.Mode.CLIENT) as peer:
        peer.sendall(b"hello")

Messages go out as 1044 bytes, as the original C implementation sends
them; replies of 1040 or 1044 bytes are accepted.
"""

from .client import Key, PathArg, connect, get_pair, receive_set_pair, send_get_pair
from .errors import (
    BrokerClosedError,
    DescriptorCountError,
    FlagsError,
    IncompleteMessageError,
    InvalidKeyError,
    InvalidModeError,
    KeyLengthError,
    LengthError,
    ModeError,
    PayloadError,
    ProtocolError,
    RequestError,
    SizeError,
    UnexpectedTypeError,
    VersionError,
)
from .protocol import (
    DOCUMENTED_MESSAGE_SIZE,
    GET_PAIR_PAYLOAD_SIZE,
    HEADER_SIZE,
    MAX_FDS,
    MAX_KEY_LENGTH,
    MESSAGE_SIZE,
    PROTOCOL_VERSION,
    SET_PAIR_PAYLOAD_SIZE,
    VERSION_MASK,
    Message,
    Mode,
    Request,
    decode,
    encode,
    new_get_pair,
    new_set_pair,
    validate,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # protocol
    "PROTOCOL_VERSION",
    "VERSION_MASK",
    "MAX_KEY_LENGTH",
    "MAX_FDS",
    "HEADER_SIZE",
    "GET_PAIR_PAYLOAD_SIZE",
    "SET_PAIR_PAYLOAD_SIZE",
    "DOCUMENTED_MESSAGE_SIZE",
    "MESSAGE_SIZE",
    "Request",
    "Mode",
    "Message",
    "new_get_pair",
    "new_set_pair",
    "encode",
    "decode",
    "validate",
    # client
    "Key",
    "PathArg",
    "connect",
    "send_get_pair",
    "receive_set_pair",
    "get_pair",
    # errors
    "ProtocolError",
    "VersionError",
    "FlagsError",
    "RequestError",
    "SizeError",
    "DescriptorCountError",
    "UnexpectedTypeError",
    "ModeError",
    "KeyLengthError",
    "PayloadError",
    "LengthError",
    "BrokerClosedError",
    "IncompleteMessageError",
    "InvalidKeyError",
    "InvalidModeError",
]
