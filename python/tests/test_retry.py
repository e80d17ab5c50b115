"""get_pair (blocking and asyncio) asking again through a broker restart:
against brokers played by the test, and against the real daemon killed
with SIGKILL and started again."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import threading
import unittest
from typing import Callable, List, Optional
from unittest import mock

import spbroker
import spbroker.aio
from spbroker import Mode, client

from . import support
from .support import WAIT, unique_key
from .test_client import SET_PAIR, Sent
from .test_daemon import Waiter, exchange

Script = Callable[[socket.socket], None]


class SerialBroker:
    """A broker played by the test on a listening socket: it accepts one
    connection per script, in order, reads its GET_PAIR, and hands the
    connection to the script, closing it afterwards."""

    def __init__(self, listener: socket.socket, scripts: List[Script]) -> None:
        self.listener = listener
        self.scripts = scripts
        self.requests: List[bytes] = []
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @classmethod
    def at(cls, path: str, scripts: List[Script]) -> "SerialBroker":
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(8)
        return cls(listener, scripts)

    def _serve(self) -> None:
        try:
            self.listener.settimeout(WAIT)
            for script in self.scripts:
                conn, _ = self.listener.accept()
                with conn:
                    conn.settimeout(WAIT)
                    request = b""
                    while len(request) < spbroker.MESSAGE_SIZE:
                        chunk = conn.recv(spbroker.MESSAGE_SIZE - len(request))
                        if not chunk:
                            break
                        request += chunk
                    self.requests.append(request)
                    script(conn)
        except BaseException as e:  # reported by close()
            self.error = e

    def close(self) -> None:
        self.thread.join(WAIT)
        self.listener.close()
        if self.thread.is_alive():
            raise AssertionError("the test's broker is still running")
        if self.error is not None:
            raise self.error


def hang_up(conn: socket.socket) -> None:
    """Close the connection without a reply, the request read."""


def silent(conn: socket.socket) -> None:
    """Never answer; wait for the client to hang up."""
    while conn.recv(4096):
        pass


class RetryCase(unittest.TestCase):
    def setUp(self):
        support.forbid_unclosed(self)
        self.dir = support.short_tempdir()
        self.addCleanup(support._remove, self.dir)
        # Every retry goes through _backoff: recording its calls tells
        # the test that get_pair failed and is about to ask again.
        self.retries: List[int] = []
        real = client._backoff

        def recorded(attempt: int, *args, **kwargs) -> float:
            self.retries.append(attempt)
            return real(attempt, *args, **kwargs)

        patcher = mock.patch.object(client, "_backoff", recorded)
        patcher.start()
        self.addCleanup(patcher.stop)

    def path(self, name: str = "one.socket") -> str:
        return os.path.join(self.dir, name)

    def unlistened(self, path: str) -> socket.socket:
        """A socket bound at path, nobody listening: ECONNREFUSED."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.bind(path)
        return s

    def serve(self, broker: SerialBroker) -> SerialBroker:
        self.addCleanup(broker.close)
        return broker

    def reply(self) -> "tuple[Script, Sent]":
        """A script that answers with a fresh socketpair end, and it."""
        sent = Sent()
        self.addCleanup(sent.close)

        def script(conn: socket.socket) -> None:
            socket.send_fds(conn, [SET_PAIR], sent.fds)
            sent.close_sent()

        return script, sent

    def wait_retried(self, n: int = 1) -> None:
        support.wait_until(lambda: len(self.retries) >= n, "get_pair retrying")

    def assert_peer(self, peer: socket.socket, sent: Sent) -> None:
        with peer:
            peer.sendall(b"hi")
            self.assertEqual(sent.far[0].recv(2), b"hi")


class BackoffTest(unittest.TestCase):
    def test_sequence(self):
        full = [client._backoff(n, 1.0, 1.0) for n in range(1, 11)]
        self.assertEqual(full, [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0, 1.0])
        half = [client._backoff(n, 1.0, 0.0) for n in range(1, 10)]
        self.assertEqual(half, [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.5, 0.5])
        self.assertEqual([client._backoff(n, 0.003, 1.0) for n in (1, 2, 30)], [0.003] * 3)
        self.assertEqual(client._backoff(10**9, 1.0, 1.0), 1.0)
        self.assertEqual(client._backoff(1, 1.0, -5), 0.005)
        self.assertEqual(client._backoff(1, 1.0, 5), 0.01)

    def test_bounds(self):
        for n in range(1, 60):
            for _ in range(20):
                d = client._backoff(n)
                self.assertLessEqual(d, client._MAX_BACKOFF)
                self.assertGreaterEqual(d, client._backoff(n, jitter=0.0))


