"""A map's item results: polled from run storage while the job runs, kept in a local spool.

Run storage disappears with the stack, which comes down as soon as the job is
done, whether or not the caller has read every result yet. So each result that
appears under ``results/`` is moved (local storage) or copied (object storage)
into ``$TOOLKIT_HOME/runs/<run-id>/results/`` and read from there, one at a
time, when the caller reaches it: results stream through the client's disk,
never all through its memory. They stay signed there and are verified when read.

States per item: pending, running (claimed by a worker, or started by its
indexed task), completed (a value or the function's exception: its result is
there), failed (no result: the infrastructure failed it, or the map was
cancelled). One byte per item.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec

from toolkit.bundles import CLAIMS_DIR, MAGIC, RESULTS_DIR, unseal_result
from toolkit.errors import JobFailedError
from toolkit.providers.run_storage import local_path

STATES = ("pending", "running", "completed", "failed")
_PENDING, _RUNNING, _COMPLETED, _FAILED = range(4)


class ItemResults:
    """What is known of each item of one map; thread-safe, with waiting for an item or any change."""

    def __init__(self, storage_url: str, storage_options: dict[str, Any], count: int, key: str, spool: Path) -> None:
        self.count = count
        self._key = key
        self._url = storage_url.rstrip("/")
        self._local = local_path(storage_url)
        self._options = storage_options
        self._fs: Any = None
        self.spool = spool
        spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._states = bytearray(count)
        self._outcome_errors: dict[int, bool] = {}
        self._failures: dict[int, BaseException] = {}
        self.completion_order: list[int] = []
        self._resolved = 0
        self._all_claimed = False
        self._changed = threading.Condition()

    # -- the job side, polled by the run's lifecycle thread --------------------------------------

    def poll(self) -> bool:
        """Take in new claims and results; True once every item has its result."""
        if not self._all_claimed:
            claimed = self._names(CLAIMS_DIR)
            with self._changed:
                for index in claimed:
                    if self._states[index] == _PENDING:
                        self._states[index] = _RUNNING
                self._all_claimed = len(claimed) >= self.count
        arrived = [index for index in self._names(RESULTS_DIR) if self._states[index] < _COMPLETED]
        for index in arrived:
            self._take(index)
        if arrived:
            with self._changed:
                for index in arrived:
                    self._states[index] = _COMPLETED
                    self.completion_order.append(index)
                self._resolved += len(arrived)
                self._changed.notify_all()
        return self.complete()

    def complete(self) -> bool:
        """Every item has its outcome (a result, or a failure without one)."""
        return self._resolved >= self.count

    def claimed_by(self, worker: str) -> list[int]:
        """Items without a result whose claim names ``worker`` (a worker that died held them)."""
        held = []
        for index in range(self.count):
            if self._states[index] == _RUNNING and self._claim_owner(index) == worker:
                held.append(index)
        return held

    def unfinished(self) -> list[int]:
        """Items with neither a result nor a failure yet."""
        return [index for index in range(self.count) if self._states[index] < _COMPLETED]

    def release(self, index: int) -> None:
        """Give item ``index`` back to the workers (its worker died): delete its claim, if it has one."""
        name = f"{CLAIMS_DIR}/{index}"
        if self._local is not None:
            Path(self._local, name).unlink(missing_ok=True)
        else:
            fs = self._filesystem()
            try:
                fs.rm_file(f"{fs._strip_protocol(self._url)}/{name}")
            except FileNotFoundError:
                pass
        with self._changed:
            self._states[index] = _PENDING
            self._all_claimed = False

    def fail(self, index: int, error: BaseException) -> None:
        """Item ``index`` will get no result: ``error`` is its outcome."""
        with self._changed:
            if self._states[index] >= _COMPLETED:
                return
            self._failures[index] = error
            self._states[index] = _FAILED
            self.completion_order.append(index)
            self._resolved += 1
            self._changed.notify_all()

    def _claim_owner(self, index: int) -> str:
        name = f"{CLAIMS_DIR}/{index}"
        try:
            if self._local is not None:
                return Path(self._local, name).read_text()
            fs = self._filesystem()
            return fs.cat_file(f"{fs._strip_protocol(self._url)}/{name}").decode()
        except (FileNotFoundError, UnicodeDecodeError):
            return ""

    def fail_unfinished(self, error: BaseException | None, reason: str) -> int:
        """Items without a result when the job ended fail: with ``error`` (a cancel, a failed stack)
        or, when None, a ``JobFailedError`` naming ``reason``. Returns how many."""
        with self._changed:
            failed = 0
            for index in range(self.count):
                if self._states[index] >= _COMPLETED:
                    continue
                self._failures[index] = error or JobFailedError(f"item {index} has no result: {reason}")
                self._states[index] = _FAILED
                self.completion_order.append(index)
                failed += 1
            self._resolved = self.count
            self._changed.notify_all()
        return failed

    def _names(self, directory: str) -> list[int]:
        """Indexes of the entries under ``directory`` (files being written start with '.')."""
        if self._local is not None:
            try:
                names = os.listdir(os.path.join(self._local, directory))
            except FileNotFoundError:
                return []
        else:
            fs = self._filesystem()
            root = f"{fs._strip_protocol(self._url)}/{directory}"
            fs.invalidate_cache(root)
            try:
                names = [path.rsplit("/", 1)[-1] for path in fs.ls(root, detail=False)]
            except FileNotFoundError:
                return []
        indexes = []
        for name in names:
            stem = name.split(".", 1)[0]
            if stem.isdigit() and int(stem) < self.count:
                indexes.append(int(stem))
        return indexes

    def _take(self, index: int) -> None:
        """Move (local) or copy (remote) one result into the spool; note whether it is an exception."""
        target = self.spool / f"{index}.tkb"
        name = f"{RESULTS_DIR}/{index}.tkb"
        if self._local is not None:
            shutil.move(os.path.join(self._local, name), target)
        else:
            fs = self._filesystem()
            fs.get_file(f"{fs._strip_protocol(self._url)}/{name}", str(target))
        self._outcome_errors[index] = _outcome_of(target) != "value"

    def _filesystem(self) -> Any:
        if self._fs is None:
            self._fs, _ = fsspec.core.url_to_fs(self._url, **self._options)
        return self._fs

    # -- the caller's side ----------------------------------------------------------------------

    def state(self, index: int) -> str:
        return STATES[self._states[index]]

    def counts(self) -> dict[str, int]:
        return {state: self._states.count(number) for number, state in enumerate(STATES)}

    def raised(self, index: int) -> bool:
        """True when the item's outcome is an exception (its own, or a failure of its infrastructure)."""
        return index in self._failures or self._outcome_errors.get(index, False)

    def resolved(self, index: int) -> bool:
        return self._states[index] >= _COMPLETED

    def wait_for_change(self, timeout: float) -> None:
        """Block until items resolve or ``timeout`` passes."""
        with self._changed:
            self._changed.wait(timeout)

    def value(self, index: int) -> Any:
        """The item's value, or its exception raised (remote traceback attached); read from the spool."""
        failure = self._failures.get(index)
        if failure is not None:
            raise failure
        path = self.spool / f"{index}.tkb"
        return unseal_result(path.read_bytes(), self._key, f"result of item {index}", index=index)

    def completed_since(self, start: int) -> Iterator[int]:
        with self._changed:
            order = self.completion_order[start:]
        yield from order

    def discard(self) -> None:
        shutil.rmtree(self.spool, ignore_errors=True)


def _outcome_of(path: Path) -> str:
    """The ``outcome`` field of a result's header, unverified (for the item's state only; the
    whole envelope is verified when the caller reads the result)."""
    with path.open("rb") as handle:
        if handle.read(len(MAGIC)) != MAGIC:
            return "corrupt"
        try:
            return str(json.loads(handle.readline()).get("outcome"))
        except ValueError:
            return "corrupt"
