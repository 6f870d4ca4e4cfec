"""A real Pulumi CLI at the oldest version the toolkit supports, built once from the Go module proxy.

    python -m tests.old_cli build      (prints the binary's path; builds it if missing)

The version tests need a CLI that really is old, not a newer one claiming to
be (tests/toolchain_fakes.py). ``OLD_CLI_VERSION`` is the oldest
``github.com/pulumi/pulumi/pkg/v3`` the Go module proxy serves at or above
``cli_lookup.MINIMUM_CLI_VERSION`` (3.211.0 itself is not served; 3.212.0 is).
It is built with the toolkit's own recipe (``toolchain/pulumi_cli.py``: a
wrapper module with that version's published replace directives, the version
stamped at link time, the same behaviour-neutral start-up patch) and cached in
``~/.cache/toolkit/bin/old-cli/<version>/bin/pulumi``, so CI machines build it
once. A cold build (empty Go module and build caches) took 1586 s here: 353 s
of CPU (297 user, 57 system) on 2 cores shared with two other Go builds and
several pip installs (load average 12-25). Alone on a 2-core machine that CPU
time would be about 3 minutes of compiling plus the module downloads (an
estimate from those figures, not a measurement).
"""

from __future__ import annotations

import fcntl
import sys
import time
from pathlib import Path

from toolkit import settings
from toolkit.toolchain import pulumi_cli
from toolkit.toolchain.steps import Log, read_stamp, write_stamp

OLD_CLI_VERSION = "3.212.0"


def old_cli_path(version: str = OLD_CLI_VERSION) -> Path:
    """Where the built CLI lives: ``bin/pulumi`` under a root of its own, as the Automation API wants it."""
    return settings.bin_dir() / "old-cli" / version / "bin" / "pulumi"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def ensure_old_cli(version: str = OLD_CLI_VERSION, log: Log = _say) -> Path:
    """The cached build of ``version``, built first if missing (one build at a time across processes)."""
    binary = old_cli_path(version)
    stamp = binary.with_name("pulumi.built")
    binary.parent.mkdir(parents=True, exist_ok=True)
    with open(binary.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists() and read_stamp(stamp):
            return binary
        started = time.monotonic()
        work_dir = settings.cache_dir() / "build" / "old-cli" / version
        temporary = binary.with_name("pulumi.partial")
        pulumi_cli.build_pulumi_cli(version, work_dir, temporary, log)
        temporary.replace(binary)
        seconds = time.monotonic() - started
        write_stamp(stamp, f"v{version} built in {seconds:.0f} s")
        log(f"built pulumi v{version} in {seconds:.0f} s -> {binary}")
    return binary


def build_seconds(version: str = OLD_CLI_VERSION) -> str:
    """What the cached build recorded about itself ('' when there is none)."""
    return read_stamp(old_cli_path(version).with_name("pulumi.built"))


if __name__ == "__main__":
    if sys.argv[1:] != ["build"]:
        sys.exit("usage: python -m tests.old_cli build")
    print(ensure_old_cli())
