"""The audit trail: one small document per finished run, kept in the pool's state backend.

Why the backend: run stacks (and Pulumi's own update history with them) are
removed after destroy, and client-side run records stay on the machine that
made them; the backend is the one store every client of a pool shares and
can write, so a platform team sees every user's runs in one place.
Layout: ``.toolkit/history/<YYYY-MM-DD>/<run-id>.json`` (UTC day the run
finished), a few hundred bytes each. Day directories make pruning cheap:
``toolkit gc`` drops whole days older than the retention (30 days unless
``--history-older-than`` says otherwise), so the trail stays bounded.

Actions people take on runs and stacks from the dashboard (cancel, gc,
prune) are audited beside it: ``.toolkit/actions/<YYYY-MM-DD>/<ns>-<action>.json``.
"""

from __future__ import annotations

import datetime
import json
import time

from pydantic import BaseModel

from toolkit.backend_store import BackendStore

HISTORY = "history"
ACTIONS = "actions"
DEFAULT_RETENTION = 30 * 86400.0


class RunEntry(BaseModel):
    """Who ran what, where, with what outcome."""

    run_id: str
    pool: str
    function: str
    target: str = ""
    user: str
    owner: str
    """``host:pid:start`` of the client process."""
    resources: int
    """Resources the run stack held at its largest (0: nothing was created)."""
    outcome: str
    """completed, failed, cancelled or rejected (a mandatory policy stopped it)."""
    error: str | None = None
    created: float
    finished: float
    attempts: int = 1
    """Attempts the run made (``toolkit.retries``): 1 unless its job ended without a result and was re-run."""

    @property
    def duration(self) -> float:
        return self.finished - self.created


class ActionEntry(BaseModel):
    """Someone acted on a run, a stack or an environment (from the dashboard)."""

    action: str
    """cancel, gc or prune."""
    subject: str
    """The run id, the run stack or the environment stack acted on."""
    user: str
    via: str
    """What the action was taken through (``toolkit ui``)."""
    at: float
    outcome: str
    """done, requested (a cancel the run's own client carries out) or ``failed: <reason>``."""


def _day(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d")


def record(store: BackendStore, entry: RunEntry) -> None:
    store.write(f"{HISTORY}/{_day(entry.finished)}/{entry.run_id}.json", json.loads(entry.model_dump_json()))


def record_action(store: BackendStore, entry: ActionEntry) -> None:
    name = f"{int(entry.at * 1e9)}-{entry.action}.json"
    store.write(f"{ACTIONS}/{_day(entry.at)}/{name}", json.loads(entry.model_dump_json()))


def actions(store: BackendStore) -> list[ActionEntry]:
    """Every audited action in the backend, oldest first."""
    found = []
    for day in store.names(ACTIONS):
        for document in store.read_all(f"{ACTIONS}/{day}"):
            try:
                found.append(ActionEntry.model_validate(document))
            except ValueError:
                continue
    return sorted(found, key=lambda entry: entry.at)


def entries(store: BackendStore, since: float | None = None) -> list[RunEntry]:
    """Finished runs in the backend, oldest first (only days from ``since`` on, when given)."""
    first_day = _day(since) if since is not None else ""
    found = []
    for day in store.names(HISTORY):
        if day < first_day:
            continue
        for document in store.read_all(f"{HISTORY}/{day}"):
            try:
                entry = RunEntry.model_validate(document)
            except ValueError:
                continue
            if since is None or entry.finished >= since:
                found.append(entry)
    return sorted(found, key=lambda entry: entry.created)


def prune(store: BackendStore, older_than: float, now: float | None = None) -> int:
    """Remove entries of runs that finished more than ``older_than`` seconds ago; returns how many."""
    cutoff = (now or time.time()) - older_than
    cutoff_day = _day(cutoff)
    for day in store.names(ACTIONS):
        if day < cutoff_day:
            store.remove_tree(f"{ACTIONS}/{day}")  # by whole days: actions are few
    removed = 0
    for day in store.names(HISTORY):
        if day < cutoff_day:
            removed += len(store.names(f"{HISTORY}/{day}"))
            store.remove_tree(f"{HISTORY}/{day}")
        elif day == cutoff_day:
            for document in store.read_all(f"{HISTORY}/{day}"):
                if document.get("finished", cutoff) < cutoff:
                    store.remove(f"{HISTORY}/{day}/{document['run_id']}.json")
                    removed += 1
            if not store.names(f"{HISTORY}/{day}"):
                store.remove_tree(f"{HISTORY}/{day}")
    return removed
