"""The client against fake brokers written here: replies of every shape,
right and wrong, and what happens to the descriptors they carry."""

from __future__ import annotations

import errno
import fcntl
import os
import json
import pathlib
import shutil
import socket
import subprocess
import sys
import threading
import time
import unittest
import uuid
from typing import Callable, Dict, List, Optional
from unittest import mock

import spbroker
from spbroker import Mode, Request, client

from . import support

SET_PAIR = spbroker.new_set_pair().encode()


def set_pair(**fields) -> bytes:
    m = spbroker.new_set_pair()
    for k, v in fields.items():
        setattr(m, k, v)
    return m.encode()


class Sent:
    """Descriptors made to be sent by a fake broker: the ends of fresh
    socketpairs (or pipes), whose identity (/proc/self/fd link) the tests
    look for afterwards. The test keeps the far ends to talk through."""

    def __init__(self, n: int = 1, kind: str = "socket") -> None:
        self.fds: List[int] = []
        self.far: List[socket.socket] = []  # empty for pipes
        self.ids: List[str] = []
        for _ in range(n):
            if kind == "pipe":
                r, w = os.pipe()
                self.fds.append(r)
                os.close(w)
            else:
                a, b = socket.socketpair()
                self.fds.append(a.detach())
                self.far.append(b)
            self.ids.append(support.fd_target(self.fds[-1]))

    def close_sent(self) -> None:
        """Close this process's copies of the sent descriptors, so that
        only what the receiver got can still refer to them."""
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def close(self) -> None:
        self.close_sent()
        for s in self.far:
            s.close()

    def open_copies(self) -> List[str]:
        """The sent descriptors still open in this process."""
        return [t for t in support.fd_targets().values() if t in self.ids]


