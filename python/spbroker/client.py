"""A client of the SocketPair Broker (Linux).

``get_pair`` does everything in one blocking call, and rides out a restart
of the broker by asking again. ``connect``, ``send_get_pair`` and
``receive_set_pair`` are its steps, for programs that run an event loop and
must not block while waiting for a peer; they never retry.

Ownership: every socket these functions return belongs to the caller, who
must close it. None of them closes a socket the caller passed in, except
that ``get_pair`` closes the broker connection it opened itself.
"""

from __future__ import annotations

import array
import errno
import math
import os
import random
import select
import socket
import time
from typing import List, Optional, Tuple, Union

from .errors import (
    BrokerClosedError,
    DescriptorCountError,
    IncompleteMessageError,
    InvalidKeyError,
    InvalidModeError,
    PayloadError,
)
from .protocol import (
    DOCUMENTED_MESSAGE_SIZE,
    MAX_KEY_LENGTH,
    MESSAGE_SIZE,
    Mode,
    Request,
    decode,
    encode,
    new_get_pair,
    validate,
)

__all__ = ["Key", "PathArg", "default_socket_path", "connect", "send_get_pair", "receive_set_pair", "get_pair"]

#: What a key may be given as; ``str`` is encoded as UTF-8.
Key = Union[bytes, bytearray, memoryview, str]
#: A broker socket path; one starting with "@" is in the abstract namespace.
PathArg = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

# How long the rest of a message may take once its first bytes are in. The
# broker writes a reply with one sendmsg, so the rest is normally there at
# once; a peer that stops half-way is broken, and an event loop must not
# hang on it. The tests shorten it.
_REST_TIMEOUT = 1.0

# The kernel's limit on descriptors in one message (SCM_MAX_FD). Room for
# all of them means whatever a broker sends is received, counted and closed
# instead of being dropped by the kernel.
_SCM_MAX_FD = 253

# The size of sun_path in struct sockaddr_un on Linux: a socket file's name
# and its NUL, or an abstract name and its leading NUL, must fit.
_SUN_PATH_SIZE = 108

_ANCBUF_SIZE = socket.CMSG_SPACE(_SCM_MAX_FD * array.array("i").itemsize)

# Received descriptors are close-on-exec from the start where the kernel
# supports it; elsewhere they are made so right after.
_MSG_CMSG_CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
_MSG_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)

# The waits of get_pair between attempts: the first, then twice as long
# each time up to the cap, each cut by up to half at random so that
# clients cut off together do not all come back together.
_INITIAL_BACKOFF = 0.01
_MAX_BACKOFF = 1.0

# What a restarting broker looks like to one attempt of get_pair: no socket
# file yet, a socket file nobody listens on, a connection that ends without
# a whole reply (BrokerClosedError is a ConnectionResetError), a request
# that cannot be sent because the broker went away. get_pair asks again
# after these, and only these.
_RETRYABLE = (FileNotFoundError, ConnectionRefusedError, ConnectionResetError, BrokenPipeError)


def default_socket_path() -> str:
    """Return the broker socket to use when nothing else says, as the daemon
    decides it: ``$ONE_SOCKET_PATH`` if set, else ``/run/one.socket`` for
    root, else ``$XDG_RUNTIME_DIR/one.socket``, cleaned as the daemon
    cleans it (``/run/user//7/`` gives ``/run/user/7/one.socket``). Empty
    variables count as unset. Raises ``OSError`` (ENOENT) for a user other
    than root without ``XDG_RUNTIME_DIR``."""
    explicit = os.environ.get("ONE_SOCKET_PATH", "")
    if explicit:
        return explicit
    if os.geteuid() == 0:
        return "/run/one.socket"
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if not runtime:
        raise OSError(
            errno.ENOENT,
            "no socket path: XDG_RUNTIME_DIR is not set, so there is no default for a user other than root; "
            "set ONE_SOCKET_PATH",
        )
    # The daemon's filepath.Join cleans the result: no "." or empty
    # elements, ".." taken lexically, and (unlike normpath) no "//" start.
    path = os.path.normpath(os.path.join(runtime, "one.socket"))
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    return path


def _address(path: PathArg) -> Union[str, bytes]:
    """The socket address for path: "@name" becomes "\\0name"."""
    p = os.fspath(path)
    if isinstance(p, bytes):
        return b"\0" + p[1:] if p.startswith(b"@") else p
    return "\0" + p[1:] if p.startswith("@") else p


def _check_key(key: Key) -> bytes:
    if isinstance(key, str):
        key = key.encode("utf-8")
    elif isinstance(key, (bytes, bytearray, memoryview)):
        key = bytes(key)
    else:
        raise TypeError("spbroker: key must be bytes or str, not %s" % type(key).__name__)
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise InvalidKeyError("spbroker: key of %d bytes: key must be 1 to %d bytes" % (len(key), MAX_KEY_LENGTH))
    return key


