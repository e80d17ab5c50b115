"""Tests of spbroker.

Run from the repository root:

    python3 -m unittest discover -s python/tests -t python -v

The suite builds the daemon, one-socketctl and a small Go helper with `go
build` into a temporary directory, so it needs Go; without it the run
stops here with exit status 77, the project's "skipped" convention.
ONE_SOCKET_BIN and ONE_SOCKETCTL_BIN name prebuilt binaries to test
instead of building them.
"""

import os
import shutil
import sys

if shutil.which("go") is None:
    sys.stderr.write(
        "spbroker tests: skipped: `go` is not on PATH; the suite builds the daemon"
        " (cmd/one-socket), one-socketctl and a Go encoder to compare against\n"
    )
    sys.stderr.flush()
    # unittest would report a SystemExit raised here as a failed import;
    # leave at once with the conventional status instead. Nothing has been
    # created yet, so nothing is left behind.
    os._exit(77)
