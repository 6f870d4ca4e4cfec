"""Faults: killed clients, a restarted Docker engine, crashes, full or read-only storage,
corrupted state, stale locks. Each ends in a clear error and nothing left behind
(after ``toolkit gc`` where the client itself died)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clients import kill_holding_client
from tests.docker_restart import restart_docker_engine
from tests.leaks import assert_nothing_left, run_stacks
from toolkit import docker, gc, process, records, settings
from toolkit.errors import JobFailedError, ProvisionError, TeardownError
from toolkit.futures import wait_for_teardowns
from toolkit.pools.registry import PoolRegistry, StorageConfig, WorkPool

pytestmark = pytest.mark.engine


@pytest.fixture(autouse=True)
def _nothing_left():
    yield
    wait_for_teardowns()
    assert_nothing_left()


def _segfault():
    import ctypes

    ctypes.string_at(0)


@pytest.mark.parametrize(
    ("decorator", "expected"),
    [pytest.param(process, r"killed by signal 11 \(SIGSEGV\)", id="process"),
     pytest.param(docker, r"segmentation fault, exit 139", id="docker", marks=pytest.mark.docker)],
)
def test_interpreter_crash_is_a_clear_error(decorator, expected):
    with pytest.raises(JobFailedError, match=expected):
        decorator(_segfault)()


@pytest.mark.parametrize("target", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_killed_client_leaves_a_stack_that_gc_destroys(tmp_path, target):
    run_id = kill_holding_client(tmp_path, target)
    assert run_stacks() == [f"run-{run_id}"]
    if target == "docker":
        assert subprocess.run(["docker", "inspect", f"toolkit-{run_id}"], capture_output=True).returncode == 0
    assert gc.find_leaks(older_than=3600).leaks == []  # too young for that filter
    leaks = gc.collect().leaks
    assert [(leak.stack, leak.destroyed) for leak in leaks] == [(f"run-{run_id}", True)]
    assert "is gone" in leaks[0].reason
    record = records.load(run_id)
    assert record.torn_down and record.state == "failed"
    assert not (settings.home() / "work" / run_id).exists()
    assert not list(Path(tempfile.gettempdir()).glob(f"toolkit-{run_id}-*")), "the dead client's Pulumi workspace"


def test_killed_client_with_retries_leaves_staged_files_that_gc_removes(tmp_path):
    """With ``retries`` the bundle stays staged until the run ends (a retry's ``up`` reads it again): a client
    killed meanwhile leaves it in ``$TOOLKIT_HOME/staging``, and gc removes it with the run's stack."""
    run_id = kill_holding_client(tmp_path, "process", retries=1)
    staging = settings.home() / "staging"
    assert sorted(path.name for path in staging.iterdir() if path.name.startswith(run_id)) == [f"{run_id}.tkb"]
    assert [leak.destroyed for leak in gc.collect().leaks] == [True]
    assert not any(path.name.startswith(run_id) for path in staging.iterdir())


MAP_UP_CLIENT = """
import time
import toolkit

@toolkit.docker
def sleeper(x):
    time.sleep(600)

print(sleeper.map(range(4), max_parallel=4).run_id, flush=True)
time.sleep(600)
"""


def _labelled_containers(run_id: str) -> list[str]:
    listed = subprocess.run(["docker", "ps", "-a", "--filter", f"label=toolkit-run={run_id}", "--format", "{{.Names}}"],
                            capture_output=True, text=True, timeout=60, check=True)
    return listed.stdout.split()


def _working_in_workspace(run_id: str) -> list[str]:
    """Processes whose working directory is one of the run's Pulumi workspaces (a CLI, the plugins it started)."""
    prefix = os.path.join(tempfile.gettempdir(), f"toolkit-{run_id}-")
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "cwd").startswith(prefix):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name}: {command[:120]}")
        except OSError:
            continue
    return found


