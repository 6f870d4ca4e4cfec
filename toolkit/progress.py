"""Progress output the way ``pulumi up`` users expect: one line per resource step.

Built from the Automation API's structured engine events (``on_event``), never
from scraping CLI text. Goes to stderr so a function's own output and
``--json`` documents on stdout stay clean. ``TOOLKIT_PROGRESS=0`` silences it,
except policy warnings: a pool's owners want every user to see those.
``TOOLKIT_PROGRESS=json`` turns each message into a JSON line for scripts.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable

from pulumi.automation import EngineEvent
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from toolkit.policy_packs import PolicyResult

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

    def __init__(self, run_id: str, show: bool | None = None, policy_warnings: bool = True) -> None:
        self.run_id = run_id
        self.show = enabled() if show is None else show
        self.policy_warnings = policy_warnings
        self.errors: list[str] = []
        """Error diagnostics of the last operation, for the exception message."""
        self.policy_results: list[PolicyResult] = []
        """Every distinct policy verdict on this run (preview and up report the same ones once)."""
        self.resources: set[str] = set()
        """URNs of the resources the run's stack has held (created, not merely planned), for the audit trail."""
        self.steps: dict[str, tuple[str, str | None, str]] = {}
        """``urn -> (type, parent urn, status)``: the last step the engine reported for each resource."""
        self.on_step: Callable[[], None] | None = None
        """Called after ``steps`` changed (the run's record keeps them for the dashboard)."""
        self._started: dict[str, float] = {}

    def say(self, message: str) -> None:
        if self.show and json_mode():
            emit_json({"run": self.run_id, "message": Text.from_markup(message).plain})
        elif self.show:
            with self._lock:
                self._console.print(f"[dim]{self.run_id}[/dim] {message}", soft_wrap=True)

    def warn(self, message: str) -> None:
        if json_mode():
            emit_json({"run": self.run_id, "warning": Text.from_markup(message).plain})
            return
        with self._lock:
            self._console.print(f"[dim]{self.run_id}[/dim] [yellow]warning:[/yellow] {message}", soft_wrap=True)

    def _on_policy(self, result: PolicyResult) -> None:
        if result in self.policy_results:
            return
        self.policy_results.append(result)
        if not result.mandatory and self.policy_warnings:
            self.warn(f"policy {escape(str(result))}")

    def on_event(self, event: EngineEvent) -> None:
        """``on_event`` callback for ``up``/``destroy``; collects error diagnostics and policy verdicts too."""
        diagnostic = event.diagnostic_event
        if diagnostic and diagnostic.severity == "error":
            self.errors.append(diagnostic.message.strip())
        if event.policy_event:
            self._on_policy(PolicyResult.from_event(event.policy_event))
        pre = event.resource_pre_event
        if pre and pre.metadata.op.value in _VERBS:
            meta = pre.metadata
            self._started[meta.urn] = time.monotonic()
            name = meta.urn.rsplit("::", 1)[-1]
            self.say(f"{_SYMBOLS[meta.op.value]} {meta.type} [bold]{name}[/bold] {_VERBS[meta.op.value][0]}")
        done = event.res_outputs_event
        if done and not done.planning and done.metadata.op.value != "delete" and done.metadata.type != "pulumi:pulumi:Stack":
            self.resources.add(done.metadata.urn)
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
        self._note_step(event)

    def _note_step(self, event: EngineEvent) -> None:
        """Keep each resource's latest step (not a preview's planned ones) for ``steps``."""
        for step, done in ((event.resource_pre_event, False), (event.res_outputs_event, True)):
            if step is None or step.planning:
                continue
            meta = step.metadata
            state = meta.new or meta.old
            parent = state.parent if state is not None else None
            verbs = _VERBS.get(meta.op.value)
            status = (verbs[1] if done else verbs[0]) if verbs else meta.op.value
            self.steps[meta.urn] = (meta.type, parent or None, status)
        failed = event.res_op_failed_event
        if failed is not None:
            self.steps[failed.metadata.urn] = (failed.metadata.type, None, "failed")
        if (event.resource_pre_event or event.res_outputs_event or failed) and self.on_step is not None:
            self.on_step()
