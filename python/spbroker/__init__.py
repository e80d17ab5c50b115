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

from . import client, errors, protocol
from .client import Key, PathArg, connect, default_socket_path, get_pair, receive_set_pair, send_get_pair
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

# The public names are each module's own; the imports above bring them
# here by name for readers and type checkers.
__all__ = ["__version__"]
__all__ += protocol.__all__
__all__ += client.__all__
__all__ += errors.__all__
