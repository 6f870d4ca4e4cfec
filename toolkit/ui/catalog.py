"""Every run the dashboard knows, merged from three sources and kept in memory between requests.

- this machine's run records (``$TOOLKIT_HOME/runs``): the richest, for runs made here;
- the audit trail of each watched backend: every client's finished runs;
- the live run stacks of each watched backend: every client's running (or leaked) runs.

A background thread refreshes them about once a second and rereads only what
may have changed: a record that has ended and been torn down is settled and is
never read again, an audit entry never changes once written, and only the
audit days that can still receive entries are listed again. So a page is served
from memory, whatever the number of runs, and the list stays live.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.ahead import STANDBY_FUNCTION
from toolkit.ui import adapter
from toolkit.ui.journal import ItemCounts, count_items

log = logging.getLogger(__name__)

PAGE_SIZE = 50
ACTIVE_STATES = ("pending", "waiting", "provisioning", "running", "collecting")
CLI_LISTING_SECONDS = 15.0
"""How often a backend whose stacks only the CLI can list (Pulumi Cloud) is listed."""
CLIENT_DIED = "client died"
"""A run whose client process is gone before it ended: its stack, if any, is gc's to collect."""


@dataclass(slots=True)
class RunRow:
    """One run as the runs page lists it."""

    run_id: str
    function: str
    pool: str
    target: str
    state: str
    owner: str
    """The client process: ``host:pid:start``."""
    created: float
    finished: float | None
    attempts: int
    backend_url: str
    error: str | None
    leak: str | None
    """Why ``toolkit gc`` would collect the run's stack (None: it has none, or gc would leave it)."""
    local: bool
    """This machine holds the run's record (and so its logs)."""
    stack_live: bool
    items: ItemCounts | None = None
    user: str = ""
    """``user@host`` of a finished run (from the audit trail)."""

    def duration(self, now: float) -> float:
        return (self.finished or now) - self.created

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


@dataclass
class Page:
    rows: list[RunRow]
    total: int
    number: int
    pages: int
    pools: list[str]
    states: list[str]


@dataclass
class _Local:
    record: adapter.RunRecord
    mtime_ns: int
    items: ItemCounts | None = None
    journal_size: int = -1
    final: bool = False
    """Settled and read since: never read again."""

    @property
    def settled(self) -> bool:
        return self.record.torn_down and self.record.state in adapter.TERMINAL_STATES


@dataclass
class _Backend:
    url: str
    days: dict[str, set[str]] = field(default_factory=dict)
    stacks: dict[str, adapter.LiveStack] = field(default_factory=dict)
    next_listing: float = 0.0
    """When to list its stacks again (a backend listed through the CLI is listed less often)."""


def display_state(
    record: adapter.RunRecord | None, entry: adapter.RunEntry | None, stack: adapter.LiveStack | None
) -> str:
    """The state to show: never "running" for a run whose client is gone."""
    if entry is not None and (record is None or record.state not in adapter.TERMINAL_STATES):
        return entry.outcome  # finished (its client, or gc, wrote the audit entry)
    if record is not None:
        if record.state in adapter.TERMINAL_STATES:
            return "rejected" if (record.error or "").startswith("PolicyViolationError") else record.state
        if adapter.owner_alive(record.owner) is False:
            return CLIENT_DIED
        return record.state
    if stack is not None and stack.tag is not None and adapter.owner_alive(stack.tag.owner) is False:
        return CLIENT_DIED
    return "running" if stack is not None and stack.tag is not None else "provisioning"


def waiting_engine(stack: adapter.LiveStack) -> bool:
    """A live client's engine started ahead (``toolkit.ahead``) that no call has claimed: not a run yet.

    Listing it would show the run id of the call that claims it as this placeholder until the
    call's record is read, and a page opened then would not follow the call's log. Once its
    client is gone it is a stack for gc like any other, and listed as such."""
    tag = stack.tag
    return tag is not None and tag.function == STANDBY_FUNCTION and adapter.owner_alive(tag.owner) is not False


