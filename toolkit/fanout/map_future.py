"""``MapFuture``: a map's run, from stack up to stack destroy, with its items' results.

The run's lifecycle is ``RunFuture``'s (slot, stack up, watch, teardown in a
``finally``, Ctrl-C and ``cancel()`` tearing the whole stack down); while the
job runs, each poll also takes in the items' claims and results
(``ItemResults``), and the watch ends as soon as every item has its result.
Items the job ended without a result (an infrastructure failure) run again
within the ``retries`` job variable, on a surviving worker or on a fresh job
(another ``up`` of the same stack); otherwise, and on a cancel or a stack that
could not come up, they fail with that reason. The others are not affected.
Iterating the future gives the results in input order, each read from the
spool when it is reached, like ``concurrent.futures.Executor.map``.
"""

from __future__ import annotations

import dataclasses
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any

from toolkit import records
from toolkit.engine import RunStack
from toolkit.errors import RunCancelledError
from toolkit.fanout.results import ItemResults
from toolkit.futures import RunFuture
from toolkit.infra.watch import JobStatus, JobWatcher, WorkersWatcher
from toolkit.preparation import PreparedRun
from toolkit.retries import RetryPolicy, infrastructure_failure

_RECHECK_SECONDS = 0.25
"""A waiter rechecks at least this often (the run's end is not announced through the items' condition)."""


class MapItem:
    """One item of a map: its ``index``, ``state``, ``done()``, ``result()``, ``exception()``."""

    def __init__(self, future: MapFuture, index: int) -> None:
        self._future = future
        self.index = index

    @property
    def state(self) -> str:
        """pending, running, completed (a value or the function's exception) or failed (no result)."""
        return self._future._items.state(self.index)

    def done(self) -> bool:
        return self._future._items.resolved(self.index)

    @property
    def attempts(self) -> int:
        """Runs of the item started so far: 1, and one more for each retry after its worker died holding it."""
        policy = self._future._item_retries.get(self.index)
        return policy.attempt if policy else 1

    def result(self, timeout: float | None = None) -> Any:
        """The item's value, or its exception raised with the remote traceback attached."""
        return self._future._outcome(self.index, timeout, return_exceptions=False)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        outcome = self._future._outcome(self.index, timeout, return_exceptions=True)
        return outcome if isinstance(outcome, BaseException) and self._future._items.raised(self.index) else None

    def __repr__(self) -> str:
        return f"<MapItem {self._future.run_id}[{self.index}]: {self.state}>"


