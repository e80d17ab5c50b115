"""The shared test vectors (libspbroker/testdata/vectors, see its README)
through the Python package: every message through decode and validate,
every socket scenario through connect, send_get_pair, receive_set_pair and
get_pair. The Go package and both C archives run the same files; the
vectors say, per API, the errno, the exception type and the exact text."""

from __future__ import annotations

import array
import errno
import json
import os
import select
import socket
import sys
import tempfile
import threading
import unittest
from typing import Any, Dict, List, Optional

import spbroker
from spbroker import Mode

from . import support

VECTORS = support.REPO / "libspbroker" / "testdata" / "vectors"

MODES = {"none": Mode.NONE, "client": Mode.CLIENT, "server": Mode.SERVER, "max": 3}


def load(name: str) -> Dict[str, Any]:
    with open(str(VECTORS / name), encoding="utf-8") as f:
        return json.load(f)


def message_bytes(v: Dict[str, Any]) -> bytes:
    b = bytes.fromhex(v["hex"])
    return b + bytes(v["length"] - len(b))


@unittest.skipUnless(sys.byteorder == "little", "the vectors are little-endian")
class VectorTest(unittest.TestCase):
    def check(self, what: str, want: Dict[str, Any], exc: Optional[BaseException], dir: str = "") -> None:
        """Compare the exception a call raised (None: it returned) with a
        vector's Python expectation."""
        if want["ok"]:
            self.assertIsNone(exc, what)
            return
        self.assertIsNotNone(exc, what + ": no exception")
        assert exc is not None
        self.assertEqual(want["type"], type(exc).__name__, what)
        self.assertEqual(want["message"].replace("{dir}", dir), str(exc), what)
        if want.get("errno"):
            self.assertEqual(getattr(errno, want["errno"]), getattr(exc, "errno", None), what)
        else:
            self.assertIsNone(getattr(exc, "errno", None), what)


class MessageVectors(VectorTest):
    def test_messages(self) -> None:
        vectors = load("messages.json")["messages"]
        self.assertTrue(vectors)
        for v in vectors:
            name = v["name"]
            data = message_bytes(v)
            try:
                msg = spbroker.decode(data)
            except spbroker.ProtocolError as e:
                self.assertIsNone(v["decoded"], name + ": decode failed: %s" % e)
                self.check(name + ": decode", v["decode_py"], e)
                continue
            self.assertIsNotNone(v["decoded"], name + ": decode did not fail")
            d = v["decoded"]
            got = {
                "request": msg.request,
                "flags": msg.flags,
                "size": msg.size,
                "mode": msg.mode,
                "key_len": msg.key_len,
                "key": msg.pair_key.hex(),
                "u64": msg.u64,
            }
            self.assertEqual(d, got, name + ": decode")
            exc: Optional[BaseException] = None
            try:
                spbroker.validate(msg, v["nfds"], v["expected"])
            except spbroker.ProtocolError as e:
                exc = e
            self.check(name + ": validate", v["py"], exc)