class Catalog:
    """The runs of the watched backends (and of this machine), refreshed in the background."""

    def __init__(self, backends: list[str], refresh_seconds: float = 1.0) -> None:
        self.backends = [_Backend(url) for url in backends]
        self.refresh_seconds = refresh_seconds
        self._locals: dict[str, _Local] = {}
        self._entries: dict[str, tuple[adapter.RunEntry, str]] = {}
        """run id -> (audit entry, backend url)."""
        self._rows: list[RunRow] = []
        self._by_id: dict[str, RunRow] = {}
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refreshed = 0.0
        self.errors: dict[str, str] = {}
        """Sources that could not be read at the last refresh, and why (shown on the pages)."""

    # -- reading ---------------------------------------------------------------------------------

    def page(self, pool: str = "", state: str = "", function: str = "", number: int = 1, size: int = PAGE_SIZE) -> Page:
        with self._lock:
            rows = self._rows
        pools = sorted({row.pool for row in rows})
        states = sorted({row.state for row in rows})
        if pool or state or function:
            needle = function.lower()
            rows = [
                row for row in rows
                if (not pool or row.pool == pool) and (not state or row.state == state)
                and (not needle or needle in row.function.lower())
            ]
        pages = max(1, -(-len(rows) // size))
        number = min(max(1, number), pages)
        return Page(rows[(number - 1) * size : number * size], len(rows), number, pages, pools, states)

    def row(self, run_id: str) -> RunRow | None:
        with self._lock:
            return self._by_id.get(run_id)

    def rows(self) -> list[RunRow]:
        with self._lock:
            return list(self._rows)

    def stack(self, run_id: str) -> adapter.LiveStack | None:
        for backend in self.backends:
            found = backend.stacks.get(run_id)
            if found is not None:
                return found
        return None

    def stacks(self) -> list[adapter.LiveStack]:
        return [stack for backend in self.backends for stack in backend.stacks.values()]

    def environment_pools(self) -> dict[str, set[str]]:
        """Environment (image or interpreter) -> the pools whose runs from this machine used it."""
        used: dict[str, set[str]] = {}
        for local in list(self._locals.values()):
            if local.record.environment:
                used.setdefault(local.record.environment, set()).add(local.record.pool)
        return used

    def entry(self, run_id: str) -> adapter.RunEntry | None:
        found = self._entries.get(run_id)
        return found[0] if found else None

    # -- refreshing ------------------------------------------------------------------------------

    def start(self) -> None:
        """Load everything (unless loaded already), then refresh in the background."""
        if not self.refreshed:
            self.refresh()
        self._thread = threading.Thread(target=self._loop, name="toolkit-ui-catalog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - keep serving the last state; the next refresh may work
                log.exception("refreshing the runs failed")

    def refresh(self) -> None:
        """Reread what may have changed (one refresh at a time: a page may ask for one too)."""
        with self._refreshing:
            self._refresh()

    def known(self, run_id: str) -> RunRow | None:
        """The run's row, refreshing once first if it is not known yet (a run submitted a moment ago)."""
        row = self.row(run_id)
        if row is None:
            self.refresh()
            row = self.row(run_id)
        return row

    def _refresh(self) -> None:
        dirty = self._refresh_records()
        for backend in self.backends:
            dirty |= self._refresh_history(backend)
            dirty |= self._refresh_stacks(backend)
        dirty |= {run_id for run_id, local in self._locals.items() if not local.settled}  # clients may die
        if dirty:
            self._rebuild(dirty)
        self.refreshed = time.time()

    def _refresh_records(self) -> set[str]:
        dirty = set()
        try:
            entries = list(os.scandir(adapter.runs_dir()))
        except FileNotFoundError:
            entries = []
        present = set()
        for entry in entries:
            run_id = entry.name
            present.add(run_id)
            known = self._locals.get(run_id)
            if known is not None and known.final:
                continue
            path = Path(entry.path, "record.json")
            try:
                mtime = path.stat().st_mtime_ns
            except OSError:
                continue
            if known is None or known.mtime_ns != mtime:
                record = adapter.read_record(run_id)
                if record is None:
                    continue
                known = _Local(record, mtime)
                self._locals[run_id] = known
                dirty.add(run_id)
            if known.record.items is not None and self._count_items(known):
                dirty.add(run_id)
            known.final = known.settled  # its journal was read after the map ended: nothing more comes
        gone = set(self._locals) - present
        for run_id in gone:
            del self._locals[run_id]
        return dirty | gone

    def _count_items(self, local: _Local) -> bool:
        journal = adapter.items_journal(local.record.run_id)
        try:
            size = journal.stat().st_size
        except OSError:
            size = 0
        if size == local.journal_size:
            return False
        local.items = count_items(journal, local.record.items or 0)
        local.journal_size = size
        return True

    def _refresh_history(self, backend: _Backend) -> set[str]:
        store = adapter.store(backend.url)
        if store is None:
            return set()
        try:
            days = adapter.history_days(store)
        except Exception as exc:  # noqa: BLE001 - an unreachable backend is shown, not fatal
            self.errors[f"audit trail of {backend.url}"] = f"{type(exc).__name__}: {exc}"
            return set()
        self.errors.pop(f"audit trail of {backend.url}", None)
        dirty = set()
        recent = sorted(days)[-2:]  # entries are written on the day a run finishes (or gc collects it)
        for day in days:
            if day in backend.days and day not in recent:
                continue
            seen = backend.days.setdefault(day, set())
            for name in adapter.history_names(store, day):
                if name in seen:
                    continue
                entry = adapter.read_entry(store, day, name)
                if entry is not None:
                    self._entries[entry.run_id] = (entry, backend.url)
                    seen.add(name)
                    dirty.add(entry.run_id)
        for day in set(backend.days) - set(days):  # pruned by gc
            for name in backend.days.pop(day):
                run_id = name.removesuffix(".json")
                self._entries.pop(run_id, None)
                dirty.add(run_id)
        return dirty

    def _refresh_stacks(self, backend: _Backend) -> set[str]:
        now = time.monotonic()
        if now < backend.next_listing:
            return set()
        try:
            if not adapter.files_readable(backend.url):
                backend.next_listing = now + CLI_LISTING_SECONDS
            stacks = {stack.run_id: stack for stack in adapter.live_stacks(backend.url)}
        except Exception as exc:  # noqa: BLE001
            self.errors[f"run stacks of {backend.url}"] = f"{type(exc).__name__}: {exc}"
            return set()
        self.errors.pop(f"run stacks of {backend.url}", None)
        old = backend.stacks
        backend.stacks = stacks
        return {run_id for run_id in set(old) | set(stacks) if old.get(run_id) != stacks.get(run_id)}

    def _rebuild(self, dirty: set[str]) -> None:
        stacks = {stack.run_id: stack for stack in self.stacks()}
        with self._lock:
            by_id = dict(self._by_id)
        for run_id in dirty:
            stack = stacks.get(run_id)
            if run_id in self._locals or run_id in self._entries or (stack is not None and not waiting_engine(stack)):
                by_id[run_id] = self._row(run_id, stack)
            else:
                by_id.pop(run_id, None)
        rows = sorted(by_id.values(), key=lambda row: row.created, reverse=True)
        with self._lock:
            self._rows, self._by_id = rows, by_id

    def _row(self, run_id: str, stack: adapter.LiveStack | None) -> RunRow:
        local = self._locals.get(run_id)
        record = local.record if local else None
        found = self._entries.get(run_id)
        entry, entry_backend = found if found else (None, "")
        state = display_state(record, entry, stack)
        tag = stack.tag if stack else None
        if record is not None:
            return RunRow(
                run_id=run_id, function=record.function, pool=record.pool, target=record.target, state=state,
                owner=record.owner, created=record.created,
                finished=record.finished or (entry.finished if entry else None), attempts=record.attempts,
                backend_url=record.backend_url, error=record.error or (entry.error if entry else None),
                leak=stack.leak if stack else None, local=True, stack_live=stack is not None,
                items=local.items if local else None,
            )
        if entry is not None:
            return RunRow(
                run_id=run_id, function=entry.function, pool=entry.pool, target=entry.target, state=state,
                owner=entry.owner, user=entry.user, created=entry.created, finished=entry.finished, attempts=entry.attempts,
                backend_url=entry_backend, error=entry.error, leak=stack.leak if stack else None, local=False,
                stack_live=stack is not None,
            )
        assert stack is not None
        return RunRow(
            run_id=run_id, function=tag.function if tag else "?", pool=tag.pool if tag else "?", target="",
            state=state, owner=tag.owner if tag else "?", created=tag.created if tag else 0.0, finished=None,
            attempts=1, backend_url=stack.backend_url, error=None, leak=stack.leak, local=False, stack_live=True,
        )
