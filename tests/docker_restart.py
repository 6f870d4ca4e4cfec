"""Restarting the shared Docker engine the supported way: under the machine's Docker lock, stopped with
SIGTERM and started again by the toolchain's own ``docker_engine.ensure_running``.

Several checkouts share one engine on the test machines; whoever restarts it
holds ``/tmp/toolkit-docker.lock`` exclusively (others hold it shared while
they use the engine). The lock is re-entrant within a process, so the chaos
soak can hold it for its whole run and still restart through here.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from toolkit import settings
from toolkit.toolchain import docker_engine

LOCK_PATH = "/tmp/toolkit-docker.lock"
LOCK_WAIT_SECONDS = 900.0

class _Holder:
    """This process's hold on the lock: its open file and how many callers are inside."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.depth = 0
        self.handle: IO[str] | None = None


_HOLDER = _Holder()


def _acquire(wait_seconds: float) -> IO[str]:
    handle = open(LOCK_PATH, "a")  # noqa: SIM115 - held until the last caller leaves
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                raise TimeoutError(f"{LOCK_PATH} stayed held by another process for {wait_seconds:.0f}s "
                                   "(a bench or a test using the Docker engine); try again when it is done") from None
            time.sleep(1)


@contextmanager
def docker_engine_lock(wait_seconds: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """The machine's Docker lock, exclusively; waits at most ``wait_seconds`` for others to let go."""
    with _HOLDER.guard:
        if _HOLDER.depth == 0:
            _HOLDER.handle = _acquire(wait_seconds)
        _HOLDER.depth += 1
    try:
        yield
    finally:
        with _HOLDER.guard:
            _HOLDER.depth -= 1
            if _HOLDER.depth == 0 and _HOLDER.handle is not None:
                fcntl.flock(_HOLDER.handle, fcntl.LOCK_UN)
                _HOLDER.handle.close()
                _HOLDER.handle = None


def dockerd_pids() -> list[int]:
    found = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def restart_docker_engine(stop_timeout: float = 120.0, down_seconds: float = 0.0) -> None:
    """Stop ``dockerd`` (SIGTERM: it stops its containers), leave it stopped for ``down_seconds``, and start it
    again; returns once it answers."""
    with docker_engine_lock():
        for pid in dockerd_pids():
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + stop_timeout
        while dockerd_pids():
            if time.monotonic() > deadline:
                raise TimeoutError(f"dockerd did not stop within {stop_timeout:.0f}s of SIGTERM")
            time.sleep(0.2)
        time.sleep(down_seconds)
        docker_engine.ensure_running(lambda _line: None, settings.cache_dir() / "dockerd.log")
