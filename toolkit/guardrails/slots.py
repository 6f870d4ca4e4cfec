"""``max_concurrent_runs``: at most that many live run stacks per pool, across processes and machines.

Claim, then check. Before its stack exists, a run writes a slot marker into
the pool's state backend (``.toolkit/slots/<pool>/<run-id>.json``), then
lists the pool's markers. It goes ahead only if it sees fewer than ``limit``
other live markers; otherwise it withdraws its marker and tries again later
(or fails at once with ``block=False``). The marker stays until the run's
stack is destroyed and removed, so the markers always cover every live stack.

Why this holds without a lock: suppose ``limit + 1`` runs were up at once.
Take the one whose marker was written last. When it listed, the others'
markers were all there (written before its own, kept until their stacks were
gone), so it saw ``limit`` others and would have withdrawn. Two runs that see
each other both withdraw; random jitter in the retry delay lets one through
next time, so no order (and no clock) has to be agreed between machines.

A marker that cannot be read (being written right now) counts. A marker
whose owner is gone (on this host) or whose TTL passed does not; ``toolkit
gc`` removes those.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

from pydantic import BaseModel

from toolkit.backend_store import BackendStore
from toolkit.engine import RunTag
from toolkit.errors import PoolBusyError, RunCancelledError
from toolkit.workspace import owner_alive

SLOTS = "slots"


class SlotMarker(RunTag):
    """A run's claim on a slot of its pool: who holds it, since when, until when at most."""

    run_id: str
    admitted: bool = False
    """False while the run is still checking the count; True once it may create its stack."""

    def stale(self, now: float) -> bool:
        return owner_alive(self.owner) is False or now - self.created > self.ttl


class Occupancy(BaseModel):
    others: int
    """Live markers of other runs: admitted ones and claims being checked."""
    running: int
    """Of those, the admitted ones (shown to a waiting user)."""


def occupancy(store: BackendStore, pool: str, exclude: str | None = None) -> Occupancy:
    """Count the pool's live slot markers in the backend."""
    now = time.time()
    others = running = 0
    for name in store.names(f"{SLOTS}/{pool}"):
        if not name.endswith(".json") or name == f"{exclude}.json":
            continue
        try:
            marker = SlotMarker.model_validate_json(store.fs.cat_file(store.path(SLOTS, pool, name)))
        except FileNotFoundError:
            continue  # withdrawn or released since the listing
        except ValueError:
            others += 1  # being written: it may be a run about to go ahead
            continue
        if marker.stale(now):
            continue
        others += 1
        running += marker.admitted
    return Occupancy(others=others, running=running)


def stale_markers(store: BackendStore) -> list[str]:
    """Markers (relative paths) of runs whose owner is gone or whose TTL passed: ``toolkit gc`` removes them."""
    now = time.time()
    stale = []
    for pool in store.names(SLOTS):
        for name in store.names(f"{SLOTS}/{pool}"):
            try:
                marker = SlotMarker.model_validate_json(store.fs.cat_file(store.path(SLOTS, pool, name)))
            except (FileNotFoundError, ValueError):
                continue
            if marker.stale(now):
                stale.append(f"{SLOTS}/{pool}/{name}")
    return stale


class Slot:
    """One run's slot on a pool with a concurrency limit."""

    def __init__(self, store: BackendStore, limit: int, marker: SlotMarker) -> None:
        self.store = store
        self.limit = limit
        self.marker = marker
        self.held = False

    @property
    def _relative(self) -> str:
        return f"{SLOTS}/{self.marker.pool}/{self.marker.run_id}.json"

    def try_acquire(self) -> Occupancy | None:
        """Claim, then check: ``None`` when the slot is ours, else what the pool is busy with."""
        self.marker.admitted = False
        self.store.write(self._relative, json.loads(self.marker.model_dump_json()))
        busy = occupancy(self.store, self.marker.pool, exclude=self.marker.run_id)
        if busy.others < self.limit:
            self.marker.admitted = True
            self.store.write(self._relative, json.loads(self.marker.model_dump_json()))
            self.held = True
            return None
        self.store.remove(self._relative)
        return busy

    def acquire(self, block: bool, cancelled: Callable[[], bool], say: Callable[[str], None]) -> None:
        """Take a slot, waiting (with a visible message) unless ``block`` is False."""
        pool, delay, shown = self.marker.pool, 0.3, None
        while True:
            busy = self.try_acquire()
            if busy is None:
                return
            running = f"{max(busy.running, min(busy.others, self.limit))}/{self.limit} running"
            if not block:
                raise PoolBusyError(
                    f"pool {pool!r} is at its limit of {self.limit} concurrent runs ({running}); run "
                    f"{self.marker.run_id} was not started. Retry later, or submit with block=True to wait for a slot"
                )
            if running != shown:
                say(f"waiting for a slot on pool {pool} ({running})")
                shown = running
            deadline = time.monotonic() + random.uniform(0.5, 1.5) * delay
            while time.monotonic() < deadline:
                if cancelled():
                    raise RunCancelledError(f"run {self.marker.run_id} was cancelled while waiting for a slot on pool {pool!r}")
                time.sleep(0.05)
            delay = min(delay * 1.5, 3.0)

    def release(self) -> None:
        if self.held:
            self.store.remove(self._relative)
            self.held = False
