"""spbroker against the real daemon (cmd/one-socket), with Python and Go
(one-socketctl pair) peers, checked through the control socket
(one-socketctl list --json)."""

from __future__ import annotations

import fcntl
import selectors
import socket
import threading
import unittest
from typing import Optional

import spbroker
from spbroker import Mode

from . import support
from .support import WAIT, unique_key


class Waiter:
    """get_pair in a thread, for a peer that must wait while the test goes
    on. Always with a timeout, so a broken broker cannot hang the run."""

    def __init__(self, path: str, key: bytes, mode: Mode, retry: bool = True) -> None:
        self.result: Optional[socket.socket] = None
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, args=(path, key, mode, retry), daemon=True)
        self.thread.start()

    def _run(self, path, key, mode, retry):
        try:
            self.result = spbroker.get_pair(path, key, mode, timeout=WAIT, retry=retry)
        except BaseException as e:
            self.error = e

    def get(self) -> socket.socket:
        self.thread.join(WAIT + 5)
        if self.thread.is_alive():
            raise AssertionError("get_pair did not return")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def exchange(test: unittest.TestCase, a: socket.socket, b: socket.socket) -> None:
    """Check that a and b are the two ends of one connection."""
    a.settimeout(WAIT)
    b.settimeout(WAIT)
    a.sendall(b"from a")
    test.assertEqual(b.recv(64), b"from a")
    b.sendall(b"from b")
    test.assertEqual(a.recv(64), b"from b")


class DaemonCase(unittest.TestCase):
    abstract = False
    daemon: support.Daemon

    @classmethod
    def setUpClass(cls):
        cls.daemon = support.Daemon(abstract=cls.abstract)

    @classmethod
    def tearDownClass(cls):
        status = cls.daemon.stop()
        if status != 0:
            raise AssertionError("one-socket exited with status %s:\n%s" % (status, cls.daemon.log()))

    def run(self, result=None):
        # On failure, show what the daemon logged.
        before = len(result.failures) + len(result.errors) if result is not None else 0
        out = super().run(result)
        if result is not None and len(result.failures) + len(result.errors) > before:
            support.log("one-socket log:\n" + self.daemon.log())
        return out

    def setUp(self):
        support.forbid_unclosed(self)

    def waiter(self, key: bytes, mode: Mode, retry: bool = True) -> Waiter:
        w = Waiter(self.daemon.path, key, mode, retry)
        self.addCleanup(lambda: w.result and w.result.close())
        return w

    def get_pair(self, key: bytes, mode: Mode) -> socket.socket:
        s = spbroker.get_pair(self.daemon.path, key, mode, timeout=WAIT)
        self.addCleanup(s.close)
        return s

    def go_peer(self, key: bytes, mode: str):
        """one-socketctl pair KEY --mode MODE, the Go client, on pipes."""
        p = self.daemon.pair_proc(key, mode)

        def reap():
            if p.poll() is None:
                p.kill()
            p.communicate()

        self.addCleanup(reap)
        return p

    def talk(self, p, sock: socket.socket) -> None:
        """Both ways between a Go peer p and sock, then both finish."""
        sock.settimeout(WAIT)
        sock.sendall(b"from python\n")
        sock.shutdown(socket.SHUT_WR)
        out, err = p.communicate(b"from go\n", timeout=WAIT)
        self.assertEqual(p.returncode, 0, err.decode())
        self.assertEqual(out, b"from python\n")
        got = b""
        while True:
            chunk = sock.recv(64)
            if not chunk:
                break
            got += chunk
        self.assertEqual(got, b"from go\n")

    def pair_python(self, key: bytes, first: Mode, second: Mode):
        """first waits, second comes: return both sockets."""
        w = self.waiter(key, first)
        self.daemon.wait_waiting(key, 1)
        s2 = self.get_pair(key, second)
        s1 = w.get()
        return s1, s2


