"""The local index that keeps a built environment's per-call cost to a few file reads.

``requests/<key>.json``: what a request (base + asks) resolved to, so a call
with the same asks neither resolves nor runs Pulumi again. ``records/<hash>.json``:
a built environment (its stack, image or interpreter, pins with sources,
creation and last use). The environment stacks stay the truth (``toolkit env
ls`` lists them); the index is a cache that ``prune`` keeps in step and that
a missing image or virtualenv invalidates.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from pydantic import BaseModel

from toolkit import settings
from toolkit.environments.requirements import Requested
from toolkit.environments.spec import Environment


class Resolution(BaseModel):
    """A request's outcome: nothing missing from the base (``environment`` None) or an environment."""

    environment: Environment | None
    requested: list[Requested]


class EnvironmentRecord(BaseModel):
    """A built environment."""

    environment: Environment
    reference: str
    """What jobs use: the image name, or the virtualenv's interpreter."""
    backend_url: str
    created: float
    last_used: float

    @property
    def hash(self) -> str:
        return self.environment.hash


def _root() -> Path:
    return settings.environments_dir()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
    temporary.write_text(text)
    os.replace(temporary, path)


def lookup(key: str) -> Resolution | None:
    try:
        return Resolution.model_validate_json((_root() / "requests" / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None


def remember(key: str, resolution: Resolution) -> None:
    _write(_root() / "requests" / f"{key}.json", resolution.model_dump_json())


def load(hash_: str) -> EnvironmentRecord | None:
    try:
        return EnvironmentRecord.model_validate_json((_root() / "records" / f"{hash_}.json").read_text())
    except (OSError, ValueError):
        return None


def save(record: EnvironmentRecord) -> None:
    _write(_root() / "records" / f"{record.hash}.json", record.model_dump_json(indent=2))


def touch(record: EnvironmentRecord) -> None:
    """Note a use (what ``prune --older-than`` judges by); at most one write a minute."""
    now = time.time()
    if now - record.last_used > 60:
        save(record.model_copy(update={"last_used": now}))


def forget(hash_: str) -> None:
    """Drop a pruned environment's record and every request that resolved to it."""
    (_root() / "records" / f"{hash_}.json").unlink(missing_ok=True)
    requests = _root() / "requests"
    for path in requests.glob("*.json") if requests.exists() else []:
        resolution = lookup(path.stem)
        if resolution is None or (resolution.environment and resolution.environment.hash == hash_):
            path.unlink(missing_ok=True)


def locked(name: str) -> AbstractContextManager[None]:
    """The lock of one environment (its build and its prune)."""
    return file_lock(_root() / "locks" / f"{name}.lock")


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock across threads and processes (``flock`` on ``path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
