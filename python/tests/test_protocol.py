"""The wire format: encode, decode and validate, on their own and against
the Go package libspbroker (through the goenc helper, built from the same
tree, so the comparison can never go stale as committed fixtures could)."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import unittest
from typing import List

import spbroker
from spbroker import Message, Mode, Request

from . import support


def native(n: int, size: int) -> bytes:
    return n.to_bytes(size, sys.byteorder)


def go(requests: List[dict]) -> List[dict]:
    """Answers of the Go helper, one per request."""
    lines = "".join(json.dumps(r) + "\n" for r in requests)
    res = subprocess.run(
        [support.binaries()["goenc"]], input=lines, capture_output=True, text=True, timeout=support.WAIT
    )
    if res.returncode != 0:
        raise AssertionError("goenc failed: " + res.stderr)
    answers = [json.loads(line) for line in res.stdout.splitlines()]
    if len(answers) != len(requests):
        raise AssertionError("goenc answered %d of %d requests" % (len(answers), len(requests)))
    return answers


def go_encode_request(m: Message) -> dict:
    return {
        "op": "encode",
        "request": m.request,
        "flags": m.flags,
        "size": m.size,
        "mode": m.mode,
        "key_len": m.key_len,
        "key": bytes(m.key[:1024]).hex(),
        "u64": m.u64,
    }


def raw(request=1, flags=1, size=1028, mode=0, key_len=3, key=b"abc", u64=None, length=1044) -> bytes:
    """A message built by hand, field by field, independently of encode."""
    b = bytearray(length)
    b[0:4] = native(request, 4)
    b[4:8] = native(flags, 4)
    b[8:12] = native(size, 4)
    if u64 is None:
        b[12:14] = native(mode, 2)
        b[14:16] = native(key_len, 2)
        b[16 : 16 + len(key)] = key
    else:
        b[12:20] = native(u64, 8)
    return bytes(b)


class ConstantsTest(unittest.TestCase):
    def test_values(self):
        self.assertEqual(spbroker.PROTOCOL_VERSION, 1)
        self.assertEqual(spbroker.VERSION_MASK, 0xF)
        self.assertEqual(spbroker.MAX_KEY_LENGTH, 1024)
        self.assertEqual(spbroker.MAX_FDS, 64)
        self.assertEqual(spbroker.HEADER_SIZE, 12)
        self.assertEqual(spbroker.GET_PAIR_PAYLOAD_SIZE, 1028)
        self.assertEqual(spbroker.SET_PAIR_PAYLOAD_SIZE, 8)
        self.assertEqual(spbroker.DOCUMENTED_MESSAGE_SIZE, 1040)
        self.assertEqual(spbroker.MESSAGE_SIZE, 1044)
        self.assertEqual([int(r) for r in Request], [0, 1, 2, 3])
        self.assertEqual([int(m) for m in Mode], [0, 1, 2, 3])

    def test_mode_peer(self):
        self.assertIs(Mode.CLIENT.peer, Mode.SERVER)
        self.assertIs(Mode.SERVER.peer, Mode.CLIENT)
        self.assertIs(Mode.NONE.peer, Mode.NONE)
        self.assertEqual(str(Mode.SERVER), "server")


class EncodeTest(unittest.TestCase):
    def test_get_pair_layout(self):
        b = spbroker.new_get_pair(b"abc", Mode.SERVER).encode()
        self.assertEqual(len(b), 1044)
        self.assertEqual(b, raw(request=1, flags=1, size=1028, mode=2, key_len=3, key=b"abc"))
        self.assertEqual(b[16:19], b"abc")
        self.assertEqual(b[19:], bytes(1044 - 19), "key bytes past key_len and the padding must be zero")

    @unittest.skipUnless(sys.byteorder == "little", "the literal bytes are those of a little-endian host")
    def test_get_pair_literal_little_endian(self):
        b = spbroker.encode(spbroker.new_get_pair(b"k", Mode.CLIENT))
        self.assertEqual(b[:17].hex(), "01000000" "01000000" "04040000" "0100" "0100" "6b")

    def test_set_pair_layout(self):
        b = spbroker.new_set_pair().encode()
        self.assertEqual(b, raw(request=2, flags=1, size=8, u64=0))
        self.assertEqual(b[12:], bytes(1032))
        m = spbroker.new_set_pair()
        m.u64 = 0x0102030405060708
        self.assertEqual(m.encode(), raw(request=2, flags=1, size=8, u64=0x0102030405060708))

    def test_key_clipped_to_key_len(self):
        m = Message(request=Request.GET_PAIR, flags=1, size=1028, mode=0, key_len=2, key=b"abcdef")
        self.assertEqual(m.encode(), raw(key_len=2, key=b"ab"))
        m = Message(request=Request.GET_PAIR, flags=1, size=1028, key_len=4000, key=b"x" * 1500)
        b = m.encode()
        self.assertEqual(len(b), 1044)
        self.assertEqual(b[16:1040], b"x" * 1024)
        self.assertEqual(b[1040:], bytes(4))

    def test_other_requests_carry_u64(self):
        # Any request but GET_PAIR is encoded with the SET_PAIR view.
        m = Message(request=7, flags=0x31, size=99, mode=2, key_len=3, key=b"abc", u64=5)
        self.assertEqual(m.encode(), raw(request=7, flags=0x31, size=99, u64=5))

    def test_same_bytes_as_go(self):
        msgs = [
            spbroker.new_get_pair(b"k", Mode.NONE),
            spbroker.new_get_pair(b"key", Mode.CLIENT),
            spbroker.new_get_pair(bytes(range(256)) * 4, Mode.SERVER),  # 1024 bytes, every byte value
            spbroker.new_get_pair(b"\0\0", Mode.SERVER),
            spbroker.new_set_pair(),
            Message(request=2, flags=1, size=8, u64=0xFFFFFFFFFFFFFFFF),
            Message(request=0, flags=0, size=0),
            Message(request=3, flags=0xF1, size=1028, u64=1),
            Message(request=0xFFFFFFFF, flags=0xFFFFFFFF, size=0xFFFFFFFF),
            Message(request=1, flags=2, size=1028, mode=3, key_len=0, key=b""),
            Message(request=1, flags=1, size=1028, mode=0xFFFF, key_len=1025, key=b"z" * 1024),
            Message(request=1, flags=1, size=1028, mode=1, key_len=0xFFFF, key=b"y" * 1024),
            Message(request=1, flags=1, size=1028, mode=1, key_len=2, key=b"abcdef"),
        ]
        answers = go([go_encode_request(m) for m in msgs])
        for m, a in zip(msgs, answers):
            with self.subTest(msg=m):
                self.assertEqual(spbroker.encode(m).hex(), a["hex"])


class DecodeTest(unittest.TestCase):
    def test_1040_and_1044_bytes(self):
        b = raw(mode=1, key_len=3, key=b"abc")
        for n in (1040, 1041, 1043, 1044):
            with self.subTest(length=n):
                m = spbroker.decode(b[:n])
                self.assertEqual((m.request, m.flags, m.size, m.mode, m.key_len, m.key), (1, 1, 1028, 1, 3, b"abc"))
                self.assertEqual(m.pair_key, b"abc")
                self.assertEqual(m.version, 1)
                spbroker.validate(m, 0, [Request.GET_PAIR])

    def test_wrong_lengths(self):
        for n in (0, 1, 1039, 1045, 2088):
            with self.subTest(length=n):
                with self.assertRaises(spbroker.LengthError) as cm:
                    spbroker.decode(bytes(n))
                e = cm.exception
                self.assertEqual((e.kind, e.field, e.value), ("length", "length", n))
                self.assertEqual(str(e), "spbroker: wrong message length: length %d" % n)

    def test_key_past_key_len_ignored(self):
        b = bytearray(raw(key_len=2, key=b"abc"))
        b[100] = 0x55  # junk in the key field, beyond key_len
        m = spbroker.decode(b)
        self.assertEqual(m.key, b"ab")
        self.assertEqual(spbroker.decode(raw(key_len=5000, key=b"q" * 1024)).key, b"q" * 1024)

    def test_both_views(self):
        m = spbroker.decode(raw(request=2, flags=1, size=8, u64=0x0003000200000000 | 0x0002_0001))
        self.assertEqual(m.u64, 0x0003000200020001)
        self.assertEqual((m.mode, m.key_len), (1, 2))

    def test_buffer_types(self):
        b = raw()
        for v in (b, bytearray(b), memoryview(b), memoryview(bytearray(b))):
            self.assertEqual(spbroker.decode(v), spbroker.decode(b))

    def test_round_trip(self):
        m = spbroker.new_get_pair(b"\xff" * 1024, Mode.SERVER)
        for wire in (m.encode(), m.encode()[:1040]):
            d = spbroker.decode(wire)
            self.assertEqual((d.request, d.flags, d.size, d.mode, d.key_len, d.key), (1, 1, 1028, 2, 1024, m.key))
            self.assertEqual(d.encode(), m.encode())
        m = spbroker.new_set_pair()
        m.u64 = 42
        for wire in (m.encode(), m.encode()[:1040]):
            d = spbroker.decode(wire)
            self.assertEqual((d.request, d.flags, d.size, d.u64), (2, 1, 8, 42))
            self.assertEqual(d.encode(), m.encode())

    def test_same_fields_as_go(self):
        wires = [
            raw(),
            raw(length=1040),
            raw(mode=2, key_len=1024, key=bytes(range(256)) * 4),
            raw(request=2, flags=1, size=8, u64=7),
            raw(request=9, flags=0x21, size=3, mode=5, key_len=40000, key=b"w" * 1024),
        ]
        answers = go([{"op": "check", "hex": w.hex(), "nfds": 0} for w in wires])
        for w, a in zip(wires, answers):
            m = spbroker.decode(w)
            got = {"request": m.request, "flags": m.flags, "size": m.size, "mode": m.mode,
                   "key_len": m.key_len, "key": m.pair_key.hex(), "u64": m.u64}
            self.assertEqual(got, a["message"])


class ValidateTest(unittest.TestCase):
    def check(self, wire: bytes, nfds: int, expected, cls, field: str, value: int, text: str):
        m = spbroker.decode(wire)
        with self.assertRaises(cls) as cm:
            spbroker.validate(m, nfds, expected)
        e = cm.exception
        self.assertIsInstance(e, spbroker.ProtocolError)
        self.assertIsInstance(e, OSError)
        self.assertEqual(e.errno, errno.EPROTO)
        self.assertEqual((e.field, e.value), (field, value))
        self.assertEqual(e.kind, cls.kind)
        self.assertEqual(str(e), text)

    def test_each_rule(self):
        GP, SP = Request.GET_PAIR, Request.SET_PAIR
        self.check(raw(flags=0), 0, None, spbroker.VersionError, "version", 0,
                   "spbroker: unsupported protocol version: version 0")
        self.check(raw(flags=2), 0, None, spbroker.VersionError, "version", 2,
                   "spbroker: unsupported protocol version: version 2")
        self.check(raw(flags=0x11), 0, None, spbroker.FlagsError, "flags", 0x11,
                   "spbroker: reserved flag bits set: flags 0x11")
        self.check(raw(flags=0x80000001), 0, None, spbroker.FlagsError, "flags", 0x80000001,
                   "spbroker: reserved flag bits set: flags 0x80000001")
        for r in (0, 3, 0x1234):
            self.check(raw(request=r), 0, None, spbroker.RequestError, "request", r,
                       "spbroker: invalid request type: request 0x%x" % r)
        self.check(raw(size=8), 0, None, spbroker.SizeError, "size", 8,
                   "spbroker: wrong payload size: size 8")
        self.check(raw(request=2, size=1028, u64=0), 1, None, spbroker.SizeError, "size", 1028,
                   "spbroker: wrong payload size: size 1028")
        self.check(raw(), 1, None, spbroker.DescriptorCountError, "descriptors", 1,
                   "spbroker: wrong number of descriptors: descriptors 1")
        for n in (0, 2, 253):
            self.check(raw(request=2, size=8, u64=0), n, None, spbroker.DescriptorCountError, "descriptors", n,
                       "spbroker: wrong number of descriptors: descriptors %d" % n)
        self.check(raw(), 0, [SP], spbroker.UnexpectedTypeError, "request", 1,
                   "spbroker: unexpected request type: request GET_PAIR")
        self.check(raw(request=2, size=8, u64=0), 1, [GP], spbroker.UnexpectedTypeError, "request", 2,
                   "spbroker: unexpected request type: request SET_PAIR")
        self.check(raw(), 0, [], spbroker.UnexpectedTypeError, "request", 1,
                   "spbroker: unexpected request type: request GET_PAIR")
        self.check(raw(mode=3), 0, None, spbroker.ModeError, "mode", 3,
                   "spbroker: invalid pairing mode: mode 3")
        self.check(raw(mode=0xFFFF), 0, [GP], spbroker.ModeError, "mode", 0xFFFF,
                   "spbroker: invalid pairing mode: mode 65535")
        for n in (0, 1025, 0xFFFF):
            self.check(raw(key_len=n, key=b""), 0, None, spbroker.KeyLengthError, "key_len", n,
                       "spbroker: key length out of range 1..1024: key_len %d" % n)

    def test_order(self):
        # Each message breaks its rule and every later one: the first wins.
        self.check(raw(request=0, flags=0x10, size=1, mode=9, key_len=0), 5, [], spbroker.VersionError, "version", 0,
                   "spbroker: unsupported protocol version: version 0")
        self.check(raw(request=0, flags=0x11, size=1, mode=9, key_len=0), 5, [], spbroker.FlagsError, "flags", 0x11,
                   "spbroker: reserved flag bits set: flags 0x11")
        self.check(raw(request=0, size=1, mode=9, key_len=0), 5, [], spbroker.RequestError, "request", 0,
                   "spbroker: invalid request type: request 0x0")
        self.check(raw(size=1, mode=9, key_len=0), 5, [], spbroker.SizeError, "size", 1,
                   "spbroker: wrong payload size: size 1")
        self.check(raw(mode=9, key_len=0), 5, [], spbroker.DescriptorCountError, "descriptors", 5,
                   "spbroker: wrong number of descriptors: descriptors 5")
        self.check(raw(mode=9, key_len=0), 0, [], spbroker.UnexpectedTypeError, "request", 1,
                   "spbroker: unexpected request type: request GET_PAIR")
        self.check(raw(mode=9, key_len=0), 0, None, spbroker.ModeError, "mode", 9,
                   "spbroker: invalid pairing mode: mode 9")

    def test_valid(self):
        for key_len in (1, 1024):
            spbroker.validate(spbroker.decode(raw(key_len=key_len, key=b"k" * key_len)), 0)
        for mode in (0, 1, 2):
            spbroker.validate(spbroker.decode(raw(mode=mode)), 0, [Request.GET_PAIR, Request.SET_PAIR])
        # A SET_PAIR's u64 is not a rule of validate; receive_set_pair checks it.
        spbroker.validate(spbroker.decode(raw(request=2, size=8, u64=3)), 1, (Request.SET_PAIR,))

    def test_kinds_distinct(self):
        classes = [spbroker.VersionError, spbroker.FlagsError, spbroker.RequestError, spbroker.SizeError,
                   spbroker.DescriptorCountError, spbroker.UnexpectedTypeError, spbroker.ModeError,
                   spbroker.KeyLengthError, spbroker.PayloadError, spbroker.LengthError]
        self.assertEqual(len({c.kind for c in classes}), len(classes))
        for c in classes:
            self.assertTrue(issubclass(c, spbroker.ProtocolError))

    def test_pickle(self):
        import pickle

        e = spbroker.SizeError("size", 9)
        e2 = pickle.loads(pickle.dumps(e))
        self.assertEqual((type(e2), e2.field, e2.value, str(e2)), (spbroker.SizeError, "size", 9, str(e)))

    def test_same_verdicts_as_go(self):
        GP, SP = 1, 2
        cases = []
        wires = [
            raw(), raw(length=1040), raw(flags=0), raw(flags=0xF), raw(flags=0x21), raw(flags=0xFFFFFFF1),
            raw(request=0), raw(request=3), raw(request=0xFFFFFFFF), raw(size=0), raw(size=1044),
            raw(mode=1), raw(mode=2), raw(mode=3), raw(mode=0x8000), raw(key_len=0, key=b""),
            raw(key_len=1, key=b"a"), raw(key_len=1024, key=b"b" * 1024), raw(key_len=1025, key=b"c" * 1024),
            raw(request=2, size=8, u64=0), raw(request=2, size=8, u64=1, length=1040), raw(request=2, size=1028, u64=0),
            raw(request=2, flags=3, size=8, u64=0), raw(request=0, flags=0x10, size=1, mode=9, key_len=0),
            bytes(1039), bytes(1045),
        ]
        for w in wires:
            for nfds in (0, 1, 2):
                for expected in (None, [], [GP], [SP], [GP, SP]):
                    cases.append((w, nfds, expected))
        requests = []
        for w, nfds, expected in cases:
            r = {"op": "check", "hex": w.hex(), "nfds": nfds}
            if expected is not None:
                r["expected"] = expected
            requests.append(r)
        answers = go(requests)
        verdicts = set()
        for (w, nfds, expected), a in zip(cases, answers):
            with self.subTest(wire=w[:20].hex(), length=len(w), nfds=nfds, expected=expected):
                try:
                    spbroker.validate(spbroker.decode(w), nfds, expected)
                    got = None
                except spbroker.ProtocolError as e:
                    got = {"kind": e.kind, "field": e.field, "value": e.value, "text": str(e)}
                self.assertEqual(got, a.get("error"))
                verdicts.add(got["kind"] if got else "valid")
        # The table exercises every outcome validate and decode can have.
        self.assertEqual(
            verdicts,
            {"valid", "version", "flags", "request", "size", "descriptors", "unexpected", "mode", "key_length", "length"},
        )


if __name__ == "__main__":
    unittest.main()
