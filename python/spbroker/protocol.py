"""The wire format of the SocketPair Broker Protocol, version 1.

A message is a 12-byte header (``request``, ``flags``, ``size``, each a
32-bit unsigned integer) and a payload, all in the host's byte order
(both ends are on one host; little-endian on x86-64 and arm64):

==========  ====  ==========================================================
offset      size  field
==========  ====  ==========================================================
0           4     ``request``: 1 GET_PAIR, 2 SET_PAIR
4           4     ``flags``: version 1 in bits 0-3, the other bits zero
8           4     ``size``: payload size, 1028 for GET_PAIR, 8 for SET_PAIR
12          2     GET_PAIR ``mode``: 0 NONE, 1 CLIENT, 2 SERVER
14          2     GET_PAIR ``key_len``: 1..1024
16          1024  GET_PAIR ``key``; bytes past ``key_len`` are zero
12          8     SET_PAIR ``u64``, which must be 0
1040        4     padding, zero
==========  ====  ==========================================================

The protocol's document stops at 1040 bytes; the original implementation
puts 1044 on the wire (its payload union is padded to 8 bytes). ``encode``
always produces 1044 bytes and ``decode`` accepts 1040 to 1044.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Iterable, Optional, Union

from .errors import (
    DescriptorCountError,
    FlagsError,
    KeyLengthError,
    LengthError,
    ModeError,
    RequestError,
    SizeError,
    UnexpectedTypeError,
    VersionError,
)

__all__ = [
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
]

PROTOCOL_VERSION = 0x1  #: SP_BROKER_PROTOCOL_VERSION
VERSION_MASK = 0xF  #: SP_BROKER_PROTOCOL_VERSION_MASK: the version's bits in flags
MAX_KEY_LENGTH = 1024  #: longest key; the shortest is 1 byte
MAX_FDS = 64  #: SP_BROKER_PROTOCOL_MAX_FDS, from the original headers

HEADER_SIZE = 12  #: request, flags and size together
GET_PAIR_PAYLOAD_SIZE = 1028  #: the size field of a GET_PAIR
SET_PAIR_PAYLOAD_SIZE = 8  #: the size field of a SET_PAIR
#: The message size in the protocol's document: header and payload, packed.
DOCUMENTED_MESSAGE_SIZE = HEADER_SIZE + GET_PAIR_PAYLOAD_SIZE  # 1040
#: What the original implementation sends (SP_BROKER_MESSAGE_SIZE).
MESSAGE_SIZE = DOCUMENTED_MESSAGE_SIZE + 4  # 1044

# Native byte order, standard sizes, no alignment: the C struct is packed.
_HEADER = struct.Struct("=III")
_GET_PAIR = struct.Struct("=HH")
_U64 = struct.Struct("=Q")
_OFF_PAYLOAD = 12
_OFF_KEY = 16


class Request(enum.IntEnum):
    """Message types (enum sp_broker_request). Only GET_PAIR and SET_PAIR
    are valid on the wire."""

    NONE = 0
    GET_PAIR = 1
    SET_PAIR = 2
    MAX = 3


class Mode(enum.IntEnum):
    """Pairing modes of a GET_PAIR (enum sp_broker_get_pair_mode).

    NONE pairs only with NONE; CLIENT pairs only with SERVER. MAX is not
    valid on the wire.
    """

    NONE = 0
    CLIENT = 1
    SERVER = 2
    MAX = 3

    @property
    def peer(self) -> "Mode":
        """The mode a waiting client must have to pair with this one."""
        if self is Mode.CLIENT:
            return Mode.SERVER
        if self is Mode.SERVER:
            return Mode.CLIENT
        return self

    def __str__(self) -> str:
        return self.name.lower()


def _payload_size(request: int) -> int:
    return GET_PAIR_PAYLOAD_SIZE if request == Request.GET_PAIR else SET_PAIR_PAYLOAD_SIZE


def _fd_count(request: int) -> int:
    return 1 if request == Request.SET_PAIR else 0


@dataclass
class Message:
    """One protocol message, decoded (struct sp_broker_msg without its
    descriptors).

    Fields hold what was on the wire, valid or not, as plain integers; call
    ``validate`` before trusting them. ``key`` holds the meaningful key
    bytes: on decoding, the first ``key_len`` bytes of the key field (all
    1024 if ``key_len`` is larger). ``u64`` is the first 8 payload bytes,
    which a SET_PAIR must leave zero. Both payload views are filled whatever
    the request type, as the C union would show them.
    """

    request: int = Request.NONE
    flags: int = 0
    size: int = 0
    mode: int = Mode.NONE
    key_len: int = 0
    key: bytes = b""
    u64: int = 0

    @property
    def version(self) -> int:
        """The protocol version carried in ``flags``."""
        return self.flags & VERSION_MASK

    @property
    def pair_key(self) -> bytes:
        """The key bytes a GET_PAIR means: ``key`` cut to ``key_len`` and to
        1024 bytes."""
        return bytes(self.key[: min(self.key_len, MAX_KEY_LENGTH)])

    def encode(self) -> bytes:
        """Return the wire form of the message; see the module ``encode``."""
        return encode(self)


def new_get_pair(key: bytes, mode: int) -> Message:
    """Return a GET_PAIR for ``key`` and ``mode``.

    It does not check the key's length or the mode: ``validate`` does, and
    ``send_get_pair`` refuses them before sending.
    """
    key = bytes(key)
    return Message(
        request=Request.GET_PAIR,
        flags=PROTOCOL_VERSION,
        size=GET_PAIR_PAYLOAD_SIZE,
        mode=mode,
        key_len=len(key) & 0xFFFF,
        key=key,
    )


def new_set_pair() -> Message:
    """Return a SET_PAIR (the broker's reply)."""
    return Message(request=Request.SET_PAIR, flags=PROTOCOL_VERSION, size=SET_PAIR_PAYLOAD_SIZE)


def encode(msg: Message) -> bytes:
    """Return ``msg`` in wire form: always ``MESSAGE_SIZE`` (1044) bytes.

    For a GET_PAIR the payload is ``mode``, ``key_len`` and ``pair_key``,
    with zeros after the key; for any other request it is ``u64`` followed
    by zeros. The 4 padding bytes at the end are zero. Integers must fit
    their fields (``struct.error`` otherwise).
    """
    buf = bytearray(MESSAGE_SIZE)
    _HEADER.pack_into(buf, 0, msg.request, msg.flags, msg.size)
    if msg.request == Request.GET_PAIR:
        _GET_PAIR.pack_into(buf, _OFF_PAYLOAD, msg.mode, msg.key_len)
        key = msg.pair_key
        buf[_OFF_KEY : _OFF_KEY + len(key)] = key
    else:
        _U64.pack_into(buf, _OFF_PAYLOAD, msg.u64)
    return bytes(buf)


def decode(data: Union[bytes, bytearray, memoryview]) -> Message:
    """Parse one message from ``data``, which must hold 1040 to 1044 bytes;
    bytes past 1040 are padding and ignored.

    Only the length is checked (``LengthError``); call ``validate`` next.
    """
    data = memoryview(data).cast("B")
    if not DOCUMENTED_MESSAGE_SIZE <= len(data) <= MESSAGE_SIZE:
        raise LengthError("length", len(data))
    request, flags, size = _HEADER.unpack_from(data, 0)
    mode, key_len = _GET_PAIR.unpack_from(data, _OFF_PAYLOAD)
    (u64,) = _U64.unpack_from(data, _OFF_PAYLOAD)
    key = bytes(data[_OFF_KEY : _OFF_KEY + min(key_len, MAX_KEY_LENGTH)])
    return Message(request=request, flags=flags, size=size, mode=mode, key_len=key_len, key=key, u64=u64)


def validate(msg: Message, nfds: int, expected: Optional[Iterable[int]] = None) -> None:
    """Check ``msg``, received with ``nfds`` descriptors, against the
    protocol's rules, in the protocol's order, and raise the first broken
    one:

    1. the version nibble of ``flags`` is 1 (``VersionError``);
    2. the other bits of ``flags`` are zero (``FlagsError``);
    3. ``request`` is GET_PAIR or SET_PAIR (``RequestError``);
    4. ``size`` is the payload size of that type (``SizeError``);
    5. ``nfds`` is the descriptor count of that type, 0 for GET_PAIR and 1
       for SET_PAIR (``DescriptorCountError``);
    6. the type is in ``expected``, unless ``expected`` is None; an empty
       collection accepts no type (``UnexpectedTypeError``);
    7. for GET_PAIR, ``mode`` is below 3 (``ModeError``) and
    8. ``key_len`` is within 1..1024 (``KeyLengthError``).

    All of them are ``ProtocolError``. A valid message returns None.
    """
    version = msg.flags & VERSION_MASK
    if version != PROTOCOL_VERSION:
        raise VersionError("version", version)
    if msg.flags & ~VERSION_MASK:
        raise FlagsError("flags", msg.flags)
    if msg.request not in (Request.GET_PAIR, Request.SET_PAIR):
        raise RequestError("request", msg.request)
    if msg.size != _payload_size(msg.request):
        raise SizeError("size", msg.size)
    if nfds != _fd_count(msg.request):
        raise DescriptorCountError("descriptors", nfds)
    if expected is not None and msg.request not in set(expected):
        raise UnexpectedTypeError("request", msg.request)
    if msg.request == Request.GET_PAIR:
        if not 0 <= msg.mode < Mode.MAX:
            raise ModeError("mode", msg.mode)
        if not 1 <= msg.key_len <= MAX_KEY_LENGTH:
            raise KeyLengthError("key_len", msg.key_len)
