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

With a ``journal``, each change of an item's state is also one JSON line there
(``{"i": 3, "state": "completed", "worker": "1", "started": ..., "finished": ...}``):
what the dashboard's Gantt and item table read, live and after the run. The
worker and times of a result come from its header (the job's clock).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec

from toolkit.bundles import CLAIMS_DIR, MAGIC, RESULTS_DIR, unseal_result
from toolkit.errors import JobFailedError
from toolkit.providers.run_storage import local_path
from toolkit.storage_urls import CONTROL_NAME

STATES = ("pending", "running", "completed", "failed")
_PENDING, _RUNNING, _COMPLETED, _FAILED = range(4)


class ItemResults:
    """What is known of each item of one map; thread-safe, with waiting for an item or any change."""

    def __init__(
        self,
        storage_url: str,
        storage_options: dict[str, Any],
        count: int,
        key: str,
        spool: Path,
        control: bool = False,
        journal: Path | None = None,
    ) -> None:
        """``control``: the map's workers reach storage through signed requests, which cannot list it,
        so each poll tells them in ``control.json`` what still waits for a claim and whether all is done."""
        self.count = count
        self._control = control
        self._published: tuple[list[int], bool] | None = None
        self._journal = journal
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
            started = []
            with self._changed:
                for index in claimed:
                    if self._states[index] == _PENDING:
                        self._states[index] = _RUNNING
                        started.append(index)
                self._all_claimed = len(claimed) >= self.count
            self._note(*(self._started_line(index) for index in started))
        arrived = [index for index in self._names(RESULTS_DIR) if self._states[index] < _COMPLETED]
        self._note(*(self._take(index) for index in arrived))
        if arrived:
            with self._changed:
                for index in arrived:
                    self._states[index] = _COMPLETED
                    self.completion_order.append(index)
                self._resolved += len(arrived)
                self._changed.notify_all()
        if self._control:
            self._publish()
        return self.complete()

    def _publish(self) -> None:
        """``control.json`` for the workers, when it changed: the items nobody holds, and whether all are done."""
        with self._changed:
            word = ([index for index in range(self.count) if self._states[index] == _PENDING], self.complete())
        if word == self._published:
            return
        data = json.dumps({"pending": word[0], "done": word[1]}).encode()
        if self._local is not None:
            temporary = Path(self._local, f".{CONTROL_NAME}.tmp")
            temporary.write_bytes(data)
            os.replace(temporary, Path(self._local, CONTROL_NAME))
        else:
            fs = self._filesystem()
            fs.pipe_file(f"{fs._strip_protocol(self._url)}/{CONTROL_NAME}", data)
        self._published = word

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
        self._note({"i": index, "state": "pending", "at": time.time()})

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
        self._note(_failure_line(index, error))

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
            failed = []
            for index in range(self.count):
                if self._states[index] >= _COMPLETED:
                    continue
                self._failures[index] = error or JobFailedError(f"item {index} has no result: {reason}")
                self._states[index] = _FAILED
                self.completion_order.append(index)
                failed.append(index)
            self._resolved = self.count
            self._changed.notify_all()
        self._note(*(_failure_line(index, self._failures[index]) for index in failed))
        return len(failed)

    def _started_line(self, index: int) -> dict[str, Any]:
        """A claimed item's journal line; its worker too where reading the claim costs no request."""
        line: dict[str, Any] = {"i": index, "state": "running", "at": time.time()}
        if self._journal is not None and self._local is not None:
            line["worker"] = self._claim_owner(index)
        return line

    def _note(self, *lines: dict[str, Any]) -> None:
        """Append item events to the journal (one write for a poll's worth)."""
        if self._journal is None or not lines:
            return
        with self._journal.open("a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(line) + "\n" for line in lines))

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

    def _take(self, index: int) -> dict[str, Any]:
        """Move (local) or copy (remote) one result into the spool; note whether it is an exception.
        Returns the item's journal line."""
        target = self.spool / f"{index}.tkb"
        name = f"{RESULTS_DIR}/{index}.tkb"
        if self._local is not None:
            shutil.move(os.path.join(self._local, name), target)
        else:
            fs = self._filesystem()
            fs.get_file(f"{fs._strip_protocol(self._url)}/{name}", str(target))
        header = _header_of(target)
        raised = header.get("outcome") != "value"
        self._outcome_errors[index] = raised
        line = {"i": index, "state": "raised" if raised else "completed", "at": time.time()}
        line.update({key: header[key] for key in ("worker", "started", "finished") if key in header})
        if raised:
            line["error"] = f"{header.get('error_type') or 'error'}: {header.get('message') or ''}"[:500]
        return line

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


def _header_of(path: Path) -> dict[str, Any]:
    """A result's header, unverified (for the item's state and journal only; the whole envelope is
    verified when the caller reads the result). A corrupt one reads ``{"outcome": "corrupt"}``."""
    with path.open("rb") as handle:
        if handle.read(len(MAGIC)) != MAGIC:
            return {"outcome": "corrupt"}
        try:
            header = json.loads(handle.readline())
        except ValueError:
            return {"outcome": "corrupt"}
    return header if isinstance(header, dict) else {"outcome": "corrupt"}


def _failure_line(index: int, error: BaseException) -> dict[str, Any]:
    return {"i": index, "state": "failed", "at": time.time(), "error": f"{type(error).__name__}: {error}"[:500]}