class MapFuture(RunFuture):
    """Handle on a running map: iterate it for the results in order.

    ``run_id``, ``state`` (the run's), ``cancel()``, ``as_completed()``,
    ``item(i)`` (per-item state and result), ``counts()``, ``logs()``. With
    ``return_exceptions=True`` iterating returns an item's exception instead of
    raising it. Results are readable until the handle is garbage collected.
    """

    def __init__(self, prepared: PreparedRun, return_exceptions: bool = False, prefix_logs: bool = True) -> None:
        fanout = prepared.context.fanout
        assert fanout is not None, "a map needs at least one item"
        context = prepared.context
        self._return_exceptions = return_exceptions
        self._items = ItemResults(
            context.storage_url,
            context.storage_options,
            fanout.count,
            context.run_key,
            records.RunRecord.spool_of(prepared.run_id),
            control=prepared.target.signed_storage,
            journal=records.RunRecord.items_journal_of(prepared.run_id),
        )
        self._spool_finalizer = weakref.finalize(self, self._items.discard)
        self._item_retries: dict[int, RetryPolicy] = {}
        """``retries`` per item that lost its run (targets whose own controller retries per index
        -- Cloud Run's tasks -- never get here)."""
        self._dead_workers: set[int] = set()
        self._lost: dict[int, str] = {}
        """Why an item's worker died when no other was left to take it over (it waits for a fresh job)."""
        super().__init__(prepared, prefix_logs=prefix_logs)

    # -- public API -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._items.count

    def __iter__(self) -> Iterator[Any]:
        """The items' results in input order, each as soon as it (and every one before it) is there."""
        for index in range(self._items.count):
            yield self._outcome(index, None, self._return_exceptions)

    def result(self, timeout: float | None = None) -> list[Any]:
        """Every item's result in order (all in memory: iterate the future to stream them)."""
        if not self.wait_interruptibly(lambda: self.done(), timeout):
            raise FutureTimeoutError(f"map {self.run_id} has not finished after {timeout}s (still {self.state})")
        return list(self)

    def item(self, index: int) -> MapItem:
        if not 0 <= index < self._items.count:
            raise IndexError(f"map {self.run_id} has {self._items.count} items; there is no item {index}")
        return MapItem(self, index)

    def as_completed(self, timeout: float | None = None) -> Iterator[MapItem]:
        """Items as they finish (completed or failed), like ``concurrent.futures.as_completed``."""
        seen = 0
        while seen < self._items.count:
            for index in self._items.completed_since(seen):
                seen += 1
                yield MapItem(self, index)
            if seen >= self._items.count:
                return
            if not self.wait_interruptibly(lambda: len(self._items.completion_order) > seen, timeout):
                raise FutureTimeoutError(f"map {self.run_id}: no item finished within {timeout}s")

    def counts(self) -> dict[str, int]:
        """How many items are pending, running, completed and failed."""
        return self._items.counts()

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {state}" for state, n in self.counts().items() if n)
        return f"<MapFuture {self.run_id} {self._prepared.function_name} on {self._prepared.pool.name}: {self.state} ({counts})>"

    # -- waiting --------------------------------------------------------------------------------

    def _outcome(self, index: int, timeout: float | None, return_exceptions: bool) -> Any:
        items = self._items
        if not self.wait_interruptibly(lambda: items.resolved(index), timeout):
            raise FutureTimeoutError(f"item {index} of map {self.run_id} has no result after {timeout}s")
        try:
            return items.value(index)
        except Exception as exc:
            if return_exceptions:
                return exc
            raise

    def wait_interruptibly(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        """Wait for ``ready()``; Ctrl-C cancels the map, waits for its teardown, then re-raises."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not ready():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._items.wait_for_change(min(left, _RECHECK_SECONDS) if left is not None else _RECHECK_SECONDS)
            return True
        except KeyboardInterrupt:
            self.progress.say("[yellow]interrupted: cancelling the map and tearing down its stack...[/yellow]")
            self._cancel.set()
            self._wait_teardown_through_interrupts()
            raise

    # -- lifecycle hooks (``RunFuture``) ----------------------------------------------------------

    def _poll_outputs(self, watcher: JobWatcher) -> bool:
        complete = self._items.poll()
        if not complete and isinstance(watcher, WorkersWatcher):
            self._reclaim_from_dead_workers(watcher)
            complete = self._items.complete()
        return complete

    def _reclaim_from_dead_workers(self, watcher: WorkersWatcher) -> None:
        """A worker that failed (killed, OOM) held an item: while other workers still run, retry it on one
        of them within the ``retries`` job variable (its claim is released), else fail it with the reason.
        With no worker left, the item waits for the job's end (``_retry_unfinished``: a fresh job)."""
        for number, status in enumerate(watcher.last):
            if status.state != "failed" or number in self._dead_workers:
                continue
            self._dead_workers.add(number)
            self._items.poll()  # a result written just before the worker died is a result
            survivors = any(not other.finished for other in watcher.last)
            for index in self._items.claimed_by(str(number)):
                reason = f"its worker {number} died: {status.reason or 'no reason given'}"
                if survivors:
                    self._retry_or_fail(index, reason)
                else:
                    self._lost[index] = reason

    def _retry_or_fail(self, index: int, reason: str) -> bool:
        """Item ``index`` lost its run to its infrastructure: give it back to the workers (True) if its
        ``retries`` allow another attempt, else fail it with ``reason``."""
        policy = self._item_retries.setdefault(index, self._prepared.retry_policy())
        if policy.retry(reason):
            self.progress.say(f"[yellow]item {index}: {policy.announcement()}[/yellow]")
            self._record.update(retried_after=[*self._record.retried_after, f"item {index}: {reason}"])
            self._items.release(index)
            return True
        self._items.fail(index, policy.failed_error(f"item {index} of map {self.run_id}", reason))
        return False

    def _retry_unfinished(self, status: JobStatus) -> bool:
        """The job ended and left items without a result (its workers died, were evicted, preempted):
        each runs again on a fresh job within its own ``retries``, or fails. True when one will.

        Every such item spends an attempt, also one no worker had claimed yet, so a job
        that can never run anything ends after ``retries`` fresh ones. Targets whose
        controller retries each index itself (``Target.retried_natively``) never get here."""
        if not self._retries.engine or self._items.poll():
            return False
        ended = infrastructure_failure(status, has_result=False) or "the job ended"
        again = False
        for index in self._items.unfinished():
            reason = self._lost.pop(index, None) or f"the map's job ended before it finished: {ended}"
            again = self._retry_or_fail(index, reason) or again
        return again

    def _run_attempts(self, stack: RunStack, outputs: dict[str, Any]) -> JobStatus:
        """Watch the map's job; while it ends with items its infrastructure lost that may run again,
        go ``up`` once more with the attempt raised: the target replaces its workers, which claim
        those items (their claims were released); the storage and every result stay."""
        prepared = self._prepared
        while True:
            self._set_state("running")
            self._dead_workers.clear()  # a fresh job's workers are numbered from 0 again
            status = self._watch(prepared.target.watcher(prepared.context, outputs))
            if not self._retry_unfinished(status):
                return status
            if self._cancelled():
                raise RunCancelledError(f"map {self.run_id} was cancelled; its stack is being destroyed")
            self._set_state("provisioning")
            prepared.context = dataclasses.replace(prepared.context, attempt=prepared.context.attempt + 1)
            self.progress.say(f"[yellow]a fresh job (attempt {prepared.context.attempt}) for the items left[/yellow]")
            outputs = self._up_again(stack)

    def _collect(self, status: JobStatus) -> None:
        """Every result the job wrote is in; items without one failed with the job's reason."""
        if self._items.poll():
            return None
        reason = infrastructure_failure(status, has_result=False) or "the job ended without it"
        failed = self._items.fail_unfinished(None, reason)
        if failed:
            self.progress.say(f"[red]{failed} of {self._items.count} items have no result: {reason}[/red]")
        return None

    def _settle(self) -> None:
        error = self._error or RunCancelledError(f"map {self.run_id} ended before this item ran")
        self._items.fail_unfinished(error, "")


class EmptyMapFuture:
    """A map over no items: nothing to provision, nothing to run, like ``Executor.map`` over nothing."""

    run_id: str | None = None
    state = "completed"

    def __len__(self) -> int:
        return 0

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def result(self, timeout: float | None = None) -> list[Any]:
        return []

    def as_completed(self, timeout: float | None = None) -> Iterator[MapItem]:
        return iter(())

    def counts(self) -> dict[str, int]:
        return {"pending": 0, "running": 0, "completed": 0, "failed": 0}

    def done(self) -> bool:
        return True

    def cancel(self, timeout: float | None = None) -> bool:
        return False

    def wait_teardown(self, timeout: float | None = None) -> bool:
        return True

    def __repr__(self) -> str:
        return "<MapFuture over no items>"
