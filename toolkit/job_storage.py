"""Run storage as the job reaches it: the requests the client signed for the job, else fsspec.

Signed requests (``toolkit.storage_urls``) need only the standard library's
HTTP client: no storage driver to import or set up before the function runs. A
store that refuses one (expired credentials) sends the job to fsspec for the
rest. A local run directory is opened directly. Job side: the standard library,
fsspec and the wire layout only.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from typing import IO, Any, Protocol

from toolkit.bundles import CLAIMS_DIR, RESULTS_DIR, STORAGE_OPTIONS_ENV, item_name, open_envelope
from toolkit.storage_urls import TABLE_KIND, URLS_ENV, SignedStorage, SignedUrlRefused


class RunStorage(Protocol):
    """The run's storage as the job sees it: the bundle, a map's items, claims and results."""

    def read(self, name: str) -> bytes: ...

    def write(self, name: str, data: bytes) -> None: ...

    def claim(self, index: int, worker: str) -> bool:
        """Take item ``index`` unless another worker (or indexed task) has; the claim names ``worker``."""

    def mark_started(self, index: int) -> None:
        """An indexed task's item was not claimed: record that it started."""

    def write_result(self, index: int, data: bytes) -> None:
        """Item ``index``'s result; appears whole or not at all."""

    def waiting(self, count: int) -> list[int] | None:
        """Items a worker may still claim (none taken, or released for a retry); None once all have results."""


def job_storage(url: str, key: str) -> RunStorage:
    """Signed requests when the client handed the job some (``storage_urls``), else fsspec on ``url``."""
    options = json.loads(os.environ.get(STORAGE_OPTIONS_ENV) or "{}")
    signed = os.environ.pop(URLS_ENV, None)
    if not signed:
        return FsspecStorage(url, options)
    requests = json.loads(signed)

    def open_table(data: bytes, source: str) -> bytes:
        return open_envelope(data, key, TABLE_KIND, source)[1]

    return SignedOrDirect(SignedRunStorage(SignedStorage(requests, open_table)), lambda: FsspecStorage(url, options))


class FsspecStorage:
    """Run storage through fsspec (a local directory directly)."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self.url = url.rstrip("/")
        self.options = options
        self.local = _local_path(url)

    def read(self, name: str) -> bytes:
        with _open(self.url, name, "rb", self.options) as handle:
            return handle.read()

    def write(self, name: str, data: bytes) -> None:
        """Whole or not at all: the client takes a result file that exists as the result, so a write that
        fails part-way (a full disk) must leave none. An object store's PUT is atomic; a local file is
        renamed into place."""
        if self.local is not None:
            _write_whole(os.path.join(self.local, name), data)
            return
        with _open(self.url, name, "wb", self.options) as handle:
            handle.write(data)

    def claim(self, index: int, worker: str) -> bool:
        """Never empty: s3fs writes an empty file with a plain ``touch``, without the
        conditional header that makes the create exclusive. A local claim appears whole or
        not at all: an empty one (a full disk between create and write) names no worker, so
        nobody would run the item or release it for a retry."""
        if self.local is not None:
            return _create_whole(os.path.join(self.local, CLAIMS_DIR, str(index)), worker.encode())
        try:
            with _open(self.url, f"{CLAIMS_DIR}/{index}", "xb", self.options) as handle:
                handle.write(worker.encode())
        except FileExistsError:
            return False
        return True

    def waiting(self, count: int) -> list[int] | None:
        if len(self.names(RESULTS_DIR)) >= count:
            return None
        claimed = {int(name) for name in self.names(CLAIMS_DIR) if name.isdigit()}
        return [index for index in range(count) if index not in claimed]

    def names(self, directory: str) -> list[str]:
        """Entry names under ``directory`` (not those being written, which start with '.')."""
        if self.local is not None:
            names = os.listdir(os.path.join(self.local, directory))
        else:
            import fsspec

            fs, root = fsspec.core.url_to_fs(self.url, **self.options)
            fs.invalidate_cache(f"{root}/{directory}")
            try:
                names = [path.rsplit("/", 1)[-1] for path in fs.ls(f"{root}/{directory}", detail=False)]
            except FileNotFoundError:
                names = []
        return [name for name in names if not name.startswith(".")]

    def mark_started(self, index: int) -> None:
        with _open(self.url, f"{CLAIMS_DIR}/{index}", "wb", self.options) as handle:
            handle.write(str(os.getpid()).encode())

    def write_result(self, index: int, data: bytes) -> None:
        self.write(item_name(RESULTS_DIR, index), data)


class SignedRunStorage:
    """Run storage through the requests the client signed (``storage_urls``): the standard library only."""

    def __init__(self, signed: SignedStorage) -> None:
        self._signed = signed

    def read(self, name: str) -> bytes:
        return self._signed.read(name)

    def write(self, name: str, data: bytes) -> None:
        self._signed.write(name, data)

    def claim(self, index: int, worker: str) -> bool:
        return self._signed.create(f"{CLAIMS_DIR}/{index}", worker.encode())

    def mark_started(self, index: int) -> None:
        self._signed.create(f"{CLAIMS_DIR}/{index}", str(os.getpid()).encode())  # a retried task's exists

    def write_result(self, index: int, data: bytes) -> None:
        self._signed.write(item_name(RESULTS_DIR, index), data)

    def waiting(self, count: int) -> list[int] | None:
        control = self._signed.control()
        return None if control.get("done") else [int(index) for index in control.get("pending", [])]


class SignedOrDirect:
    """Signed requests until the store refuses one (a URL signed with credentials that expired
    meanwhile): then fsspec, with the job's own credentials, for the rest of the run."""

    def __init__(self, signed: RunStorage, direct: Callable[[], RunStorage]) -> None:
        self._current = signed
        self._direct: Callable[[], RunStorage] | None = direct

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._current, method)(*args)
        except SignedUrlRefused as exc:
            if self._direct is None:
                raise
            print(f"toolkit runner: {exc}; reaching the run's storage through fsspec instead", file=sys.stderr)
            self._current, self._direct = self._direct(), None
            return getattr(self._current, method)(*args)

    def read(self, name: str) -> bytes:
        return self._call("read", name)

    def write(self, name: str, data: bytes) -> None:
        self._call("write", name, data)

    def claim(self, index: int, worker: str) -> bool:
        return self._call("claim", index, worker)

    def mark_started(self, index: int) -> None:
        self._call("mark_started", index)

    def write_result(self, index: int, data: bytes) -> None:
        self._call("write_result", index, data)

    def waiting(self, count: int) -> list[int] | None:
        return self._call("waiting", count)


def _write_whole(path: str, data: bytes) -> None:
    """``path`` appears whole or not at all; its temporary (a dot name, which ``names`` skips) never stays."""
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _create_whole(path: str, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists (False then): written to a unique temporary (a dot
    name, which ``names`` skips) and hard-linked into place, which fails if ``path`` exists."""
    directory, name = os.path.split(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, 0o644)
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
    return True


def _local_path(storage: str) -> str | None:
    scheme, _, path = storage.partition("://")
    if not path:
        return storage
    return path if scheme in ("file", "local") else None


def _open(storage: str, name: str, mode: str, storage_options: dict[str, Any]) -> IO[bytes]:
    """``name`` in the run's storage. A local directory is opened directly: importing fsspec is
    more than half of the runner's start-up, on the critical path of every local run."""
    local = _local_path(storage)
    if local is not None:
        return open(os.path.join(local, name), mode)
    import fsspec

    fs, root = fsspec.core.url_to_fs(storage, **storage_options)
    return fs.open(f"{root}/{name}", mode)
