"""The engine started ahead (``toolkit/ahead.py``) leaves nothing behind: not when no call comes within its
idle bound, not when its client is killed while the engine waits (``toolkit gc`` then removes it)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import toolkit
from tests.leaks import assert_nothing_left, run_stacks
from toolkit import ahead, gc, settings
from toolkit.engine import RunTag, list_run_stacks
from toolkit.futures import wait_for_teardowns

pytestmark = pytest.mark.engine


@pytest.fixture(autouse=True)
def _engine_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine started ahead is opt-in (``settings.engine_ahead``): these tests count and test it."""
    monkeypatch.setenv("TOOLKIT_ENGINE_AHEAD", "1")


@pytest.fixture(autouse=True)
def _nothing_left():
    yield
    wait_for_teardowns()
    assert_nothing_left()


def _waiting_engine() -> ahead.Standby:
    """Two calls on the process pool: the second starts the next call's engine; returned once it waits."""
    double = toolkit.process(abs)
    for _ in range(2):
        assert double(-2) == 2
    [standby] = ahead.waiting()
    assert standby.asked.wait(120), "the engine started ahead never asked for its program"
    return standby


def test_an_engine_no_call_takes_within_its_bound_is_removed(monkeypatch):
    monkeypatch.setattr(ahead, "IDLE_BOUND", 1.0)
    standby = _waiting_engine()
    assert standby.removed.wait(120)
    assert standby.state == "expired" and run_stacks() == []
    future = toolkit.process(abs).submit(-3)  # the next call starts its own engine
    assert future.result(timeout=300) == 3 and future.run_id != standby.run_id


def test_a_call_on_an_engine_started_ahead_is_tagged_as_its_own_for_gc():
    standby = _waiting_engine()
    assert gc.find_leaks().leaks == []  # a live client's engine is not a leak
    release = Path(f"/tmp/toolkit-ahead-{standby.run_id}")

    def waits(path: str) -> str:
        import os
        import time

        while not os.path.exists(path):
            time.sleep(0.05)
        return "ok"

    future = toolkit.process(waits).submit(str(release))
    assert future.run_id == standby.run_id
    try:
        deadline = time.monotonic() + 120
        while future.state != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        tags = dict(list_run_stacks(settings.default_backend_url()))[f"run-{standby.run_id}"]
        tag = RunTag.from_tags(tags)
        assert tag is not None and tag.function.endswith("waits")
    finally:
        release.touch()
    assert future.result(timeout=300) == "ok"
    release.unlink()


def test_a_client_that_exits_releases_its_engine_started_ahead(tmp_path):
    """The atexit hook (``wait_for_teardowns``) gives the waiting engine an empty program and removes its stack."""
    script = tmp_path / "client.py"
    exiting = KILLED_CLIENT.replace("print(standby.run_id, flush=True)\ntime.sleep(600)", "print(standby.run_id)")
    assert exiting != KILLED_CLIENT
    script.write_text(exiting)
    client = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert client.returncode == 0, client.stderr
    assert client.stdout.strip(), "the client never had an engine started ahead"
    assert run_stacks() == []


KILLED_CLIENT = textwrap.dedent(
    """
    import time
    import toolkit
    from toolkit import ahead

    double = toolkit.process(abs)
    for _ in range(2):
        future = double.submit(-2)
        assert future.result() == 2 and future.wait_teardown()
    [standby] = ahead.waiting()
    assert standby.asked.wait(120)
    print(standby.run_id, flush=True)
    time.sleep(600)
    """
)


def _lock_holders(run_id: str) -> list[int]:
    """Live processes holding a lock on the run's stack (the killed client's orphaned ``pulumi up``)."""
    state = Path(settings.default_backend_url().removeprefix("file://"))
    locks = state / ".pulumi" / "locks" / "organization" / settings.RUN_PROJECT / f"run-{run_id}"
    holders = []
    for path in locks.glob("*.json") if locks.is_dir() else []:
        pid = int(json.loads(path.read_text()).get("pid", 0))
        if pid and Path(f"/proc/{pid}").exists():
            holders.append(pid)
    return holders


def test_a_client_killed_while_its_engine_started_ahead_waits_leaves_what_gc_removes(tmp_path):
    script = tmp_path / "client.py"
    script.write_text(KILLED_CLIENT)
    client = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    run_id = client.stdout.readline().strip() if client.stdout else ""
    client.send_signal(signal.SIGKILL)
    client.wait()
    assert run_id, "the client never had an engine started ahead"
    assert run_stacks() == [f"run-{run_id}"]
    deadline = time.monotonic() + 120
    while _lock_holders(run_id) and time.monotonic() < deadline:  # its orphaned `pulumi up` ends on its own
        time.sleep(0.2)
    assert not _lock_holders(run_id)
    collected = gc.collect()
    assert collected.unreadable == [] and collected.stray_jobs == []
    leaks = collected.leaks
    assert [(leak.stack, leak.destroyed, leak.error) for leak in leaks] == [(f"run-{run_id}", True, None)]
    assert "is gone" in leaks[0].reason