def _check_mode(mode: int) -> Mode:
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise TypeError("spbroker: mode must be a Mode, not %s" % type(mode).__name__)
    if not 0 <= mode < Mode.MAX:
        raise InvalidModeError("spbroker: Mode(%d): invalid pairing mode" % mode)
    return Mode(mode)


def _wait(sock: socket.socket, events: int, deadline: Optional[float]) -> bool:
    """Wait until sock is ready for events or deadline (time.monotonic)
    passes; False on the deadline. None waits without end. Readiness
    includes errors and hang-ups, which the next call reports."""
    poller = select.poll()
    poller.register(sock.fileno(), events)
    while True:
        ms = -1
        if deadline is not None:
            ms = max(0, math.ceil((deadline - time.monotonic()) * 1000))
        if poller.poll(ms):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


def _timeout_error(e: OSError) -> TimeoutError:
    """A socket's timeout as TimeoutError, which socket.timeout is only
    from Python 3.10 on."""
    if isinstance(e, TimeoutError):
        return e
    return TimeoutError(errno.ETIMEDOUT, str(e))


def connect(path: PathArg, nonblocking: bool = False) -> socket.socket:
    """Connect to the broker socket at ``path`` and return the connection.

    ``path`` is a file system path, or "@name" for a socket in Linux's
    abstract namespace. The socket is close-on-exec, and the caller owns
    it: closing it while a GET_PAIR waits makes the broker forget that
    request.

    With ``nonblocking`` the socket is in nonblocking mode
    (``setblocking(False)``) and ``connect`` never waits: a Unix socket
    connects at once or not at all, so when the broker's backlog is full it
    raises ``BlockingIOError`` (EAGAIN) where a blocking connect would wait
    for room. Errors are ``OSError`` naming the path; a path of 108 bytes
    or more (sun_path's size; "@name" counts its "@") is ``EINVAL``.
    """
    addr = _address(path)
    if len(addr if isinstance(addr, bytes) else os.fsencode(addr)) >= _SUN_PATH_SIZE:
        # As the C library and Go refuse it: EINVAL, where Python's own
        # check raises an OSError without an errno, and lets through an
        # abstract name that fills sun_path, which no broker can listen on.
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), os.fsdecode(os.fspath(path)))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(not nonblocking)
        err = sock.connect_ex(addr)
        if err != 0 and not (nonblocking and err == errno.EINPROGRESS):
            raise OSError(err, os.strerror(err), os.fsdecode(os.fspath(path)))
    except BaseException:
        sock.close()
        raise
    return sock


def send_get_pair(sock: socket.socket, key: Key, mode: int) -> None:
    """Send a GET_PAIR for ``key`` and ``mode`` on the broker connection
    ``sock``, which stays the caller's.

    ``key`` is 1 to 1024 bytes (a ``str`` is encoded as UTF-8) and
    ``mode`` one of ``Mode.NONE``, ``Mode.CLIENT``, ``Mode.SERVER``;
    anything else raises ``InvalidKeyError`` or ``InvalidModeError``
    (``TypeError`` for the wrong type) before a byte is sent. The message is
    1044 bytes, as the original implementation sends it.

    On a nonblocking socket with no room for the message it raises
    ``BlockingIOError`` having sent nothing. A message it has started it
    finishes, waiting up to a second for room, since the broker cannot use
    half a request; if that fails (``IncompleteMessageError``) the caller
    must close ``sock``.
    """
    data = memoryview(encode(new_get_pair(_check_key(key), _check_mode(mode))))
    sent = 0
    deadline = None
    while sent < len(data):
        try:
            sent += sock.send(data[sent:], _MSG_NOSIGNAL)
        except socket.timeout as e:
            raise _timeout_error(e) from None
        except BlockingIOError:
            if sent == 0:
                raise
            if deadline is None:
                deadline = time.monotonic() + _REST_TIMEOUT
            if not _wait(sock, select.POLLOUT, deadline):
                raise IncompleteMessageError(_REST_TIMEOUT) from None


def _recv(sock: socket.socket, size: int, flags: int, fds: List[int]) -> Tuple[bytes, bool]:
    """One recvmsg of up to size bytes; appends the descriptors that came
    to fds and returns the data and whether control data was truncated."""
    # Not socket.recv_fds: it ignores its flags argument (in 3.9 to 3.13.0
    # at least), which would lose MSG_CMSG_CLOEXEC and MSG_DONTWAIT.
    data, ancdata, msg_flags, _ = sock.recvmsg(size, _ANCBUF_SIZE, flags | _MSG_CMSG_CLOEXEC)
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            got = array.array("i")
            got.frombytes(payload[: len(payload) - len(payload) % got.itemsize])
            fds.extend(got)
            if not _MSG_CMSG_CLOEXEC:
                for fd in got:
                    os.set_inheritable(fd, False)
    return data, bool(msg_flags & socket.MSG_CTRUNC)