class ReceiveTest(unittest.TestCase):
    """receive_set_pair on one end of a socketpair; the test is the broker."""

    def setUp(self):
        support.forbid_unclosed(self)
        self.client, self.broker = socket.socketpair()
        self.addCleanup(self.client.close)
        self.addCleanup(self.broker.close)

    def sent(self, n: int = 1, kind: str = "socket") -> Sent:
        s = Sent(n, kind)
        self.addCleanup(s.close)
        return s

    def reply(self, data: bytes, sent: Optional[Sent] = None) -> None:
        socket.send_fds(self.broker, [data], sent.fds if sent else [])
        if sent:
            sent.close_sent()

    def assert_peer(self, peer: socket.socket, far: socket.socket) -> None:
        self.addCleanup(peer.close)
        self.assertEqual((peer.family, peer.type), (socket.AF_UNIX, socket.SOCK_STREAM))
        self.assertIsNone(peer.gettimeout(), "the peer socket is in blocking mode")
        self.assertTrue(fcntl.fcntl(peer.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC, "received close-on-exec")
        peer.sendall(b"ping")
        self.assertEqual(far.recv(16), b"ping")
        far.sendall(b"pong")
        self.assertEqual(peer.recv(16), b"pong")

    def test_1044_bytes(self):
        s = self.sent()
        self.reply(SET_PAIR, s)
        peer = client.receive_set_pair(self.client)
        self.assert_peer(peer, s.far[0])
        self.assertEqual(s.open_copies(), [support.fd_target(peer.fileno())])

    def test_1040_bytes(self):
        s = self.sent()
        self.reply(SET_PAIR[:1040], s)
        self.assert_peer(spbroker.receive_set_pair(self.client), s.far[0])

    def test_1040_bytes_then_more_stays_unread(self):
        # Bytes after the padding are not part of the message.
        s = self.sent()
        self.reply(SET_PAIR + b"extra", s)
        self.assert_peer(spbroker.receive_set_pair(self.client), s.far[0])
        self.assertEqual(self.client.recv(16), b"extra")

    def test_padding_sent_separately(self):
        # The kernel ends a read at a message that carries descriptors, so
        # the first read stops at 1040; the padding that follows is taken,
        # and nothing after it.
        s = self.sent()
        self.reply(SET_PAIR[:1040], s)
        self.broker.sendall(SET_PAIR[1040:] + b"next")
        self.assert_peer(spbroker.receive_set_pair(self.client), s.far[0])
        self.assertEqual(self.client.recv(16), b"next")

    def test_in_pieces(self):
        # The descriptor rides on the first piece, a middle one, or the one
        # that completes the 1040 bytes.
        cuts = [1, 12, 500, 1039, 1040, 1043]
        for carrier in (0, 3, 4):
            with self.subTest(carrier=carrier):
                s = Sent()
                self.addCleanup(s.close)
                pieces = [SET_PAIR[a:b] for a, b in zip([0] + cuts, cuts + [1044])]

                def broker():
                    for i, p in enumerate(pieces):
                        socket.send_fds(self.broker, [p], s.fds if i == carrier else [])
                        time.sleep(0.005)

                t = threading.Thread(target=broker)
                t.start()
                try:
                    peer = spbroker.receive_set_pair(self.client)
                finally:
                    t.join()
                s.close_sent()
                self.assert_peer(peer, s.far[0])
                peer.close()
                # Whatever of the padding did not arrive in time is left.
                rest = b""
                self.client.setblocking(False)
                try:
                    rest = self.client.recv(16)
                except BlockingIOError:
                    pass
                self.client.setblocking(True)
                self.assertEqual(rest, bytes(len(rest)))

    def bad(self, data: bytes, n: int, cls: type, text: str, kind: str = "socket") -> None:
        s = self.sent(n, kind)
        self.reply(data, s)
        with self.assertRaises(cls) as cm:
            spbroker.receive_set_pair(self.client)
        self.assertEqual(str(cm.exception), text)
        self.assertEqual(s.open_copies(), [], "every received descriptor is closed")

    def test_malformed(self):
        get_pair = spbroker.new_get_pair(b"k", Mode.NONE).encode()
        cases = [
            (set_pair(flags=2), 1, spbroker.VersionError, "spbroker: unsupported protocol version: version 2"),
            (set_pair(flags=0x101), 1, spbroker.FlagsError, "spbroker: reserved flag bits set: flags 0x101"),
            (set_pair(request=5), 1, spbroker.RequestError, "spbroker: invalid request type: request 0x5"),
            (set_pair(size=1028), 1, spbroker.SizeError, "spbroker: wrong payload size: size 1028"),
            (SET_PAIR, 0, spbroker.DescriptorCountError, "spbroker: wrong number of descriptors: descriptors 0"),
            (SET_PAIR, 2, spbroker.DescriptorCountError, "spbroker: wrong number of descriptors: descriptors 2"),
            (SET_PAIR, 5, spbroker.DescriptorCountError, "spbroker: wrong number of descriptors: descriptors 5"),
            (get_pair, 0, spbroker.UnexpectedTypeError, "spbroker: unexpected request type: request GET_PAIR"),
            (set_pair(u64=9), 1, spbroker.PayloadError, "spbroker: non-zero SET_PAIR payload: u64 9"),
        ]
        for data, n, cls, text in cases:
            with self.subTest(cls=cls.__name__, nfds=n):
                self.bad(data, n, cls, text)
                self.assertTrue(issubclass(cls, spbroker.ProtocolError))

    def test_not_a_socket(self):
        s = self.sent(1, "pipe")
        self.reply(SET_PAIR, s)
        with self.assertRaises(OSError) as cm:
            spbroker.receive_set_pair(self.client)
        self.assertEqual(cm.exception.errno, errno.ENOTSOCK)
        self.assertEqual(s.open_copies(), [])

    def test_end_of_file(self):
        self.broker.shutdown(socket.SHUT_WR)
        with self.assertRaises(spbroker.BrokerClosedError) as cm:
            spbroker.receive_set_pair(self.client)
        self.assertIsInstance(cm.exception, ConnectionResetError)
        self.assertEqual(cm.exception.errno, errno.ECONNRESET)
        self.assertEqual(str(cm.exception), "spbroker: broker closed the connection without a reply")

    def test_end_of_file_mid_message(self):
        s = self.sent()
        self.reply(SET_PAIR[:500], s)
        self.broker.shutdown(socket.SHUT_WR)
        with self.assertRaises(spbroker.BrokerClosedError) as cm:
            spbroker.receive_set_pair(self.client)
        self.assertEqual(cm.exception.received, 500)
        self.assertEqual(str(cm.exception), "spbroker: broker closed the connection after 500 of 1040 bytes")
        self.assertEqual(s.open_copies(), [])

    def test_stalled_message(self):
        s = self.sent()
        self.reply(SET_PAIR[:1039], s)
        with mock.patch.object(client, "_REST_TIMEOUT", 0.2):
            with self.assertRaises(spbroker.IncompleteMessageError) as cm:
                spbroker.receive_set_pair(self.client)
        self.assertIsInstance(cm.exception, TimeoutError)
        self.assertEqual(str(cm.exception), "spbroker: message incomplete after 0.2s")
        self.assertEqual(s.open_copies(), [])

    def test_nonblocking_before_reply(self):
        self.client.setblocking(False)
        for _ in range(3):
            with self.assertRaises(BlockingIOError):
                spbroker.receive_set_pair(self.client)
        s = self.sent()
        self.reply(SET_PAIR, s)
        peer = spbroker.receive_set_pair(self.client)
        self.assert_peer(peer, s.far[0])
        self.assertEqual(self.client.gettimeout(), 0.0, "the caller's socket keeps its mode")

    def test_socket_timeout_before_reply(self):
        self.client.settimeout(0.05)
        with self.assertRaises(TimeoutError):
            spbroker.receive_set_pair(self.client)
        s = self.sent()
        self.reply(SET_PAIR, s)
        self.assert_peer(spbroker.receive_set_pair(self.client), s.far[0])


class SendTest(unittest.TestCase):
    def setUp(self):
        support.forbid_unclosed(self)
        self.client, self.broker = socket.socketpair()
        self.addCleanup(self.client.close)
        self.addCleanup(self.broker.close)

    def received(self) -> bytes:
        self.broker.setblocking(False)
        out = b""
        while True:
            try:
                chunk = self.broker.recv(65536)
            except BlockingIOError:
                return out
            if not chunk:
                return out
            out += chunk

    def test_wire(self):
        for key, mode in ((b"k", Mode.NONE), (b"\0" * 1024, Mode.SERVER), ("ключ", Mode.CLIENT), (bytearray(b"ba"), 2)):
            with self.subTest(key=key, mode=mode):
                spbroker.send_get_pair(self.client, key, mode)
                data = self.received()
                self.assertEqual(len(data), 1044)
                want = key.encode() if isinstance(key, str) else bytes(key)
                self.assertEqual(data, spbroker.new_get_pair(want, mode).encode())
                m = spbroker.decode(data)
                spbroker.validate(m, 0, [Request.GET_PAIR])
                self.assertEqual((m.pair_key, m.mode), (want, mode))

    def test_invalid_key_or_mode_sends_nothing(self):
        cases = [
            (b"", Mode.NONE, spbroker.InvalidKeyError, "spbroker: key of 0 bytes: key must be 1 to 1024 bytes"),
            (b"x" * 1025, Mode.NONE, spbroker.InvalidKeyError, "spbroker: key of 1025 bytes: key must be 1 to 1024 bytes"),
            ("é" * 513, Mode.NONE, spbroker.InvalidKeyError, "spbroker: key of 1026 bytes: key must be 1 to 1024 bytes"),
            (b"k", Mode.MAX, spbroker.InvalidModeError, "spbroker: Mode(3): invalid pairing mode"),
            (b"k", -1, spbroker.InvalidModeError, "spbroker: Mode(-1): invalid pairing mode"),
            (b"k", "client", TypeError, "spbroker: mode must be a Mode, not str"),
            (12, Mode.NONE, TypeError, "spbroker: key must be bytes or str, not int"),
        ]
        for key, mode, cls, text in cases:
            with self.subTest(key=repr(key)[:16], mode=mode):
                with self.assertRaises(cls) as cm:
                    spbroker.send_get_pair(self.client, key, mode)
                self.assertEqual(str(cm.exception), text)
                self.assertEqual(self.received(), b"")
        self.assertTrue(issubclass(spbroker.InvalidKeyError, ValueError))
        self.assertTrue(issubclass(spbroker.InvalidModeError, ValueError))

    def test_nonblocking_without_room_sends_nothing(self):
        self.client.setblocking(False)
        filler = 0
        while True:
            try:
                filler += self.client.send(b"f" * 4096)
            except BlockingIOError:
                break
        with self.assertRaises(BlockingIOError):
            spbroker.send_get_pair(self.client, b"key", Mode.NONE)
        self.assertEqual(self.received(), b"f" * filler)


class FakeBroker:
    """A listening socket whose one client gets the reply that script
    makes; it records the GET_PAIR and whether the client hung up."""

    def __init__(self, script: Callable[[socket.socket], None], abstract: bool = False) -> None:
        self.dir = support.short_tempdir()
        if abstract:
            self.path = "@spbroker-fake-%s" % uuid.uuid4().hex
            addr = "\0" + self.path[1:]
        else:
            self.path = addr = os.path.join(self.dir, "fake.socket")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(addr)
        self.listener.listen(8)
        self.script = script
        self.request = b""
        self.hung_up = threading.Event()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.listener.settimeout(support.WAIT)
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(support.WAIT)
                while len(self.request) < 1044:
                    chunk = conn.recv(1044 - len(self.request))
                    if not chunk:
                        break
                    self.request += chunk
                self.script(conn)
                # Wait for the client to close its end.
                while conn.recv(4096):
                    pass
                self.hung_up.set()
        except BaseException as e:  # reported by close()
            self.error = e

    def close(self) -> None:
        self.thread.join(support.WAIT)
        self.listener.close()
        support._remove(self.dir)
        if self.thread.is_alive():
            raise AssertionError("fake broker still running")


class GetPairFakeTest(unittest.TestCase):
    def setUp(self):
        support.forbid_unclosed(self)

    def fake(self, script, abstract=False) -> FakeBroker:
        fb = FakeBroker(script, abstract)
        self.addCleanup(fb.close)
        return fb

    def test_pair(self):
        s = Sent()
        self.addCleanup(s.close)

        def script(conn):
            socket.send_fds(conn, [SET_PAIR], s.fds)
            s.close_sent()

        fb = self.fake(script)
        with spbroker.get_pair(fb.path, "key", Mode.SERVER, timeout=support.WAIT) as peer:
            peer.sendall(b"hi")
            self.assertEqual(s.far[0].recv(2), b"hi")
        self.assertTrue(fb.hung_up.wait(support.WAIT), "get_pair closes the broker connection")
        self.assertEqual(fb.request, spbroker.new_get_pair(b"key", Mode.SERVER).encode())

    def test_abstract_and_path_types(self):
        for abstract, conv in ((True, str), (True, os.fsencode), (False, pathlib.Path), (False, os.fsencode)):
            with self.subTest(abstract=abstract, conv=conv.__name__):
                s = Sent()
                self.addCleanup(s.close)

                def script(conn, s=s):
                    socket.send_fds(conn, [SET_PAIR], s.fds)
                    s.close_sent()

                fb = self.fake(script, abstract)
                with spbroker.get_pair(conv(fb.path), b"k", Mode.NONE) as peer:
                    peer.sendall(b"x")
                    self.assertEqual(s.far[0].recv(1), b"x")

    def test_malformed_reply(self):
        s = Sent(2)
        self.addCleanup(s.close)

        def script(conn):
            socket.send_fds(conn, [SET_PAIR], s.fds)
            s.close_sent()

        fb = self.fake(script)
        with self.assertRaises(spbroker.DescriptorCountError):
            spbroker.get_pair(fb.path, b"k", Mode.CLIENT)
        self.assertTrue(fb.hung_up.wait(support.WAIT))
        self.assertEqual(s.open_copies(), [])

    def test_end_of_file(self):
        # Without retries; with them, see test_retry.
        fb = self.fake(lambda conn: conn.shutdown(socket.SHUT_WR))
        with self.assertRaises(spbroker.BrokerClosedError):
            spbroker.get_pair(fb.path, b"k", Mode.CLIENT, timeout=support.WAIT, retry=False)
        self.assertTrue(fb.hung_up.wait(support.WAIT))

    def test_timeout_closes_connection(self):
        before = set(support.fd_targets())
        fb = self.fake(lambda conn: None)
        with self.assertRaises(TimeoutError) as cm:
            spbroker.get_pair(fb.path, b"lonely", Mode.CLIENT, timeout=0.1)
        self.assertEqual(str(cm.exception), "[Errno 110] spbroker: no peer for key b'lonely' (mode client) within 0.1s")
        self.assertTrue(fb.hung_up.wait(support.WAIT), "the broker sees the connection close")
        fb.close()
        self.assertEqual(set(support.fd_targets()), before)

    def test_timeout_bounds_a_stalled_reply(self):
        fb = self.fake(lambda conn: conn.sendall(SET_PAIR[:100]))
        with self.assertRaises(TimeoutError):
            spbroker.get_pair(fb.path, b"k", Mode.CLIENT, timeout=0.2)
        self.assertTrue(fb.hung_up.wait(support.WAIT))

    def test_invalid_arguments_before_connecting(self):
        missing = "/nonexistent/spbroker.socket"
        with self.assertRaises(spbroker.InvalidKeyError):
            spbroker.get_pair(missing, b"", Mode.NONE)
        with self.assertRaises(spbroker.InvalidKeyError):
            spbroker.get_pair(missing, b"k" * 1025, Mode.NONE)
        with self.assertRaises(spbroker.InvalidModeError):
            spbroker.get_pair(missing, b"k", 3)
        with self.assertRaises(ValueError):
            spbroker.get_pair(missing, b"k", Mode.NONE, timeout=-1)
        with self.assertRaises(FileNotFoundError) as cm:
            spbroker.get_pair(missing, b"k", Mode.NONE, retry=False)
        self.assertEqual(cm.exception.filename, missing)


class ConnectTest(unittest.TestCase):
    def setUp(self):
        support.forbid_unclosed(self)

    def test_missing(self):
        for nonblocking in (False, True):
            with self.assertRaises(FileNotFoundError) as cm:
                spbroker.connect("/nonexistent/one.socket", nonblocking)
            self.assertEqual(cm.exception.filename, "/nonexistent/one.socket")
            with self.assertRaises(ConnectionRefusedError):
                spbroker.connect("@spbroker-nobody-%s" % uuid.uuid4().hex, nonblocking)

    def test_modes(self):
        fb = FakeBroker(lambda conn: None, abstract=True)
        fb2 = FakeBroker(lambda conn: None)
        try:
            with spbroker.connect(fb.path, nonblocking=True) as s:
                self.assertEqual(s.gettimeout(), 0.0)
                self.assertTrue(fcntl.fcntl(s.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
                self.assertEqual(s.getpeername(), b"\0" + fb.path[1:].encode())
                spbroker.send_get_pair(s, b"k", Mode.NONE)
            with spbroker.connect(fb2.path) as s:
                self.assertIsNone(s.gettimeout())
                self.assertEqual(s.getpeername(), fb2.path)
                spbroker.send_get_pair(s, b"k", Mode.NONE)
        finally:
            fb.close()
            fb2.close()
        self.assertEqual(fb.request, spbroker.new_get_pair(b"k", Mode.NONE).encode())



class DefaultSocketPathTest(unittest.TestCase):
    """default_socket_path decides as the daemon and the Go package do."""

    def test_explicit(self):
        with mock.patch.dict(os.environ, {"ONE_SOCKET_PATH": "/tmp/explicit.socket"}):
            self.assertEqual(spbroker.default_socket_path(), "/tmp/explicit.socket")

    def test_root(self):
        with mock.patch.dict(os.environ, {"ONE_SOCKET_PATH": "", "XDG_RUNTIME_DIR": "/run/user/7"}), \
                mock.patch.object(os, "geteuid", return_value=0):
            self.assertEqual(spbroker.default_socket_path(), "/run/one.socket")

    def test_user(self):
        with mock.patch.dict(os.environ, {"ONE_SOCKET_PATH": "", "XDG_RUNTIME_DIR": "/run/user/7"}), \
                mock.patch.object(os, "geteuid", return_value=7):
            self.assertEqual(spbroker.default_socket_path(), "/run/user/7/one.socket")

    def test_user_without_runtime_dir(self):
        with mock.patch.dict(os.environ, {"ONE_SOCKET_PATH": "", "XDG_RUNTIME_DIR": ""}), \
                mock.patch.object(os, "geteuid", return_value=7):
            with self.assertRaises(OSError) as cm:
                spbroker.default_socket_path()
            self.assertEqual(cm.exception.errno, errno.ENOENT)


# The user the agreement test plays when run as root: one of the uids the
# suites keep for another user (see cmd/one-socket's attack tests).
OTHER_UID = 1001

# The environments the agreement test compares in: ONE_SOCKET_PATH as it
# comes (a trailing slash, relative, abstract) and XDG_RUNTIME_DIR written
# every way a user might, neither, and both empty.
PATH_CASES = [
    {"ONE_SOCKET_PATH": "/tmp/explicit.socket"},
    {"ONE_SOCKET_PATH": "/run/one-socket/", "XDG_RUNTIME_DIR": "/run/user/1001"},
    {"ONE_SOCKET_PATH": "relative/one.socket"},
    {"ONE_SOCKET_PATH": "./one.socket"},
    {"ONE_SOCKET_PATH": "@abstract"},
    {"ONE_SOCKET_PATH": "", "XDG_RUNTIME_DIR": "/run/user/1001"},
    {"XDG_RUNTIME_DIR": "/run/user/1001/"},
    {"XDG_RUNTIME_DIR": "/run/user//1001/./"},
    {"XDG_RUNTIME_DIR": "//run/user/1001"},
    {"XDG_RUNTIME_DIR": "/run/user/1001/sub/.."},
    {"XDG_RUNTIME_DIR": "relative/dir"},
    {"XDG_RUNTIME_DIR": "./run"},
    {"XDG_RUNTIME_DIR": "../run"},
    {},
    {"ONE_SOCKET_PATH": "", "XDG_RUNTIME_DIR": ""},
]

def _as_user(uid: int) -> None:
    """Become uid, with its uid as group and no other groups (root only)."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


class DefaultSocketPathAgreementTest(unittest.TestCase):
    """default_socket_path gives what the Go package's DefaultSocketPath
    (the daemon's paths.BrokerSocket) gives, in the same environment and as
    the same user: each runs in a process of its own, as root and as
    another user when the test runs as root, else as the test's user."""

    def setUp(self) -> None:
        # goenc where another user may run it; the build's directory is
        # the test user's alone.
        self.dir = support.short_tempdir()
        self.addCleanup(shutil.rmtree, self.dir, True)
        os.chmod(self.dir, 0o755)
        self.goenc = shutil.copy(support.binaries()["goenc"], self.dir)

    def go(self, uid: int, env: Dict[str, str]) -> dict:
        """DefaultSocketPath's answer through goenc, run as uid with env
        alone."""
        kw: Dict[str, object] = {}
        if uid != os.geteuid():
            kw = {"user": uid, "group": uid, "extra_groups": []}
        res = subprocess.run([self.goenc], input='{"op":"default_socket_path"}\n', env=env, cwd="/",
                             capture_output=True, text=True, timeout=support.WAIT, **kw)
        self.assertEqual(res.returncode, 0, "goenc as uid %d: %s" % (uid, res.stderr))
        return json.loads(res.stdout)

    def python(self, uid: int, env: Dict[str, str]) -> dict:
        """default_socket_path's answer in a forked child that has become
        uid and has env alone: another user may not be able to run this
        interpreter (it may live in root's home)."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: answer, and never return into unittest
            status = 1
            try:
                os.close(r)
                if uid != os.geteuid():
                    _as_user(uid)
                os.environ.clear()
                os.environ.update(env)
                try:
                    out = {"path": spbroker.default_socket_path()}
                except OSError as e:
                    out = {"errno": e.errno, "text": str(e)}
                os.write(w, json.dumps(out).encode())
                status = 0
            finally:
                os._exit(status)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0, "the child as uid %d failed" % uid)
        return json.loads(data)

    def agree(self, uid: int) -> None:
        for case in PATH_CASES:
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            env.update(case)
            with self.subTest(uid=uid, env=case):
                want, got = self.go(uid, env), self.python(uid, env)
                if "error" in want:
                    self.assertEqual(got.get("errno"), errno.ENOENT, "Go fails (%s); Python gives %s" % (want["error"]["text"], got))
                else:
                    self.assertEqual(got, {"path": want["path"]})

    def test_as_test_user(self) -> None:
        self.agree(os.geteuid())

    def test_as_another_user(self) -> None:
        if os.geteuid() != 0:
            self.skipTest("playing another user needs root")
        self.agree(OTHER_UID)


if __name__ == "__main__":
    unittest.main()