class PairTest(DaemonCase):
    def test_python_python(self):
        key = unique_key("py")
        server, cl = self.pair_python(key, Mode.SERVER, Mode.CLIENT)
        for s in (server, cl):
            self.assertEqual((s.family, s.type), (socket.AF_UNIX, socket.SOCK_STREAM))
            self.assertTrue(fcntl.fcntl(s.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
        exchange(self, server, cl)
        self.assertEqual(self.daemon.waiting(key), [])

    def test_none_none(self):
        key = unique_key("none")
        a, b = self.pair_python(key, Mode.NONE, Mode.NONE)
        exchange(self, a, b)

    def test_modes_pair_only_when_compatible(self):
        key = unique_key("modes")
        server = self.waiter(key, Mode.SERVER)
        self.daemon.wait_waiting(key, 1)
        none = self.waiter(key, Mode.NONE)
        waiting = self.daemon.wait_waiting(key, 2)
        self.assertEqual([w["mode"] for w in waiting], ["server", "none"])

        cl = self.get_pair(key, Mode.CLIENT)  # takes the server, not the none
        exchange(self, server.get(), cl)
        self.assertEqual([w["mode"] for w in self.daemon.wait_waiting(key, 1)], ["none"])

        other = self.get_pair(key, Mode.NONE)
        exchange(self, none.get(), other)
        self.daemon.wait_waiting(key, 0)

    def test_same_mode_does_not_pair(self):
        key = unique_key("same")
        c1 = self.waiter(key, Mode.CLIENT)
        self.daemon.wait_waiting(key, 1)
        c2 = self.waiter(key, Mode.CLIENT)
        self.assertEqual([w["mode"] for w in self.daemon.wait_waiting(key, 2)], ["client", "client"])
        # The first server takes the older client.
        exchange(self, self.get_pair(key, Mode.SERVER), c1.get())
        exchange(self, self.get_pair(key, Mode.SERVER), c2.get())

    def test_fifo_among_waiters(self):
        key = unique_key("fifo")
        conns = []
        for i in range(3):
            c = spbroker.connect(self.daemon.path, nonblocking=True)
            self.addCleanup(c.close)
            spbroker.send_get_pair(c, key, Mode.SERVER)
            # Each one waits before the next asks, so the order is known.
            self.daemon.wait_waiting(key, i + 1)
            conns.append(c)
        for i in range(3):
            cl = self.get_pair(key, Mode.CLIENT)
            sel = selectors.DefaultSelector()
            sel.register(conns[i], selectors.EVENT_READ)
            self.assertTrue(sel.select(WAIT), "waiter %d got no reply" % i)
            sel.close()
            peer = spbroker.receive_set_pair(conns[i])
            self.addCleanup(peer.close)
            exchange(self, peer, cl)
            for later in conns[i + 1 :]:
                with self.assertRaises(BlockingIOError):
                    spbroker.receive_set_pair(later)
            self.assertEqual(len(self.daemon.waiting(key)), 2 - i)

    def test_nonblocking_receive_before_reply(self):
        key = unique_key("nb")
        c = spbroker.connect(self.daemon.path, nonblocking=True)
        self.addCleanup(c.close)
        spbroker.send_get_pair(c, key, Mode.NONE)
        self.daemon.wait_waiting(key, 1)
        for _ in range(3):
            with self.assertRaises(BlockingIOError):
                spbroker.receive_set_pair(c)
        # Nothing was consumed: the request still waits and is answered.
        self.daemon.wait_waiting(key, 1)
        other = self.get_pair(key, Mode.NONE)
        sel = selectors.DefaultSelector()
        self.addCleanup(sel.close)
        sel.register(c, selectors.EVENT_READ)
        self.assertTrue(sel.select(WAIT))
        peer = spbroker.receive_set_pair(c)
        self.addCleanup(peer.close)
        exchange(self, peer, other)

    def test_timeout_makes_the_broker_forget(self):
        key = unique_key("timeout")
        with self.assertRaises(TimeoutError):
            spbroker.get_pair(self.daemon.path, key, Mode.SERVER, timeout=0.2)
        # The broker sees the connection close and drops the request...
        self.daemon.wait_waiting(key, 0)
        # ...so the next client waits instead of getting the dead one,
        cl = self.waiter(key, Mode.CLIENT)
        self.assertEqual([w["mode"] for w in self.daemon.wait_waiting(key, 1)], ["client"])
        # and pairs with a live server.
        exchange(self, self.get_pair(key, Mode.SERVER), cl.get())

    def test_drop_ends_the_wait(self):
        key = unique_key("drop")
        w = self.waiter(key, Mode.CLIENT, retry=False)
        self.daemon.wait_waiting(key, 1)
        self.daemon.ctl_run("drop", "--hex", key.hex())
        with self.assertRaises(ConnectionResetError):
            w.get()

    def test_dropped_request_is_asked_again(self):
        # A drop looks like a restart to the client, which asks again: once
        # drop has answered, the one waiting is a new connection.
        key = unique_key("drop-again")
        w = self.waiter(key, Mode.CLIENT)
        self.daemon.wait_waiting(key, 1)
        self.assertIn(b"dropped 1 waiting client", self.daemon.ctl_run("drop", "--hex", key.hex()).stdout)
        self.daemon.wait_waiting(key, 1)
        exchange(self, self.get_pair(key, Mode.SERVER), w.get())

    def test_keys(self):
        for key in (b"\x00", b"k", b"\xff" * 1024, bytes(range(256)) * 4, unique_key("k").ljust(1024, b"\0")):
            with self.subTest(length=len(key), start=key[:4]):
                a, b = self.pair_python(key, Mode.CLIENT, Mode.SERVER)
                exchange(self, a, b)
        # Keys are compared by length too: "a" is not "a\0".
        base = unique_key("len")
        w = self.waiter(base, Mode.NONE)
        self.daemon.wait_waiting(base, 1)
        w2 = self.waiter(base + b"\0", Mode.NONE)
        self.daemon.wait_waiting(base + b"\0", 1)
        self.daemon.wait_waiting(base, 1)
        exchange(self, self.get_pair(base, Mode.NONE), w.get())
        exchange(self, self.get_pair(base + b"\0", Mode.NONE), w2.get())

    def test_invalid_keys_send_nothing(self):
        key = unique_key("after-invalid")
        c = spbroker.connect(self.daemon.path)
        self.addCleanup(c.close)
        for bad in (b"", b"x" * 1025):
            with self.assertRaises(spbroker.InvalidKeyError):
                spbroker.send_get_pair(c, bad, Mode.NONE)
            with self.assertRaises(spbroker.InvalidKeyError):
                spbroker.get_pair(self.daemon.path, bad, Mode.NONE, timeout=WAIT)
        # Had anything gone out, the broker would have closed this
        # connection for a bad request; instead a good one still works.
        spbroker.send_get_pair(c, key, Mode.NONE)
        self.daemon.wait_waiting(key, 1)
        other = self.get_pair(key, Mode.NONE)
        c.settimeout(WAIT)
        peer = spbroker.receive_set_pair(c)
        self.addCleanup(peer.close)
        exchange(self, peer, other)


class GoPeerTest(DaemonCase):
    """one-socketctl pair, the Go client, bridged to pipes."""

    def test_go_server_python_client(self):
        key = unique_key("go-server")
        p = self.go_peer(key, "server")
        self.assertEqual([w["mode"] for w in self.daemon.wait_waiting(key, 1)], ["server"])
        self.talk(p, self.get_pair(key, Mode.CLIENT))

    def test_python_server_go_client(self):
        key = unique_key("go-client")
        w = self.waiter(key, Mode.SERVER)
        self.daemon.wait_waiting(key, 1)
        p = self.go_peer(key, "client")
        self.talk(p, w.get())

    def test_none_none(self):
        key = unique_key("go-none")
        p = self.go_peer(key, "none")
        self.daemon.wait_waiting(key, 1)
        self.talk(p, self.get_pair(key, Mode.NONE))


class AbstractTest(DaemonCase):
    abstract = True

    def test_pair_on_abstract_socket(self):
        self.assertTrue(self.daemon.path.startswith("@"))
        key = unique_key("abstract")
        a, b = self.pair_python(key, Mode.SERVER, Mode.CLIENT)
        exchange(self, a, b)
        c = spbroker.connect(self.daemon.path.encode(), nonblocking=True)
        self.addCleanup(c.close)
        self.assertEqual(c.getpeername(), b"\0" + self.daemon.path[1:].encode())

    def test_go_peer_on_abstract_socket(self):
        key = unique_key("abstract-go")
        p = self.go_peer(key, "none")
        self.daemon.wait_waiting(key, 1)
        self.talk(p, self.get_pair(key, Mode.NONE))


if __name__ == "__main__":
    unittest.main()