def receive_set_pair(sock: socket.socket) -> socket.socket:
    """Read the broker's SET_PAIR from ``sock`` and return the socket it
    carried: one end of a connected stream socketpair whose other end the
    peer received. The caller owns it; it is close-on-exec and in blocking
    mode. ``sock`` stays the caller's: close it now, the broker is done
    with it.

    The message is read whole however its bytes arrive, as 1040 or 1044
    bytes, and validated (``ProtocolError`` and its subclasses, including
    ``PayloadError`` for a non-zero payload). It must carry exactly one
    descriptor; descriptors beyond it, and all of them on any error, are
    closed. A descriptor that is not a socket fails with ``OSError``
    (ENOTSOCK), closed too.

    Waiting for the first byte follows ``sock``'s own mode: a blocking
    socket waits, a socket with a timeout raises ``TimeoutError`` when it
    passes, and a nonblocking socket on which nothing has arrived raises
    ``BlockingIOError`` with nothing consumed, so the caller may try again
    when the socket is readable. Once the reply has started, the rest gets
    up to a second in every mode, then ``IncompleteMessageError``. A broker
    that closes the connection before a whole reply raises
    ``BrokerClosedError`` (a ``ConnectionResetError``); the kernel may also
    report that as a plain ``ConnectionResetError``.
    """
    return _receive_set_pair(sock, None)


def _receive_set_pair(sock: socket.socket, deadline: Optional[float]) -> socket.socket:
    fds: List[int] = []
    received = bytearray()
    truncated = False
    try:
        # The first read waits as the socket does; it consumes nothing if
        # it fails, so a nonblocking caller can simply retry.
        try:
            data, trunc = _recv(sock, MESSAGE_SIZE, 0, fds)
        except socket.timeout as e:
            raise _timeout_error(e) from None
        truncated |= trunc
        if not data:
            raise BrokerClosedError(0)
        received += data
        rest_start = rest_deadline = None
        while len(received) < DOCUMENTED_MESSAGE_SIZE:
            if rest_deadline is None:
                rest_start = time.monotonic()
                rest_deadline = rest_start + _REST_TIMEOUT
                if deadline is not None:
                    rest_deadline = min(rest_deadline, deadline)
            # Poll first, so that a socket with a timeout never waits on
            # its own; then the read cannot block.
            if not _wait(sock, select.POLLIN, rest_deadline):
                raise IncompleteMessageError(round(rest_deadline - rest_start, 3))
            try:
                data, trunc = _recv(sock, MESSAGE_SIZE - len(received), socket.MSG_DONTWAIT, fds)
            except BlockingIOError:
                continue
            truncated |= trunc
            if not data:
                raise BrokerClosedError(len(received))
            received += data
        if _wait(sock, select.POLLIN, time.monotonic()):
            truncated |= _read_padding(sock, received, fds)
        return _complete(received, fds, truncated)
    finally:
        for fd in fds:
            os.close(fd)


def _read_padding(sock: socket.socket, received: bytearray, fds: List[int]) -> bool:
    """Read the 4 padding bytes after a documented-size message if they are
    there already: they belong to it. Failing to (nothing there, end of
    file, a reset) does not spoil a complete message. Returns whether
    control data was truncated."""
    if len(received) >= MESSAGE_SIZE:
        return False
    try:
        data, trunc = _recv(sock, MESSAGE_SIZE - len(received), socket.MSG_DONTWAIT, fds)
    except OSError:
        return False
    received += data
    return trunc


def _complete(received: bytearray, fds: List[int], truncated: bool) -> socket.socket:
    """Validate a whole SET_PAIR and return the socket it carried, taking its
    descriptor out of fds; the caller closes whatever fds still holds."""
    msg = decode(received)
    nfds = len(fds)
    if truncated:
        # The kernel dropped descriptors: the true count is unknown but
        # is not what arrived.
        nfds = max(nfds + 1, 2)
    try:
        validate(msg, nfds, (Request.SET_PAIR,))
    except DescriptorCountError:
        if truncated:
            raise DescriptorCountError("descriptors", len(fds), "control data truncated") from None
        raise
    if msg.u64 != 0:
        raise PayloadError("u64", msg.u64)
    # Exactly one descriptor is left. Hand it from fds to the socket
    # object without a moment when both would close it.
    fd = fds.pop()
    try:
        peer = socket.socket(fileno=fd)  # ENOTSOCK for anything else
    except BaseException:
        os.close(fd)
        raise
    peer.setblocking(True)
    return peer


