"""Staging a map's items: the caller's iterables zipped, each row pickled and sealed on its own.

Rows are taken a few at a time (``CHUNK``), pickled under the by-value
registration of the caller's modules, sealed with the run's key and the item's
index and written to the staging directory, so a map over 10,000 items never
holds more than a chunk of them in memory. An item that cannot be pickled, or an
iterable that raises, fails here: before anything is provisioned.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from toolkit.bundles import dump_arguments, local_packages, pickling_by_value, seal

CHUNK = 64
"""Rows pickled per hold of the pickling lock (the lock is not held while the caller's iterables run)."""


def item_file(directory: Path, index: int) -> Path:
    return directory / f"{index}.tkb"


def stage_items(fn: Callable[..., Any], iterables: tuple[Iterable[Any], ...], key: str, directory: Path) -> int:
    """Write one signed bundle per row of ``zip(*iterables)`` into ``directory``; return the count."""
    directory.mkdir(mode=0o700)
    packages = local_packages()
    rows = zip(*iterables)
    count = 0
    while True:
        chunk = list(itertools.islice(rows, CHUNK))
        if not chunk:
            return count
        with pickling_by_value(packages):
            payloads = [dump_arguments(fn, tuple(row), {}) for row in chunk]
        for payload in payloads:
            envelope = seal("item", payload, key, index=count)
            fd = os.open(item_file(directory, count), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(envelope)
            count += 1
