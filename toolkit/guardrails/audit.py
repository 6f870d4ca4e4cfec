"""``toolkit runs ls --all``: every client's runs, from the backends rather than this machine's records.

Live runs are the run stacks in each backend (their tags say who, which pool
and function, since when); finished runs are the audit trail (``history``).
"""

from __future__ import annotations

import time

from pydantic import BaseModel

from toolkit.backend_store import BackendStore
from toolkit.engine import RunTag, list_run_stacks
from toolkit.errors import ConfigError
from toolkit.guardrails import history


class AuditRow(BaseModel):
    run_id: str
    user: str
    """``user@host`` for finished runs; the owner process (``host:pid:start``) for live ones."""
    pool: str
    function: str
    resources: int | None
    outcome: str
    """running (its stack is up), completed, failed, cancelled or rejected."""
    error: str | None = None
    created: float
    duration: float | None
    backend_url: str
    attempts: int = 1
    """Attempts of a finished run (``toolkit.retries``); 1 for live runs."""


def audit_rows(urls: list[str]) -> list[AuditRow]:
    """Live and finished runs of every backend in ``urls`` (``gc.backend_urls()``: every backend gc knows),
    oldest first."""
    rows: list[AuditRow] = []
    now = time.time()
    for url in urls:
        finished: set[str] = set()
        try:
            for entry in history.entries(BackendStore(url)):
                finished.add(entry.run_id)
                rows.append(AuditRow(**entry.model_dump(exclude={"owner", "target", "finished"}),
                                     duration=entry.duration, backend_url=url))
        except ConfigError:
            pass  # a Pulumi Cloud backend: live stacks only
        for stack, tags in list_run_stacks(url):
            run = RunTag.from_tags(tags)
            run_id = stack.removeprefix("run-")
            if run is None or run_id in finished:
                continue  # not tagged yet (being created), or its teardown is ending
            rows.append(AuditRow(run_id=run_id, user=run.owner, pool=run.pool, function=run.function, resources=None,
                                 outcome="running", created=run.created, duration=now - run.created, backend_url=url))
    return sorted(rows, key=lambda row: row.created)
