"""The SocketPair Broker client for asyncio: nothing here blocks the loop.

``get_pair`` is ``spbroker.get_pair`` as a coroutine; ``receive_set_pair``
reads a reply on a nonblocking broker connection that the caller made with
``spbroker.connect(path, nonblocking=True)`` and ``send_get_pair``. Unlike
the blocking ``spbroker.receive_set_pair``, a reply that arrives in pieces
is awaited, never waited for: the loop runs on in between.

Cancelling a task that waits (or ``asyncio.wait_for`` running out) closes
the broker connection that ``get_pair`` opened, so the broker forgets the
request. ``get_pair`` rides out a restart of the broker as the blocking one
does, asking again until its ``timeout``. Sockets returned belong to the caller and are in blocking mode;
``asyncio.open_unix_connection(sock=peer)`` turns one into streams.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from typing import List, Optional

from . import client
from .client import (
    _RETRYABLE,
    Key,
    PathArg,
    _check_key,
    _check_mode,
    _complete,
    _deadline,
    _gave_up,
    _passed,
    _read_padding,
    _recv,
    connect,
    send_get_pair,
)
from .errors import BrokerClosedError, IncompleteMessageError
from .protocol import DOCUMENTED_MESSAGE_SIZE, MESSAGE_SIZE

__all__ = ["get_pair", "receive_set_pair"]

# How long to wait before trying again when the broker's backlog is full.
_BACKLOG_RETRY = 0.01


async def _readable(sock: socket.socket, timeout: Optional[float]) -> bool:
    """Wait until sock is readable; False if timeout (seconds) passed."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await asyncio.wait_for(ready, timeout)
        return True
    except asyncio.TimeoutError:
        return False
    finally:
        loop.remove_reader(sock.fileno())


async def receive_set_pair(sock: socket.socket) -> socket.socket:
    """Await the broker's SET_PAIR on the nonblocking broker connection
    ``sock`` and return the socket it carried, as
    ``spbroker.receive_set_pair`` does: validated, exactly one descriptor,
    every other one closed. The first byte is awaited for as long as it
    takes; the rest gets up to a second (``IncompleteMessageError``).
    ``sock`` stays the caller's."""
    if sock.getblocking():
        raise ValueError("spbroker.aio: the broker connection must be nonblocking")
    fds: List[int] = []
    received = bytearray()
    truncated = False
    rest_start = 0.0
    try:
        while len(received) < DOCUMENTED_MESSAGE_SIZE:
            timeout = None
            if received:
                timeout = max(0.0, rest_start + client._REST_TIMEOUT - time.monotonic())
            try:
                data, trunc = _recv(sock, MESSAGE_SIZE - len(received), socket.MSG_DONTWAIT, fds)
            except BlockingIOError:
                if not await _readable(sock, timeout):
                    raise IncompleteMessageError(client._REST_TIMEOUT) from None
                continue
            truncated |= trunc
            if not data:
                raise BrokerClosedError(len(received))
            if not received:
                rest_start = time.monotonic()
            received += data
        truncated |= _read_padding(sock, received, fds)
        return _complete(received, fds, truncated)
    finally:
        for fd in fds:
            os.close(fd)


async def get_pair(
    path: PathArg, key: Key, mode: int, timeout: Optional[float] = None, *, retry: bool = True
) -> socket.socket:
    """Ask the broker at ``path`` for the peer of ``key`` and ``mode`` and
    return the connected socket it hands over, which the caller owns. The
    broker connection is closed whatever happens. An invalid key or mode is
    raised before anything is connected.

    ``timeout`` (seconds; None waits for ever) bounds the whole call, as
    ``spbroker.get_pair``'s does, and raises ``TimeoutError``;
    ``asyncio.wait_for`` and cancelling the task work too. Like
    ``spbroker.get_pair``, it asks again after a failure a restarting
    broker causes (``FileNotFoundError``, ``ConnectionRefusedError``,
    ``ConnectionResetError`` such as ``BrokerClosedError``,
    ``BrokenPipeError``), waiting 10ms at first and up to a second, and a
    ``TimeoutError`` after such failures has the last one as its
    ``__cause__``. A refused request looks the same and is asked again
    too. ``retry=False`` raises the first failure as it is."""
    key = _check_key(key)
    mode = _check_mode(mode)
    deadline = _deadline(timeout)
    attempts = 0
    last: Optional[OSError] = None
    while True:
        attempts += 1
        try:
            if deadline is None:
                return await _get_pair_once(path, key, mode)
            return await asyncio.wait_for(_get_pair_once(path, key, mode), max(0.0, deadline - time.monotonic()))
        except (TimeoutError, asyncio.TimeoutError):
            # asyncio.TimeoutError is TimeoutError only from Python 3.11.
            if not _passed(deadline):
                raise  # a reply that stopped half-way
            if last is None:
                raise TimeoutError(
                    errno.ETIMEDOUT, "spbroker: no peer for key %r (mode %s) within %gs" % (key, mode, timeout or 0)
                ) from None
            raise _gave_up(key, mode, timeout, attempts, last) from last
        except _RETRYABLE as e:
            if not retry:
                raise
            last = e
        wait = client._backoff(attempts)
        if deadline is not None and deadline - time.monotonic() <= wait:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            raise _gave_up(key, mode, timeout, attempts, last) from last
        await asyncio.sleep(wait)


async def _get_pair_once(path: PathArg, key: bytes, mode: client.Mode) -> socket.socket:
    """One attempt of get_pair, for a key and mode already checked."""
    while True:
        try:
            sock = connect(path, nonblocking=True)
            break
        except BlockingIOError:
            await asyncio.sleep(_BACKLOG_RETRY)  # the backlog is full
    try:
        # A fresh connection has room for one request: this does not block.
        send_get_pair(sock, key, mode)
        return await receive_set_pair(sock)
    finally:
        sock.close()