class GetPairRetryTest(RetryCase):
    def test_missing_socket_then_broker(self):
        path = self.path()
        w = Waiter(path, b"late", Mode.SERVER)
        self.wait_retried()
        script, sent = self.reply()
        self.serve(SerialBroker.at(path, [script]))
        self.assert_peer(w.get(), sent)

    def test_nobody_listening_then_broker(self):
        path = self.path()
        listener = self.unlistened(path)
        w = Waiter(path, b"k", Mode.NONE)
        self.wait_retried()
        listener.listen(8)
        script, sent = self.reply()
        self.serve(SerialBroker(listener, [script]))
        self.assert_peer(w.get(), sent)

    def test_connection_closed_is_asked_again(self):
        script, sent = self.reply()
        fb = self.serve(SerialBroker.at(self.path(), [hang_up, hang_up, script]))
        self.assert_peer(spbroker.get_pair(self.path(), b"again", Mode.CLIENT, timeout=WAIT), sent)
        self.assertEqual(fb.requests, [spbroker.new_get_pair(b"again", Mode.CLIENT).encode()] * 3)
        self.assertEqual(self.retries, [1, 2])

    def test_timeout_after_failures_chains_the_last(self):
        path = self.path()
        self.unlistened(path)
        with self.assertRaises(TimeoutError) as cm:
            spbroker.get_pair(path, b"k", Mode.NONE, timeout=0.3)
        e = cm.exception
        self.assertEqual(e.errno, errno.ETIMEDOUT)
        self.assertIsInstance(e.__cause__, ConnectionRefusedError)
        self.assertEqual(e.__cause__.filename, path)
        self.assertRegex(str(e), r"within 0.3s; the last of \d+ attempts failed: .*Connection refused")
        self.assertTrue(self.retries)

    def test_refusals_until_the_timeout(self):
        # A broker that refuses closes the connection: asked again.
        fb = self.serve(SerialBroker.at(self.path(), [hang_up] * 3 + [silent]))
        with self.assertRaises(TimeoutError) as cm:
            spbroker.get_pair(self.path(), b"k", Mode.NONE, timeout=1.5)
        self.assertIsInstance(cm.exception.__cause__, spbroker.BrokerClosedError)
        self.assertIn("broker closed the connection without a reply", str(cm.exception))
        self.assertEqual(len(fb.requests), 4)

    def test_no_failure_plain_timeout(self):
        self.serve(SerialBroker.at(self.path(), [silent]))
        with self.assertRaises(TimeoutError) as cm:
            spbroker.get_pair(self.path(), b"lonely", Mode.CLIENT, timeout=0.1)
        self.assertIsNone(cm.exception.__cause__)
        self.assertEqual(str(cm.exception), "[Errno 110] spbroker: no peer for key b'lonely' (mode client) within 0.1s")
        self.assertEqual(self.retries, [])

    def test_retry_false(self):
        with self.assertRaises(FileNotFoundError):
            spbroker.get_pair(self.path("missing.socket"), b"k", Mode.NONE, retry=False)
        self.unlistened(self.path())
        with self.assertRaises(ConnectionRefusedError):
            spbroker.get_pair(self.path(), b"k", Mode.NONE, timeout=WAIT, retry=False)
        self.serve(SerialBroker.at(self.path("b.socket"), [hang_up]))
        with self.assertRaises(spbroker.BrokerClosedError):
            spbroker.get_pair(self.path("b.socket"), b"k", Mode.NONE, retry=False)
        self.assertEqual(self.retries, [])

    def test_other_errors_are_not_retried(self):
        two = Sent(2)
        self.addCleanup(two.close)

        def two_fds(conn):
            socket.send_fds(conn, [SET_PAIR], two.fds)
            two.close_sent()

        self.serve(SerialBroker.at(self.path("a.socket"), [two_fds]))
        with self.assertRaises(spbroker.DescriptorCountError):
            spbroker.get_pair(self.path("a.socket"), b"k", Mode.NONE, timeout=WAIT)

        def stall(conn):
            conn.sendall(SET_PAIR[:100])
            silent(conn)

        self.serve(SerialBroker.at(self.path("b.socket"), [stall]))
        with mock.patch.object(client, "_REST_TIMEOUT", 0.2):
            with self.assertRaises(spbroker.IncompleteMessageError):
                spbroker.get_pair(self.path("b.socket"), b"k", Mode.NONE, timeout=WAIT)
        self.assertEqual(self.retries, [])