@pytest.mark.docker
def test_a_client_killed_during_a_docker_maps_up_leaves_no_container_after_gc(tmp_path):
    """Killed as its first worker container appears, the client leaves the engine's docker provider running
    on (orphaned, for good) and creating the others after the state was last written: gc stops the provider,
    destroys the stack and removes the containers no state holds by their run's label, right away."""
    script = tmp_path / "client.py"
    script.write_text(MAP_UP_CLIENT)
    client = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    run_id = client.stdout.readline().strip() if client.stdout else ""
    deadline = time.monotonic() + 300
    while run_id and not _labelled_containers(run_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    client.send_signal(signal.SIGKILL)
    client.wait()
    assert run_id and _labelled_containers(run_id), "no worker container appeared during the map's up"
    collected = gc.collect()
    assert [(leak.stack, leak.destroyed, leak.error) for leak in collected.leaks] == [(f"run-{run_id}", True, None)]
    assert _labelled_containers(run_id) == [], collected
    assert _working_in_workspace(run_id) == []  # its orphaned docker provider too
    # and nothing else is left (the autouse check): stack, its lock and history directories, run directory


def _lock_dir(run_id: str) -> Path:
    state = Path(settings.default_backend_url().removeprefix("file://"))
    return state / ".pulumi" / "locks" / "organization" / settings.RUN_PROJECT / f"run-{run_id}"


def test_stack_locked_by_a_dead_process_is_unlocked_and_destroyed_by_gc(tmp_path):
    run_id = kill_holding_client(tmp_path, "process")
    # As if the client's `pulumi` had been killed mid-operation: its lock outlives it.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = {"pid": dead.pid, "username": "root", "hostname": socket.gethostname(), "timestamp": "2026-01-01T00:00:00Z"}
    _lock_dir(run_id).mkdir(parents=True, exist_ok=True)
    lock_file = _lock_dir(run_id) / f"{uuid.uuid4()}.json"
    lock_file.write_text(json.dumps(lock))
    Path(f"{lock_file}.attrs").write_text(json.dumps({"user.content_type": "text/plain; charset=utf-8"}))  # as the CLI
    leaks = gc.collect().leaks
    assert [(leak.stack, leak.destroyed, leak.error) for leak in leaks] == [(f"run-{run_id}", True, None)]
    assert not _lock_dir(run_id).exists()  # the lock, its metadata beside it and the emptied directory


def test_lock_of_a_live_process_is_respected(tmp_path):
    run_id = kill_holding_client(tmp_path, "process")
    lock = {"pid": os.getpid(), "username": "root", "hostname": socket.gethostname(), "timestamp": "2026-01-01T00:00:00Z"}
    lock_file = _lock_dir(run_id) / f"{uuid.uuid4()}.json"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock_file.write_text(json.dumps(lock))
    try:
        leaks = gc.collect().leaks
        assert len(leaks) == 1 and not leaks[0].destroyed
        assert leaks[0].error.startswith("ConcurrentUpdateError") and "currently locked" in leaks[0].error
        assert lock_file.exists()
    finally:
        lock_file.unlink()
    assert [leak.destroyed for leak in gc.collect().leaks] == [True]


@pytest.fixture
def tiny_mount(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _pool_on(name: str, url: Path) -> str:
    PoolRegistry().save(
        WorkPool(name=name, type="process", storage=StorageConfig(url=str(url), mode="shared-prefix")), overwrite=True
    )
    return name


def test_full_storage_is_a_clear_error(tiny_mount):
    pool = _pool_on("tiny-storage", tiny_mount)
    try:
        with pytest.raises(ProvisionError, match="No space left on device"):
            process(pool=pool)(len)(b"x" * 2 * 1024 * 1024)
        assert list(tiny_mount.iterdir()) == []
    finally:
        PoolRegistry().delete(pool)


def _fills_the_disk() -> bytes:
    return b"x" * 2 * 1024 * 1024


def test_a_result_the_disk_cannot_hold_is_no_result_not_a_corrupt_one(tiny_mount):
    """The runner's write of the result fails part-way (ENOSPC): no part of it may be left for the client to
    take as the result. Without a result the job died of its infrastructure, which ``retries`` covers."""
    pool = _pool_on("tiny-result", tiny_mount)
    try:
        with pytest.raises(JobFailedError, match="ended without a result, an infrastructure failure") as raised:
            process(pool=pool)(_fills_the_disk)()
        assert "No space left on device" in str(raised.value)
        wait_for_teardowns()
        assert list(tiny_mount.iterdir()) == []
    finally:
        PoolRegistry().delete(pool)


def test_a_claim_the_disk_cannot_hold_is_no_claim(tiny_mount):
    """A map worker claims an item on a full disk: the claim fails whole. An empty claim file (created, its
    worker's name not written) named no worker, so no one ran the item or released it for a retry and the
    map waited until its timeout (found by the soak). Once there is room, another worker takes the item."""
    from toolkit.job_storage import FsspecStorage

    (tiny_mount / "claims").mkdir()
    storage = FsspecStorage(str(tiny_mount), {})
    ballast = tiny_mount / "ballast"
    with ballast.open("wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    with pytest.raises(OSError, match="No space left on device"):
        storage.claim(2, "worker 0")
    assert sorted(path.name for path in (tiny_mount / "claims").iterdir()) == []
    ballast.unlink()
    assert storage.claim(2, "worker 1") and (tiny_mount / "claims" / "2").read_text() == "worker 1"
    assert not storage.claim(2, "worker 2")


def test_unwritable_storage_is_a_clear_error(tiny_mount):
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_mount)], check=True)
    pool = _pool_on("readonly-storage", tiny_mount)
    try:
        with pytest.raises(ProvisionError, match="Read-only file system"):
            process(pool=pool)(len)(b"x")
    finally:
        PoolRegistry().delete(pool)


