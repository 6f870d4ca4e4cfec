"""A map's item journal (``items.jsonl``, written by ``fanout.results``) read back into item states.

Each line is one change of one item: ``running`` (a worker claimed it; the
client's clock), ``completed``/``raised`` (its result came back: which worker,
when it started and finished on the job's clock), ``failed`` (no result, and
why) or ``pending`` (released for a retry). The last line of an item wins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

STATES = ("pending", "running", "completed", "raised", "failed")


@dataclass(slots=True)
class Item:
    index: int
    state: str = "pending"
    worker: str = ""
    started: float | None = None
    finished: float | None = None
    error: str | None = None


@dataclass(slots=True)
class ItemCounts:
    pending: int = 0
    running: int = 0
    completed: int = 0
    raised: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.pending + self.running + self.completed + self.raised + self.failed

    def summary(self) -> str:
        """``"998 ok, 1 raised, 1 failed of 1000"``: what is not zero."""
        parts = [f"{self.completed} ok"] if self.completed else []
        parts += [f"{count} {name}" for name, count in
                  (("running", self.running), ("raised", self.raised), ("failed", self.failed)) if count]
        return f"{', '.join(parts) or 'none done'} of {self.total}"


def read_items(journal: Path, count: int) -> list[Item]:
    """Every item of the map, in index order, as the journal leaves it."""
    items = [Item(index) for index in range(count)]
    try:
        lines = journal.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return items
    for line in lines:
        try:
            event = json.loads(line)
            item = items[int(event["i"])]
        except (ValueError, KeyError, IndexError, TypeError):
            continue  # a line being written, or not ours
        state = event.get("state")
        if state == "running":
            item.state, item.started, item.finished, item.error = "running", event.get("at"), None, None
            item.worker = str(event.get("worker") or "")
        elif state in ("completed", "raised"):
            item.state = state
            item.worker = str(event.get("worker") or item.worker)
            item.started = event.get("started", item.started)
            item.finished = event.get("finished", event.get("at"))
            item.error = event.get("error")
        elif state == "failed":
            item.state, item.finished, item.error = "failed", event.get("at"), event.get("error")
        elif state == "pending":
            item.state, item.started, item.finished = "pending", None, None
    return items


def count_items(journal: Path, count: int) -> ItemCounts:
    counts = ItemCounts()
    for item in read_items(journal, count):
        setattr(counts, item.state, getattr(counts, item.state) + 1)
    return counts
