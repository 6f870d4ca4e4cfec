"""``RunGuard``: what a pool's guardrails do at each point of one run's lifecycle.

The lifecycle (``futures.RunFuture``) calls it at four points: ``claim_now``
(at submit, for ``block=False``), ``admit`` (before the stack exists: a
slot), ``check_policies`` (after the stack exists, before ``up``: a preview
with the policy packs, so a mandatory violation stops the call before any
resource is created; ``up`` then runs the packs again) and ``finish`` (after
teardown: free the slot, write the audit entry).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from toolkit.backend_store import BackendStore
from toolkit.engine import RunStack
from toolkit.errors import ConfigError, PolicyViolationError, RemoteError, ToolkitError
from toolkit.guardrails import history
from toolkit.guardrails.slots import Slot, SlotMarker
from toolkit.preparation import PreparedRun
from toolkit.progress import Progress
from toolkit.workspace import current_user


def _store(backend_url: str) -> BackendStore | None:
    try:
        return BackendStore(backend_url)
    except ConfigError:
        return None  # a Pulumi Cloud backend: no slots (refused at prepare) and no history


def _audit_error(error: BaseException | None) -> str | None:
    """One line for the shared audit trail: the toolkit's own message, but only the type of the
    function's exception (its message is the user's data and may hold anything)."""
    if error is None:
        return None
    if isinstance(error, ToolkitError) and not isinstance(error, RemoteError):
        return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
    name = error.type_name if isinstance(error, RemoteError) else type(error).__name__
    return f"{name} raised by the function"


class RunGuard:
    def __init__(self, prepared: PreparedRun, progress: Progress, owner: str, created: float, ttl: float) -> None:
        self.prepared = prepared
        self.progress = progress
        self.owner = owner
        self.created = created
        self.store = _store(prepared.backend_url)
        self.slot: Slot | None = None
        limit = prepared.pool.max_concurrent_runs
        if limit and self.store is not None:
            marker = SlotMarker(
                run_id=prepared.run_id,
                pool=prepared.pool.name,
                function=prepared.function_name,
                owner=owner,
                created=created,
                ttl=ttl,
            )
            self.slot = Slot(self.store, limit, marker)

    def claim_now(self) -> None:
        """``block=False``: take a slot now or raise ``PoolBusyError`` from ``submit``."""
        if self.slot is not None and not self.prepared.block:
            self.slot.acquire(block=False, cancelled=lambda: False, say=self.progress.say)

    def admit(self, cancelled: Callable[[], bool]) -> None:
        """Wait for a slot on the pool (no-op without a limit, or when ``claim_now`` took one)."""
        if self.slot is not None and not self.slot.held:
            self.slot.acquire(block=True, cancelled=cancelled, say=self.progress.say)

    def check_policies(self, stack: RunStack) -> None:
        """Preview with the pool's policy packs; raises ``PolicyViolationError`` on a mandatory violation."""
        if not self.prepared.policy_packs:
            return
        shown, self.progress.show = self.progress.show, False  # planned steps are not progress
        try:
            stack.preview()
        finally:
            self.progress.show = shown

    def finish(self, state: str, error: BaseException | None, torn_down: bool, attempts: int = 1) -> None:
        """Free the slot (only once the stack is gone: it still counts until then) and write the audit entry."""
        if self.slot is not None and torn_down:
            self.slot.release()
        if self.store is None:
            return
        outcome = "rejected" if isinstance(error, PolicyViolationError) else state
        entry = history.RunEntry(
            run_id=self.prepared.run_id,
            pool=self.prepared.pool.name,
            function=self.prepared.function_name,
            target=self.prepared.target.name,
            user=current_user(),
            owner=self.owner,
            resources=len(self.progress.resources),
            outcome=outcome,
            error=_audit_error(error),
            created=self.created,
            finished=time.time(),
            attempts=attempts,
        )
        try:
            history.record(self.store, entry)
        except Exception as exc:  # noqa: BLE001 - the audit entry must never fail the call
            self.progress.warn(f"could not write the audit entry of run {entry.run_id}: {exc}")
