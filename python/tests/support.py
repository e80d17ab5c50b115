"""Shared helpers: the Go binaries (built once per run), a real daemon in
a temporary directory, one-socketctl, and descriptor checks."""

from __future__ import annotations

import atexit
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]

# Every wait for a process or a condition is bounded, so that a broken
# daemon or client fails the test rather than hanging it. These bounds are
# generous on purpose: they are never what a test measures.
WAIT = 15.0

_build_lock = threading.Lock()
_bins: Optional[Dict[str, str]] = None


def _remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def binaries() -> Dict[str, str]:
    """Paths of "one-socket", "one-socketctl" and "goenc", built on first
    use into a temporary directory that is removed when the run ends."""
    global _bins
    with _build_lock:
        if _bins is not None:
            return _bins
        out = tempfile.mkdtemp(prefix="spbroker-bin-")
        atexit.register(_remove, out)
        bins = {"goenc": os.path.join(out, "goenc")}
        packages = ["./python/tests/goenc"]
        for name, var in (("one-socket", "ONE_SOCKET_BIN"), ("one-socketctl", "ONE_SOCKETCTL_BIN")):
            given = os.environ.get(var)
            if given:
                bins[name] = os.path.abspath(given)
            else:
                bins[name] = os.path.join(out, name)
                packages.append("./cmd/" + name)
        # One go build for all of them: the cache makes repeated runs cheap.
        res = subprocess.run(
            ["go", "build", "-o", out + os.sep] + packages,
            cwd=str(REPO),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if res.returncode != 0:
            raise RuntimeError("go build %s failed:\n%s" % (" ".join(packages), res.stdout))
        for path in bins.values():
            if not os.access(path, os.X_OK):
                raise RuntimeError("not an executable: %s" % path)
        _bins = bins
        return bins


def clean_env() -> Dict[str, str]:
    """This process's environment less what would redirect the tools."""
    env = dict(os.environ)
    for name in ("ONE_SOCKET_PATH", "ONE_SOCKET_CTL_PATH", "NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    return env


def unique_key(prefix: str) -> bytes:
    return ("%s-%d-%s" % (prefix, os.getpid(), uuid.uuid4().hex[:12])).encode()


def wait_until(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting until " + what)
        time.sleep(0.01)


def short_tempdir() -> str:
    # sun_path holds 108 bytes; /tmp keeps socket paths well inside.
    return tempfile.mkdtemp(prefix="spb-", dir="/tmp")


class Daemon:
    """A one-socket process on a temporary socket.

    ``path`` is the broker socket (a file, or "@name" when abstract; a path
    given instead is used as it is) and ``ctl`` the control socket, always
    a file in the temporary directory. Readiness is the daemon's READY=1 on
    a notify socket, as systemd would receive it, so no test polls the
    broker socket to find out.
    """

    def __init__(self, abstract: bool = False, extra_args: Optional[List[str]] = None, path: Optional[str] = None) -> None:
        bins = binaries()
        self.dir = short_tempdir()
        try:
            if path is not None:
                self.path = path
            elif abstract:
                self.path = "@spbroker-test-%d-%s" % (os.getpid(), uuid.uuid4().hex[:12])
            else:
                self.path = os.path.join(self.dir, "one.socket")
            self.ctl = os.path.join(self.dir, "one-socket.ctl")
            self.log_path = os.path.join(self.dir, "daemon.log")
            notify_path = os.path.join(self.dir, "notify")
            # The daemon keeps sending STATUS= lines after READY=1, so this
            # socket stays open, drained by a thread, until stop().
            self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._notify.bind(notify_path)
            env = clean_env()
            env["NOTIFY_SOCKET"] = notify_path
            args = [bins["one-socket"], "--socket", self.path, "--ctl-socket", self.ctl, "--log-level", "debug"]
            if abstract:
                # An abstract socket has no mode; the test accepts that.
                args.append("--open-abstract")
            self._args = args + list(extra_args or [])
            self._env = env
            self._log = open(self.log_path, "wb")
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.proc = subprocess.Popen(self._args, env=self._env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        self._wait_ready()

    def kill_and_restart(self) -> None:
        """SIGKILL the daemon, as a crash would end it (its socket files
        stay behind), and start it again on the same sockets."""
        self.proc.kill()
        self.proc.wait()
        self._stopping.set()
        self._drainer.join()
        self._start()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + WAIT
        self._notify.settimeout(0.1)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("one-socket exited with status %d:\n%s" % (self.proc.returncode, self.log()))
            try:
                data = self._notify.recv(4096)
            except socket.timeout:
                continue
            if b"READY=1" in data.split(b"\n"):
                self._stopping = threading.Event()
                self._drainer = threading.Thread(target=self._drain, daemon=True)
                self._drainer.start()
                return
        raise RuntimeError("one-socket never reported READY=1:\n" + self.log())

    def _drain(self) -> None:
        # A full notify queue would stall the daemon's status updates.
        while not self._stopping.is_set():
            try:
                self._notify.recv(4096)
            except socket.timeout:
                pass
            except OSError:
                return

    def log(self) -> str:
        if hasattr(self, "_saved_log"):
            return self._saved_log
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> Optional[int]:
        """Stop the daemon (SIGTERM, then SIGKILL), remove its files and
        return its exit status (None if it never started)."""
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        drainer = getattr(self, "_drainer", None)
        if drainer is not None:
            self._stopping.set()
            drainer.join()
        for name in ("_log", "_notify"):
            f = getattr(self, name, None)
            if f is not None:
                f.close()
        self._saved_log = self.log()
        _remove(self.dir)
        return None if proc is None else proc.returncode

    def ctl_run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run one-socketctl against this daemon's control socket."""
        cmd = [binaries()["one-socketctl"], "--ctl-socket", self.ctl, "--socket", self.path] + list(args)
        res = subprocess.run(cmd, env=clean_env(), stdin=subprocess.DEVNULL, capture_output=True, timeout=WAIT)
        if check and res.returncode != 0:
            raise AssertionError("%s: status %d\n%s" % (" ".join(cmd), res.returncode, res.stderr.decode()))
        return res

    def waiting(self, key: Optional[bytes] = None) -> List[dict]:
        """The clients waiting in the broker (one-socketctl list --json),
        oldest first, only those of key if given."""
        out = json.loads(self.ctl_run("list", "--json").stdout)
        return [w for w in out or [] if key is None or bytes.fromhex(w["key_hex"]) == key]

    def wait_waiting(self, key: bytes, n: int) -> List[dict]:
        """Wait until exactly n clients wait with key; return them."""
        found: List[dict] = []

        def check() -> bool:
            found[:] = self.waiting(key)
            return len(found) == n

        wait_until(check, "%d clients wait with key %r (now %d)" % (n, key, len(found)))
        return found

    def pair_proc(self, key: bytes, mode: str) -> subprocess.Popen:
        """one-socketctl pair KEY as a Go peer, bridged to pipes."""
        cmd = [binaries()["one-socketctl"], "--socket", self.path, "--mode", mode, "--hex", "pair", key.hex()]
        return subprocess.Popen(cmd, env=clean_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def forbid_unclosed(test) -> None:
    """Fail test if a socket or file is left for the garbage collector to
    close (a ResourceWarning): code under test must close what it opens
    itself, at once, not whenever its last reference goes."""
    catcher = warnings.catch_warnings(record=True)
    caught = catcher.__enter__()
    warnings.simplefilter("always", ResourceWarning)

    def check():
        gc.collect()
        catcher.__exit__(None, None, None)
        leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        if leaks:
            raise AssertionError("left to the garbage collector: %s" % "; ".join(leaks))

    test.addCleanup(check)


def fd_targets() -> Dict[int, str]:
    """This process's open descriptors and what each refers to."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink("/proc/self/fd/" + name)
        except OSError:
            pass  # the descriptor listdir itself used, now closed
    return out


def fd_target(fd: int) -> str:
    return os.readlink("/proc/self/fd/%d" % fd)


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
