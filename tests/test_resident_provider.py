"""The ``toolkit`` provider served by the client, on real engines.

One provider process serves every run of its client, so it must hold nothing
per run or per pool: 20 runs on 20 pools at once each get their own pool's
settings. A stack outlives its client's provider when the client dies: ``toolkit
gc`` destroys it with a provider of its own, resident in gc's process or started
by the engine as the ``pulumi-resource-toolkit`` plugin.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.clients import kill_holding_client
from tests.leaks import assert_nothing_left, run_stacks
from toolkit import gc, process, records, settings
from toolkit.futures import wait_for_teardowns
from toolkit.pools.registry import PoolRegistry, StorageConfig, WorkPool
from toolkit.providers.local_process import EXIT_NAME, PID_SUFFIX, LocalProcessProvider, running
from toolkit.providers.run_storage import RunStorageProvider

pytestmark = pytest.mark.engine

POOLS = 20


@pytest.fixture(autouse=True)
def _nothing_left():
    yield
    wait_for_teardowns()
    assert_nothing_left()


def _where_am_i() -> tuple[str, str]:
    return os.environ["POOL_NAME"], os.getcwd()


@pytest.fixture
def pools(tmp_path: Path):
    """``POOLS`` process pools, each with its own storage directory and its own environment."""
    registry, names = PoolRegistry(), []
    for number in range(POOLS):
        name = f"resident-{number}"
        storage = tmp_path / name
        storage.mkdir()
        pool = WorkPool(name=name, type="process", storage=StorageConfig(url=str(storage), mode="shared-prefix"))
        pool.base_job_template["variables"]["properties"]["env"]["default"] = {"POOL_NAME": name}
        registry.save(pool, overwrite=True)
        names.append(name)
    yield names
    for name in names:
        registry.delete(name)


def test_runs_on_twenty_pools_at_once_each_get_their_own_pool(pools: list[str], tmp_path: Path) -> None:
    calls = [process(pool=name)(_where_am_i) for name in pools]
    with ThreadPoolExecutor(max_workers=POOLS) as threads:
        futures = list(threads.map(lambda call: call.submit(), calls))
    results = [future.result(timeout=600) for future in futures]
    for name, (pool_name, cwd) in zip(pools, results):
        assert pool_name == name
        assert Path(cwd).parent == tmp_path / name
    wait_for_teardowns()
    assert not [future.teardown_error for future in futures if future.teardown_error]
    assert all(not any((tmp_path / name).iterdir()) for name in pools)  # each pool's run directory removed


@pytest.mark.parametrize("provider", ["resident in gc", "plugin"])
def test_gc_destroys_a_stack_whose_clients_provider_is_gone(tmp_path: Path, provider: str) -> None:
    run_id = kill_holding_client(tmp_path, "process")
    pid_text = (settings.home() / "work" / run_id / f"{EXIT_NAME}{PID_SUFFIX}").read_text().split()[0]
    assert running(int(pid_text))  # the job outlived its client and its client's provider
    env = {**os.environ, "TOOLKIT_RESIDENT_PROVIDER": "1" if provider == "resident in gc" else "0"}
    gc = subprocess.run([sys.executable, "-m", "toolkit", "gc"], env=env, capture_output=True, text=True, timeout=300)
    assert gc.returncode == 0, gc.stderr
    assert run_stacks() == []
    assert not running(int(pid_text))
    assert not (settings.home() / "work" / run_id).exists()


def test_gc_removes_run_storage_and_job_no_stack_recorded(tmp_path: Path) -> None:
    """A client killed between its provider creating a run's storage and job and the engine recording
    them: the run's record says whose it was, and gc removes both."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_id = "deadbeef0001"
    record = records.RunRecord(
        run_id=run_id, function="f", pool="local-process", target="process", stack=f"run-{run_id}",
        backend_url=settings.default_backend_url(), created=time.time(), owner_pid=dead.pid,
        owner=f"{socket.gethostname()}:{dead.pid}:0",
    )
    record.save()
    run_dir = settings.home() / "work" / run_id
    bundle = tmp_path / "bundle"
    bundle.write_bytes(b"bundle")
    RunStorageProvider().create({"url": str(run_dir), "bundle_path": str(bundle), "bundle_name": "bundle.tkb"})
    pid = int(LocalProcessProvider().create({"run_dir": str(run_dir), "argv": ["sleep", "600"], "env": {}}).id)
    assert gc.sweep_unrecorded_storage(set()) == [str(run_dir)]
    deadline = time.monotonic() + 10
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(pid)
    assert not run_dir.exists()
    assert records.load(run_id).torn_down
    assert gc.sweep_unrecorded_storage(set()) == []  # once
