"""Following a job: what a watcher reports (``JobStatus``), the watcher contract every target's
watcher implements (``JobWatcher``), and one watcher over a map's workers.

``WorkersWatcher`` serves every target whose map runs workers that claim items.

The job is running while any worker runs and has ended when all of them have;
it succeeded only if every worker did. A worker that died (killed, OOM) fails
only the item it held: the others go on claiming the rest, and the map's
collector (``MapFuture``) reads ``last`` to find the dead worker's item and
retries it (releases its claim for a surviving worker) or fails it with the
worker's reason.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel


class JobStatus(BaseModel):
    """What a watcher reports about the job at one moment."""

    state: Literal["pending", "running", "succeeded", "failed"]
    exit_code: int | None = None
    reason: str | None = None
    """Human-readable cause of a failure (OOM, image pull, start failure ...)."""
    attempt: int | None = None
    """Which attempt of the job this is, from targets whose own controller retries (``native_retries``)."""
    previous_failure: str | None = None
    """With ``attempt`` > 1: why the attempt before it ended without a result, if the watcher saw it."""

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed")


class JobWatcher(abc.ABC):
    """Follows one job after ``pulumi up`` created it."""

    @abc.abstractmethod
    def status(self) -> JobStatus:
        """The job's state now; cheap enough to call a few times a second."""

    @abc.abstractmethod
    def read_logs(self) -> str:
        """Log text produced since the previous call ('' if none)."""


class WorkersWatcher(JobWatcher):
    """Combines the watchers of a map's workers into the one job the run follows."""

    def __init__(self, workers: Sequence[JobWatcher]) -> None:
        self._workers = list(workers)
        self.last: list[JobStatus] = []
        """Each worker's status at the last ``status()`` (the map's collector reads who died)."""

    @property
    def workers(self) -> list[JobWatcher]:
        """The watcher of each worker, in worker order."""
        return list(self._workers)

    def status(self) -> JobStatus:
        statuses = [worker.status() for worker in self._workers]
        self.last = statuses
        if any(not status.finished for status in statuses):
            running = any(status.state == "running" for status in statuses)
            return JobStatus(state="running" if running else "pending")
        failed = [(number, status) for number, status in enumerate(statuses) if status.state == "failed"]
        if not failed:
            return JobStatus(state="succeeded", exit_code=0)
        number, first = failed[0]
        reason = f"worker {number} of {len(statuses)}: {first.reason or 'failed'}"
        if len(failed) > 1:
            reason += f" ({len(failed) - 1} more worker(s) failed too)"
        return JobStatus(state="failed", exit_code=first.exit_code, reason=reason)

    def read_logs(self) -> str:
        return "".join(worker.read_logs() for worker in self._workers)
