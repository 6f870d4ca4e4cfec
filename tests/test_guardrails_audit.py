"""The audit trail: ``toolkit runs ls --all`` shows every client's finished and live runs from the backend."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.leaks import assert_nothing_left
from toolkit import gc, process
from toolkit.backend_store import BackendStore
from toolkit.futures import wait_for_teardowns
from toolkit.guardrails import history
from toolkit.guardrails.audit import audit_rows
from toolkit.pools.registry import PoolRegistry, WorkPool

pytestmark = pytest.mark.engine

POOL = "audited"


@pytest.fixture
def backend(tmp_path):
    url = f"file://{tmp_path / 'backend'}"
    PoolRegistry().save(WorkPool(name=POOL, type="process", backend_url=url), overwrite=True)
    yield url
    PoolRegistry().delete(POOL)


@process(pool=POOL)
def works(x: int) -> int:
    return x + 1


@process(pool=POOL)
def breaks() -> None:
    raise ValueError("this job fails")


@process(pool=POOL)
def holds() -> None:
    time.sleep(600)


def _toolkit(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def test_runs_ls_all_lists_completed_failed_and_cancelled_runs_then_gc_prunes_them(backend):
    assert works(1) == 2
    with pytest.raises(ValueError, match="this job fails"):
        breaks()
    held = holds.submit()
    deadline = time.monotonic() + 120
    while held.state != "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    live = [row for row in audit_rows([backend]) if row.run_id == held.run_id]
    assert [(row.outcome, row.pool, row.function) for row in live] == [("running", POOL, "holds")]
    assert held.cancel(timeout=120)
    wait_for_teardowns()

    rows = [row for row in json.loads(_toolkit("runs", "ls", "--all", "--json").stdout) if row["pool"] == POOL]
    assert [(row["function"], row["outcome"]) for row in rows] == [
        ("works", "completed"), ("breaks", "failed"), ("holds", "cancelled")
    ]
    for row in rows:
        assert row["resources"] >= 2 and row["duration"] > 0 and "@" in row["user"]
        assert row["backend_url"] == backend
    assert rows[1]["error"] == "ValueError raised by the function"  # the type only: messages are user data
    table = _toolkit("runs", "ls", "--all").stdout
    assert "cancelled" in table and "completed" in table and "failed" in table

    assert [pruned.history_entries for pruned in gc.prune_records(3600, urls=[backend])] == [0]  # recent: kept
    assert len(history.entries(BackendStore(backend))) == 3
    _toolkit("gc", "--history-older-than", "0s")
    assert history.entries(BackendStore(backend)) == []
    assert BackendStore(backend).names("history") == []
    assert_nothing_left(backend)  # the pool's own backend, where these runs' stacks lived


def test_history_prunes_whole_old_days_and_old_entries_of_the_cutoff_day(tmp_path):
    store = BackendStore(f"file://{tmp_path}")
    now = 1_800_000_000.0
    for run_id, age_days in (("old", 40), ("edge-old", 30.01), ("recent", 1)):
        finished = now - age_days * 86400
        history.record(store, history.RunEntry(run_id=run_id, pool="p", function="f", user="u@h", owner="h:1:1",
                                               resources=1, outcome="completed", created=finished - 5,
                                               finished=finished))
    assert history.prune(store, 30 * 86400, now=now) == 2
    assert [entry.run_id for entry in history.entries(store)] == ["recent"]