class Scenario:
    """One socket scenario being run: the client's end and the broker's end
    of a socketpair, and the kept ends of the descriptors passed."""

    def __init__(self, test: VectorTest, name: str, dir: str) -> None:
        self.test = test
        self.name = name
        self.dir = dir
        self.client, self.broker = socket.socketpair()
        self.broker_open = True
        self.kept: List[Any] = []  # sockets, or _PipeEnd
        self.others: List[socket.socket] = []
        self.server: Optional[threading.Thread] = None
        self.server_result: Dict[str, Any] = {}
        self.served = b""

    def serve(self, st: Dict[str, Any]) -> None:
        """Listen at st's path and, in a thread, play the broker for one
        connection: wait for the request, read it or not, reply or not,
        close."""
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.others.append(lsock)
        lsock.bind(self.path(st["path"]))
        lsock.listen(4)
        reply = bytes.fromhex(st.get("hex", ""))
        result: Dict[str, Any] = {"read": b"", "kept": [], "error": None}

        def run() -> None:
            try:
                if not select.select([lsock], [], [], 10.0)[0]:
                    raise RuntimeError("no connection")
                conn, _ = lsock.accept()
                with conn:
                    if not select.select([conn], [], [], 10.0)[0]:
                        raise RuntimeError("no request")
                    if st.get("read"):
                        got = b""
                        while len(got) < spbroker.MESSAGE_SIZE and select.select([conn], [], [], 10.0)[0]:
                            data = conn.recv(spbroker.MESSAGE_SIZE - len(got))
                            if not data:
                                break
                            got += data
                        result["read"] = got
                    if reply:
                        fds = []
                        for _ in range(st.get("fds", 0)):
                            a, b = socket.socketpair()
                            result["kept"].append(a)
                            fds.append(b)
                        anc = []
                        if fds:
                            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [f.fileno() for f in fds]).tobytes())]
                        conn.sendmsg([reply], anc)
                        for f in fds:
                            f.close()
            except BaseException as e:  # reported by join_server
                result["error"] = e

        self.server = threading.Thread(target=run, daemon=True)
        self.server_result = result
        self.server.start()

    def join_server(self) -> None:
        if self.server is None:
            return
        self.server.join(30.0)
        self.test.assertFalse(self.server.is_alive(), self.name + ": the broker played here hangs")
        self.server = None
        self.kept.extend(self.server_result["kept"])
        self.served = self.server_result["read"]
        if self.server_result["error"] is not None:
            raise self.server_result["error"]

    def path(self, p: str) -> str:
        return p.replace("{dir}", self.dir)

    def call(self, what: str, want: Dict[str, Any], fn: Any) -> Any:
        res = None
        exc: Optional[BaseException] = None
        try:
            res = fn()
        except (OSError, ValueError) as e:
            exc = e
        self.test.check(self.name + ": " + what, want, exc, self.dir)
        return res

    def step(self, st: Dict[str, Any]) -> None:
        do = st["do"]
        if do == "bind":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.others.append(s)
            s.bind(self.path(st["path"]))
        elif do == "listen":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.others.append(s)
            s.bind(self.path(st["path"]))
            s.listen(0)
        elif do == "broker_write":
            data = bytes.fromhex(st.get("hex", ""))
            fds: List[int] = []
            for _ in range(st.get("fds", 0)):
                if st.get("pipes"):
                    r, w = os.pipe()
                    self.kept.append(_PipeEnd(r))
                    fds.append(w)
                else:
                    a, b = socket.socketpair()
                    self.kept.append(a)
                    fds.append(b.detach())
            anc = []
            if fds:
                anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
            n = self.broker.sendmsg([data], anc)
            for fd in fds:
                os.close(fd)
            self.test.assertEqual(len(data), n, self.name)
        elif do == "broker_read":
            self.test.assertEqual(st.get("hex", ""), drain(self.broker).hex(), self.name + ": broker_read")
        elif do == "broker_close":
            self.broker.close()
            self.broker_open = False
        elif do == "set_nonblock":
            self.client.setblocking(False)
        elif do == "connect":
            s = self.call(do, st["py"], lambda: spbroker.connect(self.path(st["path"]), nonblocking=st.get("nonblock", False)))
            if s is not None:
                self.others.append(s)  # open to the end, as in every runner
        elif do == "serve":
            self.serve(st)
        elif do == "served":
            self.test.assertEqual(st["hex"], self.served.hex(), self.name + ": served")
        elif do == "get_pair":
            peer = self.call(
                do,
                st["py"],
                lambda: spbroker.get_pair(self.path(st["path"]), st.get("key", "").encode(), MODES[st["mode"]], 10.0, retry=False),
            )
            self.join_server()
            if peer is not None:
                with peer:
                    self.test.assertTrue(self.kept, self.name)
                    self.test.assertTrue(
                        connected(peer, self.kept[0]) and connected(self.kept[0], peer),
                        self.name + ": the descriptor received is not the one sent",
                    )
        elif do == "send_get_pair":
            self.call(do, st["py"], lambda: spbroker.send_get_pair(self.client, st.get("key", "").encode(), MODES[st["mode"]]))
        elif do == "receive_set_pair":
            peer = self.call(do, st["py"], lambda: spbroker.receive_set_pair(self.client))
            if peer is not None:
                with peer:
                    self.test.assertTrue(self.kept, self.name)
                    self.test.assertTrue(
                        connected(peer, self.kept[0]) and connected(self.kept[0], peer),
                        self.name + ": the descriptor received is not the one sent",
                    )
            self.test.assertEqual(st.get("remaining", 0), len(drain(self.client)), self.name + ": bytes left unread")
        else:
            self.test.fail("%s: unknown step %r" % (self.name, do))

    def finish(self) -> None:
        """Close both ends; every descriptor passed must be closed by now."""
        self.client.close()
        self.broker.close()
        try:
            for i, k in enumerate(self.kept):
                self.test.assertTrue(closed(k), "%s: descriptor %d passed was left open" % (self.name, i))
        finally:
            for s in self.kept + self.others:
                s.close()


class _PipeEnd:
    """The read end of a pipe, with the few socket methods closed() uses."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def recv(self, n: int) -> bytes:
        return os.read(self.fd, n)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def drain(sock: socket.socket) -> bytes:
    """What is queued on sock, read without waiting (descriptors closed)."""
    out = b""
    while len(out) < 4000:
        try:
            data, anc, _, _ = sock.recvmsg(4000 - len(out), socket.CMSG_SPACE(253 * 4), socket.MSG_DONTWAIT)
        except (BlockingIOError, ConnectionResetError):
            break
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                for fd in fds:
                    socket.close(fd)
        if not data:
            break
        out += data
    return out


def connected(a: socket.socket, b: socket.socket) -> bool:
    a.send(b"x")
    r, _, _ = select.select([b], [], [], 5.0)
    return bool(r) and b.recv(1) == b"x"


def closed(s: Any) -> bool:
    r, _, _ = select.select([s], [], [], 5.0)
    return bool(r) and s.recv(1) == b""


class SocketVectors(VectorTest):
    def test_scenarios(self) -> None:
        scenarios = load("sockets.json")["scenarios"]
        self.assertTrue(scenarios)
        for sc in scenarios:
            with self.subTest(sc["name"]), tempfile.TemporaryDirectory(prefix="spbv") as dir:
                s = Scenario(self, sc["name"], dir)
                try:
                    for st in sc["steps"]:
                        s.step(st)
                finally:
                    s.finish()


if __name__ == "__main__":
    unittest.main()
