"""``max_concurrent_runs``: claim-then-check slots in the pool's backend, across threads and processes.

The unit tests race real threads on a real (file) backend store; the engine
test runs 5 submissions from 2 client processes against a limit of 2 and
watches the backend's run stacks while they run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.leaks import assert_nothing_left
from toolkit import process, settings
from toolkit.backend_store import BackendStore
from toolkit.engine import list_run_stacks
from toolkit.errors import ConfigError, PoolBusyError
from toolkit.guardrails.slots import Slot, SlotMarker, occupancy, stale_markers
from toolkit.pools.registry import PoolRegistry, WorkPool
from toolkit.workspace import owner_tag


def _marker(run_id: str, pool: str = "limited", owner: str | None = None, ttl: float = 3600) -> SlotMarker:
    import os

    return SlotMarker(run_id=run_id, pool=pool, function="f", owner=owner or owner_tag(os.getpid()),
                      created=time.time(), ttl=ttl)


def test_racing_threads_never_hold_more_slots_than_the_limit(tmp_path):
    store = BackendStore(f"file://{tmp_path}")
    limit, holders, peak, lock = 2, set(), [0], threading.Lock()

    def run(n: int) -> None:
        slot = Slot(store, limit, _marker(f"run{n}"))
        slot.acquire(block=True, cancelled=lambda: False, say=lambda _m: None)
        with lock:
            holders.add(n)
            peak[0] = max(peak[0], len(holders))
        time.sleep(0.05)
        with lock:
            holders.discard(n)
        slot.release()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert 1 <= peak[0] <= limit
    assert store.names("slots/limited") == []  # every marker released


def test_markers_of_dead_owners_and_expired_ttls_do_not_count(tmp_path):
    store = BackendStore(f"file://{tmp_path}")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    store.write("slots/limited/gone.json", json.loads(_marker("gone", owner=owner_tag(int(dead.stdout))).model_dump_json()))
    store.write("slots/limited/old.json", json.loads(_marker("old", ttl=0.0).model_dump_json()))
    (tmp_path / ".toolkit/slots/limited/half.json").write_text('{"run_id": "ha')  # being written: counts
    assert occupancy(store, "limited").others == 1
    assert sorted(stale_markers(store)) == ["slots/limited/gone.json", "slots/limited/old.json"]


def test_block_false_fails_at_once_naming_the_pool_and_its_count(tmp_path, monkeypatch):
    backend = f"file://{tmp_path}"
    PoolRegistry().save(WorkPool(name="limited-one", type="process", backend_url=backend, max_concurrent_runs=1),
                        overwrite=True)
    store = BackendStore(backend)
    holder = _marker("holder", pool="limited-one")
    holder.admitted = True
    store.write("slots/limited-one/holder.json", json.loads(holder.model_dump_json()))

    @process(pool="limited-one", block=False)
    def f() -> int:
        return 1

    staged = settings.home() / "staging"
    before = set(staged.glob("*")) if staged.exists() else set()
    with pytest.raises(PoolBusyError, match=r"pool 'limited-one' is at its limit of 1 concurrent runs \(1/1 running\)"):
        f.submit()
    assert (set(staged.glob("*")) if staged.exists() else set()) == before  # its bundle was discarded
    assert store.names("slots/limited-one") == ["holder.json"]  # no claim left behind
    PoolRegistry().delete("limited-one")


def test_a_limit_needs_a_self_managed_backend():
    PoolRegistry().save(WorkPool(name="cloud-limited", type="process", backend_url="https://api.pulumi.com",
                                 max_concurrent_runs=3), overwrite=True)

    @process(pool="cloud-limited")
    def f() -> int:
        return 1

    with pytest.raises(ConfigError, match="self-managed backend"):
        f.preview()
    PoolRegistry().delete("cloud-limited")


CLIENT = textwrap.dedent(
    """
    import json, sys, time
    from toolkit import process

    @process(pool="two-at-a-time")
    def hold(x):
        time.sleep(1.5)
        return x * 10

    first, count = int(sys.argv[1]), int(sys.argv[2])
    futures = [hold.submit(x) for x in range(first, first + count)]
    print(json.dumps([f.result(timeout=600) for f in futures]))
    """
)


def _stack_files(backend_dir: Path) -> set[str]:
    directory = backend_dir / ".pulumi" / "stacks" / settings.RUN_PROJECT
    return {path.name for path in directory.glob("run-*.json")} if directory.exists() else set()


@pytest.mark.engine
@pytest.mark.slow
def test_five_submits_from_two_processes_never_have_more_than_two_stacks_up(tmp_path):
    backend_dir = tmp_path / "backend"
    backend = f"file://{backend_dir}"
    PoolRegistry().save(WorkPool(name="two-at-a-time", type="process", backend_url=backend, max_concurrent_runs=2),
                        overwrite=True)
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    env = {**__import__("os").environ, "TOOLKIT_PROGRESS": "1"}
    clients = [
        subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # Ctrl-C works in CI too
        for args in (("0", "3"), ("3", "2"))
    ]
    peak, seen, checks, outputs = 0, set(), [], []
    try:
        while any(client.poll() is None for client in clients):
            stacks = _stack_files(backend_dir)  # the backend's own record of which run stacks exist
            peak = max(peak, len(stacks))
            seen |= stacks
            if len(checks) < 3 and len(stacks) == 2:
                checks.append(len(list_run_stacks(backend)))  # and the Pulumi CLI's listing agrees
            time.sleep(0.02)
        outputs = [client.communicate(timeout=60) for client in clients]
    finally:  # a failure above must not leave the clients' runs going on into the next tests
        for client in clients:
            if client.poll() is None:
                client.send_signal(signal.SIGINT)  # Ctrl-C: each client cancels and tears its runs down
                client.communicate(timeout=120)
    results, errors = [], ""
    for client, (out, err) in zip(clients, outputs, strict=True):
        errors += err
        assert client.returncode == 0, err[-3000:]
        results += json.loads(out.strip().splitlines()[-1])
    assert results == [x * 10 for x in range(5)]
    assert len(seen) == 5 and peak == 2
    assert checks and max(checks) <= 2
    assert "waiting for a slot on pool two-at-a-time (2/2 running)" in errors
    assert BackendStore(backend).names("slots/two-at-a-time") == []
    assert list_run_stacks(backend) == []
    PoolRegistry().delete("two-at-a-time")
    assert_nothing_left()