def test_corrupted_state_file_is_a_clear_error_naming_it(tmp_path):
    release = tmp_path / "release"

    @process
    def waits(path):
        while not os.path.exists(path):
            time.sleep(0.05)
        return "ok"

    future = waits.submit(str(release))
    state = Path(settings.default_backend_url().removeprefix("file://"))
    stack_file = state / ".pulumi" / "stacks" / settings.RUN_PROJECT / f"run-{future.run_id}.json"
    deadline = time.monotonic() + 60
    while future.state != "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    good = stack_file.read_bytes()
    stack_file.write_text("{ this is not a checkpoint")
    release.touch()
    assert future.result(timeout=120) == "ok"  # the result does not depend on the state file
    assert future.wait_teardown(120)
    assert isinstance(future.teardown_error, TeardownError)
    assert str(stack_file) in str(future.teardown_error) and "toolkit gc" in str(future.teardown_error)
    stack_file.write_bytes(good)  # repaired, the leftover stack is collectable as usual
    assert [leak.destroyed for leak in gc.collect().leaks] == [True]


@pytest.mark.docker
@pytest.mark.slow
def test_docker_engine_restart_mid_run_is_a_clear_error():
    @docker
    def sleeper():
        print("started", flush=True)
        time.sleep(600)

    future = sleeper.submit()
    deadline = time.monotonic() + 120
    while "started" not in future.logs() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert future.state == "running"
    restart_docker_engine()
    with pytest.raises(JobFailedError, match="Docker engine"):
        future.result(timeout=180)
    assert future.wait_teardown(180), f"run {future.run_id} was not torn down within 180 s"
    if future.teardown_error is not None:  # the engine came back after the teardown's retries
        assert [leak.destroyed for leak in gc.collect().leaks] == [True]
    # the engine answers again, for this run's cleanup check and the rest of the suite
    assert subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


@pytest.mark.docker
@pytest.mark.slow
def test_a_retry_waits_for_the_docker_engine_that_killed_its_job_to_come_back(capfd, monkeypatch):
    """The engine's restart kills the job and is still going on when the fresh attempt is provisioned:
    that ``up`` fails, is tried again once the engine answers, and the call succeeds on its one retry."""
    monkeypatch.setenv("TOOLKIT_PROGRESS", "1")

    @docker(retries=1)
    def napper() -> str:
        print("nap starts", flush=True)
        time.sleep(4)
        return "rested"

    future = napper.submit()
    deadline = time.monotonic() + 120
    while "nap starts" not in future.logs() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert future.state == "running"
    restart_docker_engine(down_seconds=8)
    assert future.result(timeout=240) == "rested"
    assert future.attempts == 2
    assert "provisioning the fresh job failed" in capfd.readouterr().err
    assert future.wait_teardown(180) and future.teardown_error is None
