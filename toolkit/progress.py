"""Progress output the way ``pulumi up`` users expect: one line per resource step.

Built from the Automation API's structured engine events (``on_event``), never
from scraping CLI text. Goes to stderr so a function's own output and
``--json`` documents on stdout stay clean. ``TOOLKIT_PROGRESS=0`` silences it;
``TOOLKIT_PROGRESS=json`` turns each message into a JSON line for scripts.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from pulumi.automation import EngineEvent
from rich.console import Console
from rich.text import Text

_SYMBOLS = {"create": "+", "delete": "-", "update": "~", "replace": "+-", "same": " ", "read": ">"}
_VERBS = {
    "create": ("creating", "created"),
    "delete": ("deleting", "deleted"),
    "update": ("updating", "updated"),
    "replace": ("replacing", "replaced"),
    "read": ("reading", "read"),
}


def enabled() -> bool:
    return os.environ.get("TOOLKIT_PROGRESS", "1").lower() not in ("0", "false", "off", "no")


def json_mode() -> bool:
    """``TOOLKIT_PROGRESS=json`` (set by the CLI's ``--json``): one JSON object per line on stderr."""
    return os.environ.get("TOOLKIT_PROGRESS", "").lower() == "json"


def emit_json(document: dict[str, object]) -> None:
    with Progress._lock:
        sys.stderr.write(json.dumps(document, default=str) + "\n")
        sys.stderr.flush()


class Progress:
    """Renders one run's engine events and lifecycle messages."""

    _console = Console(stderr=True, highlight=False)
    _lock = threading.Lock()

    def __init__(self, run_id: str, show: bool | None = None) -> None:
        self.run_id = run_id
        self.show = enabled() if show is None else show
        self.errors: list[str] = []
        """Error diagnostics of the last operation, for the exception message."""
        self._started: dict[str, float] = {}

    def say(self, message: str) -> None:
        if self.show and json_mode():
            emit_json({"run": self.run_id, "message": Text.from_markup(message).plain})
        elif self.show:
            with self._lock:
                self._console.print(f"[dim]{self.run_id}[/dim] {message}", soft_wrap=True)

    def on_event(self, event: EngineEvent) -> None:
        """``on_event`` callback for ``up``/``destroy``; collects error diagnostics too."""
        diagnostic = event.diagnostic_event
        if diagnostic and diagnostic.severity == "error":
            self.errors.append(diagnostic.message.strip())
        pre = event.resource_pre_event
        if pre and pre.metadata.op.value in _VERBS:
            meta = pre.metadata
            self._started[meta.urn] = time.monotonic()
            name = meta.urn.rsplit("::", 1)[-1]
            self.say(f"{_SYMBOLS[meta.op.value]} {meta.type} [bold]{name}[/bold] {_VERBS[meta.op.value][0]}")
        done = event.res_outputs_event
        if done and done.metadata.op.value in _VERBS:
            meta = done.metadata
            elapsed = time.monotonic() - self._started.pop(meta.urn, time.monotonic())
            name = meta.urn.rsplit("::", 1)[-1]
            self.say(
                f"{_SYMBOLS[meta.op.value]} {meta.type} [bold]{name}[/bold] "
                f"{_VERBS[meta.op.value][1]} ({elapsed:.1f}s)"
            )
        failed = event.res_op_failed_event
        if failed:
            self.say(f"[red]! {failed.metadata.type} {failed.metadata.urn.rsplit('::', 1)[-1]} failed[/red]")
