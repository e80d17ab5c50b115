"""The examples in doc/python.md, run as they are written there, against
the real daemon: the guide cannot drift from the code unnoticed."""

from __future__ import annotations

import asyncio
import re
import threading
import unittest

import spbroker
from spbroker import Mode

from . import support
from .support import WAIT, unique_key
from .test_daemon import DaemonCase, exchange

GUIDE = support.REPO / "doc" / "python.md"


def example(marker: str) -> dict:
    """Run the guide's Python block that contains marker; return its names."""
    blocks = re.findall(r"^```python\n(.*?)^```", GUIDE.read_text(), re.S | re.M)
    found = [b for b in blocks if marker in b]
    if len(found) != 1:
        raise AssertionError("%d Python blocks of %s contain %r" % (len(found), GUIDE, marker))
    names: dict = {"__name__": "guide_example"}
    exec(compile(found[0], str(GUIDE), "exec"), names)
    return names


class WireExampleTest(unittest.TestCase):
    def test_runs(self):
        names = example("validate(msg, nfds=0")
        self.assertEqual(len(names["wire"]), 1044)
        self.assertEqual(names["msg"].pair_key, b"key")


class AsyncioExampleTest(DaemonCase):
    def test_pair(self):
        get_pair_async = example("async def get_pair_async")["get_pair_async"]
        key = unique_key("asyncio")

        async def main():
            return await asyncio.wait_for(
                asyncio.gather(
                    get_pair_async(self.daemon.path, key, Mode.SERVER),
                    get_pair_async(self.daemon.path, key, Mode.CLIENT),
                ),
                WAIT,
            )

        a, b = asyncio.run(main())
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        exchange(self, a, b)

    def test_cancel_withdraws(self):
        get_pair_async = example("async def get_pair_async")["get_pair_async"]
        key = unique_key("asyncio-cancel")

        async def main():
            loop = asyncio.get_running_loop()
            task = asyncio.create_task(get_pair_async(self.daemon.path, key, Mode.CLIENT))
            # The loop keeps running the task while a thread asks the daemon.
            await loop.run_in_executor(None, self.daemon.wait_waiting, key, 1)
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            await loop.run_in_executor(None, self.daemon.wait_waiting, key, 0)

        asyncio.run(main())


class SelectorsExampleTest(DaemonCase):
    def test_pairs(self):
        wait_for_pairs = example("def wait_for_pairs")["wait_for_pairs"]
        keys = [unique_key("sel-1"), unique_key("sel-2"), unique_key("sel-3")]
        out: dict = {}
        t = threading.Thread(target=lambda: out.update(wait_for_pairs(self.daemon.path, keys)), daemon=True)
        t.start()
        for key in reversed(keys):
            self.daemon.wait_waiting(key, 1)
            server = spbroker.get_pair(self.daemon.path, key, Mode.SERVER, timeout=WAIT)
            self.addCleanup(server.close)
            server.sendall(key)
        t.join(WAIT)
        self.assertFalse(t.is_alive())
        self.assertEqual(set(out), set(keys))
        for key, peer in out.items():
            self.addCleanup(peer.close)
            peer.settimeout(WAIT)
            self.assertEqual(peer.recv(2048), key)


if __name__ == "__main__":
    unittest.main()