def get_pair(path: PathArg, key: Key, mode: int, timeout: Optional[float] = None, *, retry: bool = True) -> socket.socket:
    """Ask the broker at ``path`` for the peer of ``key`` and ``mode`` and
    return the connected socket it hands over, which the caller owns.

    It connects, sends GET_PAIR, waits for SET_PAIR and closes the broker
    connection, whatever happens. ``timeout`` (seconds; None waits for ever)
    bounds the whole call: when it passes, or when the wait is interrupted
    (``KeyboardInterrupt``), the broker connection is closed, so the broker
    forgets the request, and ``TimeoutError`` is raised. Errors are those
    of ``connect``, ``send_get_pair`` and ``receive_set_pair``; an invalid
    key or mode is raised before anything is connected.

    It rides out a restart of the broker: after ``FileNotFoundError`` or
    ``ConnectionRefusedError`` (no broker listening yet),
    ``ConnectionResetError`` (``BrokerClosedError`` among them: the
    connection ended without a reply) or ``BrokenPipeError``, it connects
    and asks again, 10ms later at first, then twice as long each time up to
    a second, until it is paired or ``timeout`` passes. The
    ``TimeoutError`` then says how the last attempt failed and has that
    error as its ``__cause__``. A broker that refuses a request (its
    policy, a quota, ``one-socketctl drop``) only closes the connection,
    which looks the same: such a request is asked again until ``timeout``
    too, or for ever without one. Any other error is raised at once. With
    ``retry=False`` the first failure is raised as it is.
    """
    key = _check_key(key)
    mode = _check_mode(mode)
    deadline = _deadline(timeout)
    attempts = 0
    last: Optional[OSError] = None
    while True:
        attempts += 1
        try:
            return _get_pair_once(path, key, mode, timeout, deadline)
        except TimeoutError:
            if last is None or not _passed(deadline):
                raise
            raise _gave_up(key, mode, timeout, attempts, last) from last
        except _RETRYABLE as e:
            if not retry:
                raise
            last = e
        wait = _backoff(attempts)
        if deadline is not None and deadline - time.monotonic() <= wait:
            time.sleep(max(0.0, deadline - time.monotonic()))
            raise _gave_up(key, mode, timeout, attempts, last) from last
        time.sleep(wait)


def _deadline(timeout: Optional[float]) -> Optional[float]:
    """The time.monotonic() at which timeout (seconds, or None) passes."""
    if timeout is not None and not timeout >= 0:
        raise ValueError("spbroker: timeout must be None or at least 0, not %r" % (timeout,))
    return None if timeout is None else time.monotonic() + timeout


def _passed(deadline: Optional[float]) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _gave_up(key: bytes, mode: Mode, timeout: Optional[float], attempts: int, last: OSError) -> TimeoutError:
    """The TimeoutError of a get_pair whose timeout passed after attempts
    had failed; the caller raises it from last."""
    return TimeoutError(
        errno.ETIMEDOUT,
        "spbroker: no peer for key %r (mode %s) within %gs; the last of %d attempts failed: %s"
        % (key, mode, timeout or 0, attempts, last),
    )


def _backoff(attempt: int, cap: float = _MAX_BACKOFF, jitter: Optional[float] = None) -> float:
    """The wait in seconds after the attempt-th failed attempt (from 1):
    the initial wait doubled attempt-1 times, at most cap, then cut by up to
    half as jitter (0 to 1, random if None) says: 0 cuts half, 1 nothing."""
    d = min(_INITIAL_BACKOFF, cap)
    for _ in range(1, attempt):
        if d >= cap:
            break
        d = min(2 * d, cap)
    if jitter is None:
        jitter = random.random()
    jitter = min(max(jitter, 0.0), 1.0)
    return d / 2 + jitter * (d - d / 2)


def _get_pair_once(path: PathArg, key: bytes, mode: Mode, timeout: Optional[float], deadline: Optional[float]) -> socket.socket:
    """One attempt of get_pair, for a key and mode already checked."""
    sock = _connect_by(path, deadline)
    try:
        send_get_pair(sock, key, mode)
        if not _wait(sock, select.POLLIN, deadline):
            raise TimeoutError(errno.ETIMEDOUT, "spbroker: no peer for key %r (mode %s) within %gs" % (key, mode, timeout or 0))
        return _receive_set_pair(sock, deadline)
    finally:
        sock.close()


def _connect_by(path: PathArg, deadline: Optional[float]) -> socket.socket:
    """connect, waiting for room in the broker's backlog until deadline."""
    if deadline is None:
        return connect(path)
    while True:
        try:
            sock = connect(path, nonblocking=True)
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    errno.ETIMEDOUT, "spbroker: the broker at %s accepts no connection" % os.fsdecode(os.fspath(path))
                ) from None
            time.sleep(min(left, 0.01))
            continue
        sock.setblocking(True)
        return sock
