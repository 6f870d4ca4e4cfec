"""One watcher over a map's workers (the process and docker targets run several).

The job is running while any worker runs and has ended when all of them have;
it succeeded only if every worker did. A worker that died (killed, OOM) fails
only the item it held: the others go on claiming the rest, and the map's
collector (``MapFuture``) reads ``last`` to find the dead worker's item and
retries it (releases its claim for a surviving worker) or fails it with the
worker's reason.
"""

from __future__ import annotations

from collections.abc import Sequence

from toolkit.infra.base import JobStatus, JobWatcher


class WorkersWatcher(JobWatcher):
    """Combines the watchers of a map's workers into the one job the run follows."""

    def __init__(self, workers: Sequence[JobWatcher]) -> None:
        self._workers = list(workers)
        self.last: list[JobStatus] = []
        """Each worker's status at the last ``status()`` (the map's collector reads who died)."""

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
