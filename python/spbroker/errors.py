"""Exceptions raised by spbroker.

Every error a call can meet falls in one of two families:

* ``ValueError`` (``InvalidKeyError``, ``InvalidModeError``): the caller
  asked for something the protocol cannot carry; nothing was sent.
* ``OSError``: anything that went wrong on the connection. Protocol
  violations are ``ProtocolError`` (errno ``EPROTO``, as the C library
  reports them), one subclass per rule; a broker that hangs up before a
  whole reply is ``BrokerClosedError`` (a ``ConnectionResetError``); a reply
  that starts but never finishes is ``IncompleteMessageError`` (a
  ``TimeoutError``); the rest are the operating system's own errors.
"""

from __future__ import annotations

import errno
from typing import Any, Tuple

__all__ = [
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

# Request names for messages; kept here so that errors need not import the
# protocol module (which imports this one).
_REQUEST_NAMES = {0: "NONE", 1: "GET_PAIR", 2: "SET_PAIR"}


class ProtocolError(OSError):
    """A message broke a rule of the SocketPair Broker Protocol.

    ``kind`` names the rule (``"version"``, ``"flags"``, ``"request"``,
    ``"size"``, ``"descriptors"``, ``"unexpected"``, ``"mode"``,
    ``"key_length"``, ``"payload"`` or ``"length"``), ``field`` the field
    that broke it and ``value`` the value found there. Each kind has its own
    subclass, so ``except SizeError`` and ``err.kind == "size"`` are the
    same test. ``errno`` is ``EPROTO``.
    """

    kind = "protocol"
    #: What the rule forbids, as the first part of the message.
    description = "socketpair broker protocol error"

    def __init__(self, field: str, value: int, detail: str = "") -> None:
        self.field = field
        self.value = value
        self.detail = detail
        super().__init__(errno.EPROTO, self._text())

    def _value_text(self) -> str:
        if self.field in ("flags", "request"):
            return "0x%x" % self.value
        return str(self.value)

    def _text(self) -> str:
        text = "spbroker: %s: %s %s" % (self.description, self.field, self._value_text())
        if self.detail:
            text += " (%s)" % self.detail
        return text

    def __str__(self) -> str:
        # OSError would print "[Errno 71] ..."; the text alone says more.
        return self._text()

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:  # keep pickling (multiprocessing) working
        return (type(self), (self.field, self.value, self.detail))


class VersionError(ProtocolError):
    """The version nibble of ``flags`` is not 1."""

    kind = "version"
    description = "unsupported protocol version"


class FlagsError(ProtocolError):
    """A bit of ``flags`` above the version nibble is set."""

    kind = "flags"
    description = "reserved flag bits set"


class RequestError(ProtocolError):
    """``request`` is neither GET_PAIR nor SET_PAIR."""

    kind = "request"
    description = "invalid request type"


class SizeError(ProtocolError):
    """``size`` is not the payload size of the message's type."""

    kind = "size"
    description = "wrong payload size"


class DescriptorCountError(ProtocolError):
    """The message came with the wrong number of descriptors."""

    kind = "descriptors"
    description = "wrong number of descriptors"

    def _value_text(self) -> str:
        # As the C library and Go print a count: unsigned 64-bit, so that a
        # negative one (a C caller's n_fds of -1) reads the same everywhere.
        return str(self.value % (1 << 64))


class UnexpectedTypeError(ProtocolError):
    """A valid message of a type the receiver does not expect here."""

    kind = "unexpected"
    description = "unexpected request type"

    def _value_text(self) -> str:
        return _REQUEST_NAMES.get(self.value, "Request(%d)" % self.value)


class ModeError(ProtocolError):
    """A GET_PAIR's ``mode`` is 3 or more."""

    kind = "mode"
    description = "invalid pairing mode"


class KeyLengthError(ProtocolError):
    """A GET_PAIR's ``key_len`` is outside 1..1024."""

    kind = "key_length"
    description = "key length out of range 1..1024"


class PayloadError(ProtocolError):
    """A SET_PAIR whose 64-bit payload is not zero.

    ``validate`` does not check this (the protocol's rules do not list it);
    ``receive_set_pair`` does.
    """

    kind = "payload"
    description = "non-zero SET_PAIR payload"


class LengthError(ProtocolError):
    """A message of the wrong number of bytes (``decode`` wants 1040..1044)."""

    kind = "length"
    description = "wrong message length"


class BrokerClosedError(ConnectionResetError):
    """The broker closed the connection before a whole SET_PAIR arrived.

    It typically refused the request (a policy, a quota, ``one-socketctl
    drop``) or stopped. ``received`` is the number of bytes that did arrive.
    """

    def __init__(self, received: int = 0) -> None:
        self.received = received
        if received == 0:
            text = "spbroker: broker closed the connection without a reply"
        else:
            text = "spbroker: broker closed the connection after %d of %d bytes" % (received, 1040)
        super().__init__(errno.ECONNRESET, text)

    def __str__(self) -> str:
        return self.strerror

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        return (type(self), (self.received,))


class IncompleteMessageError(TimeoutError):
    """A reply started to arrive but its rest did not come in time."""

    def __init__(self, waited: float) -> None:
        self.waited = waited
        super().__init__(errno.ETIMEDOUT, "spbroker: message incomplete after %gs" % waited)

    def __str__(self) -> str:
        return self.strerror

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        return (type(self), (self.waited,))


class InvalidKeyError(ValueError):
    """A key of the wrong length (not 1..1024 bytes) or type; nothing was sent."""


class InvalidModeError(ValueError):
    """A pairing mode other than NONE, CLIENT or SERVER; nothing was sent."""
