"""spbroker.aio: against the real daemon, and against a broker played by
the test that sends its reply in pieces or not at all."""

from __future__ import annotations

import asyncio
import socket
import unittest
from unittest import mock

import spbroker
import spbroker.aio
from spbroker import Mode, client

from . import support
from .test_daemon import DaemonCase

WAIT = support.WAIT


class AioDaemonTest(DaemonCase):
    def test_pair_in_one_loop(self):
        key = support.unique_key("aio")

        async def both():
            return await asyncio.wait_for(
                asyncio.gather(
                    spbroker.aio.get_pair(self.daemon.path, key, Mode.SERVER),
                    spbroker.aio.get_pair(self.daemon.path, key, Mode.CLIENT),
                ),
                WAIT,
            )

        server, client_sock = asyncio.run(both())
        with server, client_sock:
            client_sock.sendall(b"ping")
            self.assertEqual(server.recv(4), b"ping")
            self.assertTrue(server.getblocking())

    def test_cancel_makes_the_broker_forget(self):
        key = support.unique_key("aio-cancel")

        async def lonely():
            await asyncio.wait_for(spbroker.aio.get_pair(self.daemon.path, key, Mode.CLIENT), 0.2)

        with self.assertRaises(asyncio.TimeoutError):
            asyncio.run(lonely())
        support.wait_until(lambda: not self.daemon.waiting(key), "the broker forgetting the request")

    def test_bad_key_before_connecting(self):
        with self.assertRaises(spbroker.InvalidKeyError):
            asyncio.run(spbroker.aio.get_pair("/nonexistent/one.socket", b"", Mode.NONE))


class AioPiecesTest(unittest.TestCase):
    """The reply comes in pieces: the loop goes on in between."""

    def setUp(self):
        support.forbid_unclosed(self)
        self.conn, self.broker = socket.socketpair()
        self.conn.setblocking(False)
        self.addCleanup(self.conn.close)
        self.addCleanup(self.broker.close)
        self.peer_a, self.peer_b = socket.socketpair()
        self.addCleanup(self.peer_a.close)
        self.addCleanup(self.peer_b.close)
        self.reply = spbroker.new_set_pair().encode()

    def test_pieces_do_not_block_the_loop(self):
        async def scenario():
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            t = asyncio.ensure_future(ticker())
            recv = asyncio.ensure_future(spbroker.aio.receive_set_pair(self.conn))
            socket.send_fds(self.broker, [self.reply[:100]], [self.peer_a.fileno()])
            await asyncio.sleep(0.3)
            before = ticks
            self.broker.sendall(self.reply[100:])
            peer = await asyncio.wait_for(recv, WAIT)
            t.cancel()
            return peer, before

        peer, ticks = asyncio.run(scenario())
        with peer:
            # The blocking receive would have held the loop for the 0.3 s.
            self.assertGreater(ticks, 5)
            peer.sendall(b"x")
            self.assertEqual(self.peer_b.recv(1), b"x")

    def test_stalled_rest(self):
        socket.send_fds(self.broker, [self.reply[:10]], [self.peer_a.fileno()])
        with mock.patch.object(client, "_REST_TIMEOUT", 0.2):
            with self.assertRaises(spbroker.IncompleteMessageError):
                asyncio.run(spbroker.aio.receive_set_pair(self.conn))

    def test_broker_closes(self):
        self.broker.sendall(self.reply[:10])
        self.broker.close()
        with self.assertRaises(spbroker.BrokerClosedError):
            asyncio.run(spbroker.aio.receive_set_pair(self.conn))

    def test_needs_nonblocking(self):
        self.conn.setblocking(True)
        with self.assertRaises(ValueError):
            asyncio.run(spbroker.aio.receive_set_pair(self.conn))


if __name__ == "__main__":
    unittest.main()
