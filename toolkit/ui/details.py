"""One run's page, assembled: its row, record, audit entry, live stack, pictures, items and log tail.

Built per request from the catalog (in memory) and the run's own files (its
record, log and item journal, read fresh), so a live run's page is current.
A run made on another machine has no record here: its page shows what the
audit trail and its stack's checkpoint say. A map's items table is paged
(``ITEMS_PAGE`` rows) and filterable by state; unfiltered, the failed and
raised items come first, so the one that went wrong is on the first page.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from toolkit.ui import adapter, pictures
from toolkit.ui.catalog import Catalog, RunRow
from toolkit.ui.journal import STATES, Item, read_items

LOG_TAIL_BYTES = 256 * 1024
"""The run page shows the last this-many bytes of the log; the download has all of it."""
ITEMS_PAGE = 100
"""Rows of a map's items table per page (the API lists them all)."""
FIRST = ("failed", "raised")
"""Item states listed before the others when the table is not filtered."""


@dataclass
class ItemPage:
    """One page of a map's items table: ``state`` is the filter ("" for all)."""

    rows: list[Item]
    state: str
    number: int
    pages: int
    total: int
    first: int
    """The 1-based position of the first row, for "items 101-200 of 1000"."""
    counts: list[tuple[str, int]]
    """``(state, items in it)`` for every state some item is in, in ``STATES`` order."""
    leading: int
    """How many failed and raised items an unfiltered table lists before the others."""


def item_page(items: list[Item], state: str, number: int) -> ItemPage:
    """The ``number``-th page of the items in ``state`` (all when "", failed and raised first), clamped."""
    state = state if state in STATES else ""
    leading = 0
    if state:
        chosen = [item for item in items if item.state == state]
    else:
        chosen = [item for item in items if item.state in FIRST]
        leading = len(chosen)
        chosen += [item for item in items if item.state not in FIRST]
    pages = max(1, -(-len(chosen) // ITEMS_PAGE))
    number = min(max(number, 1), pages)
    counts = {name: 0 for name in STATES}
    for item in items:
        counts[item.state] += 1
    start = (number - 1) * ITEMS_PAGE
    return ItemPage(chosen[start : start + ITEMS_PAGE], state, number, pages, len(chosen), start + 1,
                    [(name, count) for name, count in counts.items() if count], leading)


def item_link(items: list[Item]) -> Callable[[Item], str]:
    """Where a Gantt bar of an item links to: its row, on the page of its state's table that lists it."""
    rank: dict[int, int] = {}
    seen = dict.fromkeys(STATES, 0)
    for item in items:
        rank[item.index] = seen[item.state]
        seen[item.state] += 1
    return lambda item: f"?items={item.state}&items_page={rank[item.index] // ITEMS_PAGE + 1}#item-{item.index}"


@dataclass
class RunDetail:
    row: RunRow
    record: adapter.RunRecord | None
    entry: adapter.RunEntry | None
    stack: adapter.LiveStack | None
    timeline: pictures.Picture
    phases: list[tuple[str, float, float]]
    """``(phase, began, seconds)`` for the phase table."""
    resources: list[tuple[str, str, str | None, str]]
    tree: list[pictures.Node]
    tree_height: float
    items: list[Item] = field(default_factory=list)
    gantt: pictures.Picture | None = None
    item_page: ItemPage | None = None

    @property
    def variables(self) -> list[Any]:
        return self.record.variables if self.record else []

    @property
    def policy(self) -> list[dict[str, Any]]:
        return self.record.policy if self.record else []


def _marks(row: RunRow, record: adapter.RunRecord | None) -> list[tuple[str, float]]:
    if record is not None and record.phases:
        return [(mark.phase, mark.at) for mark in record.phases]
    marks = [("running", row.created)]
    if row.finished:
        marks.append((row.state, row.finished))
    return marks


def _resources(record: adapter.RunRecord | None, stack: adapter.LiveStack | None) -> list[tuple[str, str, str | None, str]]:
    if record is not None and record.resources:
        return [(step.urn, step.type, step.parent, step.status) for step in record.resources]
    if stack is not None:
        return [(item.urn, item.type, item.parent, item.status)
                for item in adapter.stack_resources(stack.backend_url, stack.name)]
    return []


def run_detail(catalog: Catalog, run_id: str, items_state: str = "", items_page: int = 1) -> RunDetail | None:
    """The run's page; for a map, its items table's page ``items_page`` of the items in ``items_state``."""
    row = catalog.known(run_id)
    if row is None:
        return None
    record = adapter.read_record(run_id) if row.local else None
    stack = catalog.stack(run_id)
    now = time.time()
    marks = _marks(row, record)
    ended = row.state not in ("pending", "waiting", "provisioning", "running", "collecting")
    timeline = pictures.timeline(marks, now, ended and (record is None or record.torn_down or not row.stack_live))
    phases = []
    for (phase, at), following in zip(marks, [*marks[1:], None], strict=True):
        if phase in pictures.PHASES:
            phases.append((pictures.PHASES[phase][0], at, (following[1] if following else now) - at))
    resources = _resources(record, stack)
    tree, height = pictures.resource_tree(resources)
    detail = RunDetail(row, record, catalog.entry(run_id), stack, timeline, phases, resources, tree, height)
    if record is not None and record.items is not None:
        detail.items = read_items(adapter.items_journal(run_id), record.items)
        detail.gantt = pictures.gantt(detail.items, now, link=item_link(detail.items))
        detail.item_page = item_page(detail.items, items_state, items_page)
    return detail


def log_tail(run_id: str) -> tuple[str, int, bool]:
    """``(text, size, cut)``: the last ``LOG_TAIL_BYTES`` of the run's log, its size, whether it was cut."""
    path = adapter.logs_path(run_id)
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            start = max(0, size - LOG_TAIL_BYTES)
            handle.seek(start)
            data = handle.read()
    except OSError:
        return "", 0, False
    if start:
        data = data[data.find(b"\n") + 1 :]  # from a whole line
    return data.decode("utf-8", errors="replace"), size, start > 0


def log_since(run_id: str, offset: int) -> tuple[str, int]:
    """What the log got after byte ``offset``, and the new offset (whole UTF-8 characters only)."""
    path = adapter.logs_path(run_id)
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(1 << 20)
    except OSError:
        return "", offset
    whole = _complete(data)
    return data[:whole].decode("utf-8", errors="replace"), offset + whole


def _complete(data: bytes) -> int:
    """``len(data)`` less a UTF-8 sequence cut at its end (it is read whole next time)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # ASCII or the lead byte of a sequence
            need = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            return len(data) if need <= back else len(data) - back
    return len(data)