class AioRetryTest(RetryCase):
    def test_missing_socket_then_broker(self):
        path = self.path()
        script, sent = self.reply()

        async def scenario():
            task = asyncio.ensure_future(spbroker.aio.get_pair(path, b"late", Mode.SERVER, timeout=WAIT))
            while not self.retries:
                await asyncio.sleep(0.005)
            self.serve(SerialBroker.at(path, [script]))
            return await task

        self.assert_peer(asyncio.run(scenario()), sent)

    def test_connection_closed_is_asked_again(self):
        script, sent = self.reply()
        fb = self.serve(SerialBroker.at(self.path(), [hang_up, script]))
        peer = asyncio.run(spbroker.aio.get_pair(self.path(), b"again", Mode.CLIENT, timeout=WAIT))
        self.assert_peer(peer, sent)
        self.assertEqual(len(fb.requests), 2)

    def test_timeout_after_failures_chains_the_last(self):
        path = self.path()
        self.unlistened(path)
        with self.assertRaises(TimeoutError) as cm:
            asyncio.run(spbroker.aio.get_pair(path, b"k", Mode.NONE, timeout=0.3))
        self.assertIsInstance(cm.exception.__cause__, ConnectionRefusedError)
        self.assertRegex(str(cm.exception), r"the last of \d+ attempts failed")

    def test_no_failure_plain_timeout(self):
        self.serve(SerialBroker.at(self.path(), [silent]))
        with self.assertRaises(TimeoutError) as cm:
            asyncio.run(spbroker.aio.get_pair(self.path(), b"lonely", Mode.CLIENT, timeout=0.1))
        self.assertIsNone(cm.exception.__cause__)
        self.assertEqual(str(cm.exception), "[Errno 110] spbroker: no peer for key b'lonely' (mode client) within 0.1s")

    def test_retry_false_and_other_errors(self):
        with self.assertRaises(FileNotFoundError):
            asyncio.run(spbroker.aio.get_pair(self.path("missing.socket"), b"k", Mode.NONE, retry=False))
        self.serve(SerialBroker.at(self.path("a.socket"), [hang_up]))
        with self.assertRaises(spbroker.BrokerClosedError):
            asyncio.run(spbroker.aio.get_pair(self.path("a.socket"), b"k", Mode.NONE, retry=False))
        two = Sent(2)
        self.addCleanup(two.close)

        def two_fds(conn):
            socket.send_fds(conn, [SET_PAIR], two.fds)
            two.close_sent()

        self.serve(SerialBroker.at(self.path("b.socket"), [two_fds]))
        with self.assertRaises(spbroker.DescriptorCountError):
            asyncio.run(spbroker.aio.get_pair(self.path("b.socket"), b"k", Mode.NONE, timeout=WAIT))
        self.assertEqual(self.retries, [])

    def test_invalid_timeout(self):
        with self.assertRaises(ValueError):
            asyncio.run(spbroker.aio.get_pair(self.path(), b"k", Mode.NONE, timeout=-1))


class DaemonRetryTest(RetryCase):
    """The real daemon: killed and started again, started late, refusing."""

    def daemon(self, **kwargs) -> support.Daemon:
        d = support.Daemon(**kwargs)
        self.addCleanup(d.stop)
        return d

    def test_killed_and_restarted(self):
        d = self.daemon()
        key = unique_key("survivor")
        w = Waiter(d.path, key, Mode.SERVER)
        d.wait_waiting(key, 1)
        d.kill_and_restart()  # SIGKILL: the socket file stays, nobody listening
        d.wait_waiting(key, 1)  # the survivor asked the new daemon
        with spbroker.get_pair(d.path, key, Mode.CLIENT, timeout=WAIT) as peer, w.get() as survivor:
            exchange(self, peer, survivor)
        self.assertTrue(self.retries)

    def test_killed_and_restarted_aio(self):
        d = self.daemon()
        key = unique_key("survivor-aio")

        async def scenario():
            loop = asyncio.get_running_loop()
            task = asyncio.ensure_future(spbroker.aio.get_pair(d.path, key, Mode.SERVER, timeout=WAIT))
            await loop.run_in_executor(None, d.wait_waiting, key, 1)
            await loop.run_in_executor(None, d.kill_and_restart)
            await loop.run_in_executor(None, d.wait_waiting, key, 1)
            other = asyncio.ensure_future(spbroker.aio.get_pair(d.path, key, Mode.CLIENT, timeout=WAIT))
            return await asyncio.gather(task, other)

        a, b = asyncio.run(scenario())
        with a, b:
            exchange(self, a, b)

    def test_started_after_the_client(self):
        path = self.path()
        key = unique_key("early")
        w = Waiter(path, key, Mode.CLIENT)
        self.wait_retried()
        d = self.daemon(path=path)
        d.wait_waiting(key, 1)
        with spbroker.get_pair(path, key, Mode.SERVER, timeout=WAIT) as peer, w.get() as early:
            exchange(self, peer, early)

    def test_refused_by_the_policy(self):
        policy = os.path.join(self.dir, "policy.conf")
        with open(policy, "w") as f:
            f.write("allow key=allowed-*\n")
        d = self.daemon(extra_args=["--policy", policy])
        with self.assertRaises(TimeoutError) as cm:
            spbroker.get_pair(d.path, b"forbidden", Mode.CLIENT, timeout=1.0)
        self.assertIsInstance(cm.exception.__cause__, ConnectionResetError)
        status = json.loads(d.ctl_run("status", "--json").stdout)
        self.assertGreaterEqual(status["denied_total"], 2)


if __name__ == "__main__":
    unittest.main()
