"""Client-side run records: what ``toolkit runs ls/logs/cancel`` read.

A run's stack and storage vanish at teardown, so the client keeps a small
record (state, pool, stack, timings, error) and a copy of the job's logs under
``$TOOLKIT_HOME/runs/<run-id>/``. A cancel request from another process is a
file there that the owning client's watch loop notices. The record also keeps
what the dashboard (``toolkit ui``) shows of a run once its stack is gone: when
each phase began, the job variables layer by layer (secrets masked), the policy
verdicts, the stack's resources and a map's item journal (``items.jsonl``).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, PrivateAttr

from toolkit import settings

TERMINAL_STATES = ("completed", "failed", "cancelled")


class PhaseMark(BaseModel):
    """A phase of the run began: a state (provisioning, running, ...) or policy, up, teardown, torn down."""

    phase: str
    at: float


class VariableLayer(BaseModel):
    """One layer of the call's job variables, as given (pool defaults, each override, the effective values)."""

    name: str
    values: dict[str, Any]
    """Masked: a secret's value reads ``[secret]``."""


class ResourceStep(BaseModel):
    """A resource of the run's stack and the last step the engine reported for it."""

    urn: str
    type: str
    parent: str | None = None
    status: str
    """creating, created, updating, updated, replacing, replaced, deleting, deleted, read or failed."""


class RunRecord(BaseModel):
    run_id: str
    function: str
    pool: str
    target: str
    stack: str
    backend_url: str
    state: str = "pending"
    created: float
    finished: float | None = None
    error: str | None = None
    owner_pid: int
    owner: str
    torn_down: bool = False
    teardown_failed: bool = False
    """The client's own destroy failed; ``toolkit gc`` may collect the stack despite a live owner."""
    attempts: int = 1
    """Attempts the run made: more than one when its job ended without a result and ``retries`` allowed."""
    retried_after: list[str] = []
    """Why each earlier attempt failed (``toolkit.retries``)."""
    phases: list[PhaseMark] = []
    variables: list[VariableLayer] = []
    policy: list[dict[str, Any]] = []
    """The pool's policy verdicts on this run (``PolicyResult`` documents)."""
    resources: list[ResourceStep] = []
    traceback: str | None = None
    """The function's remote traceback, when it raised."""
    items: int | None = None
    """A map's item count (None: a single call)."""
    environment: str | None = None
    """The environment the job ran in (an image or a virtualenv's interpreter), if the call needed one."""
    _lock: threading.RLock = PrivateAttr(default_factory=threading.RLock)

    @property
    def directory(self) -> Path:
        return settings.runs_dir() / self.run_id

    def save(self) -> None:
        """Write the record whole (engine events update it from another thread than the run's)."""
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary = self.directory / f".record.json.{os.getpid()}.{threading.get_ident()}"
            temporary.write_text(self.model_dump_json(indent=2))
            os.replace(temporary, self.directory / "record.json")

    def update(self, **changes: object) -> None:
        with self._lock:
            if "state" in changes and changes["state"] != self.state:
                self.phases = [*self.phases, PhaseMark(phase=str(changes["state"]), at=time.time())]
            for key, value in changes.items():
                setattr(self, key, value)
            if changes.get("state") in TERMINAL_STATES and self.finished is None:
                self.finished = time.time()
            self.save()

    def mark(self, phase: str) -> None:
        """Note that ``phase`` began now (phases that are not states: policy, up, teardown, torn down)."""
        with self._lock:
            self.phases = [*self.phases, PhaseMark(phase=phase, at=time.time())]
            self.save()

    def append_log(self, text: str) -> None:
        with (self.directory / "logs.txt").open("a", encoding="utf-8") as handle:
            handle.write(text)

    def logs(self) -> str:
        path = self.directory / "logs.txt"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    @property
    def result_spool(self) -> Path:
        """A map's item results, moved here from run storage until its client has read them."""
        return self.spool_of(self.run_id)

    @staticmethod
    def spool_of(run_id: str) -> Path:
        return settings.runs_dir() / run_id / "results"

    @staticmethod
    def items_journal_of(run_id: str) -> Path:
        """A map's item events, one JSON line each (``fanout.results``): who ran which item, when, how it ended."""
        return settings.runs_dir() / run_id / "items.jsonl"

    def request_cancel(self) -> None:
        (self.directory / "cancel").touch()

    def cancel_requested(self) -> bool:
        return (self.directory / "cancel").exists()


def load(run_id: str) -> RunRecord:
    path = settings.runs_dir() / run_id / "record.json"
    if not path.exists():
        from toolkit.errors import ConfigError

        raise ConfigError(f"no run {run_id!r} in {settings.runs_dir()}; `toolkit runs ls` lists runs")
    return RunRecord.model_validate_json(path.read_text())


def all_records() -> list[RunRecord]:
    root = settings.runs_dir()
    if not root.exists():
        return []
    records = []
    for path in root.glob("*/record.json"):
        try:
            records.append(RunRecord.model_validate_json(path.read_text()))
        except ValueError:
            continue  # a record being written right now
    return sorted(records, key=lambda record: record.created)
