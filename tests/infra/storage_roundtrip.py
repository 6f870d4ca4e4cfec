"""A run's storage path end to end: bundle in, the real runner in a subprocess, result out.

The bundle is placed where the target's program puts it (the test passes an
``upload`` that writes exactly the object the program registered); the job
side is ``python -m toolkit.runner`` with the environment the job would get;
the client side reads the result as ``RunFuture`` does: fsspec on
``ctx.storage_url`` with ``ctx.storage_options``, then ``unseal_result``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec

from toolkit.bundles import BUNDLE_NAME, RESULT_NAME, RUN_KEY_ENV, STORAGE_OPTIONS_ENV, dump_call, seal, unseal_result
from toolkit.presign import Signer, sign_run
from toolkit.storage_urls import CONTROL_NAME, TABLE_NAME, URLS_ENV

ROOT = Path(__file__).resolve().parents[2]


def sealed_bundle(key: str) -> bytes:
    offset = 40

    def add(x: int) -> int:  # a closure: travels by value, like a user's function
        return x + offset

    return seal("bundle", dump_call(add, (2,), {}), key, function="add")


def run_job(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a job command with this interpreter as ``python3`` and only the given extra environment."""
    command = [sys.executable if part == "python3" else part for part in argv]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TOOLKIT_", "PULUMI_"))}
    return subprocess.run(
        command, env={**base, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True, timeout=120
    )


def collect(storage_url: str, storage_options: dict[str, Any], key: str) -> Any:
    fs, root = fsspec.core.url_to_fs(storage_url, **storage_options)
    return unseal_result(fs.cat_file(f"{root}/{RESULT_NAME}"), key, f"{storage_url}/{RESULT_NAME}")


def round_trip(
    storage_url: str,
    storage_options: dict[str, Any],
    upload: Callable[[bytes], None],
    key: str,
    argv: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Any:
    """Upload a bundle, run the runner (or ``argv``) against it, and collect the result."""
    upload(sealed_bundle(key))
    job_env = {STORAGE_OPTIONS_ENV: json.dumps(storage_options), **(env if env is not None else {RUN_KEY_ENV: key})}
    done = run_job(argv or ["python3", "-u", "-m", "toolkit.runner", "--storage", storage_url], job_env)
    assert done.returncode == 0, f"the job failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return collect(storage_url, storage_options, key)


def map_round_trip(
    storage_url: str,
    storage_options: dict[str, Any],
    key: str,
    tmp_path: Path,
    items: int = 12,
    workers: int = 3,
) -> list[Any]:
    """A map's storage path: item bundles uploaded by ``RunItems``' provider, ``workers`` runners claiming
    items at once, the results collected by the client's ``ItemResults``; returns them in order."""
    from toolkit.fanout.items import stage_items
    from toolkit.fanout.results import ItemResults
    from toolkit.infra.run import FanOut, runner_command
    from toolkit.providers.run_storage import RunItemsProvider

    def slow_add(x: int) -> tuple[int, int]:
        import os
        import time

        print(f"ran item {x}", flush=True)
        time.sleep(0.3)
        return x + 40, os.getpid()

    fs, root = fsspec.core.url_to_fs(storage_url, **storage_options)
    fs.pipe_file(f"{root}/{BUNDLE_NAME}", seal("bundle", dump_call(slow_add, (), {}), key, function="slow_add"))
    staged = tmp_path / "items"
    assert stage_items(slow_add, (range(items),), key, staged) == items
    RunItemsProvider().create(
        {"url": storage_url, "items_path": str(staged), "items_dir": "items", "options": storage_options}
    )
    fanout = FanOut(count=items, parallelism=workers, items_path=staged)
    argv = [sys.executable if part == "python3" else part for part in runner_command(storage_url, fanout=fanout)]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TOOLKIT_", "PULUMI_"))}
    env = {**base, "PYTHONPATH": str(ROOT), STORAGE_OPTIONS_ENV: json.dumps(storage_options), RUN_KEY_ENV: key}
    jobs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(workers)
    ]
    outputs = [job.communicate(timeout=120)[0] for job in jobs]
    assert all(job.returncode == 0 for job in jobs), outputs
    ran = sorted(line for output in outputs for line in output.splitlines() if line.startswith("ran item"))
    assert ran == sorted(f"ran item {x}" for x in range(items)), outputs  # once each: the claims held
    collected = ItemResults(storage_url, storage_options, items, key, tmp_path / "spool")
    assert collected.poll(), collected.counts()
    return [collected.value(index) for index in range(items)]


NO_STORAGE_DRIVERS = (
    "import runpy, sys\n"
    "for name in ('fsspec', 's3fs', 'gcsfs', 'adlfs', 'boto3', 'botocore', 'google', 'azure'):\n"
    "    sys.modules[name] = None  # importing any of them now fails\n"
    "runpy.run_module('toolkit.runner', run_name='__main__')\n"
)
"""``python -c`` this, then the runner's arguments: a job that cannot import a storage driver."""


def signed_job(args: list[str], signed_env: str, key: str) -> subprocess.Popen[str]:
    """Start the runner with ``args`` on the signed path only (no storage driver importable)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOOLKIT_", "PULUMI_", "AWS_", "AZURE_"))}
    env.update({"PYTHONPATH": str(ROOT), URLS_ENV: signed_env, RUN_KEY_ENV: key})
    return subprocess.Popen(
        [sys.executable, "-c", NO_STORAGE_DRIVERS, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )


def signed_round_trip(
    storage_url: str, storage_options: dict[str, Any], key: str, sign_options: dict[str, Any] | None = None
) -> Any:
    """A single call on the signed path: the client signs (with ``sign_options``, default the fsspec
    ones), the runner reads the bundle and writes the result through those requests alone, the client
    collects the result with fsspec."""
    fs, root = fsspec.core.url_to_fs(storage_url, **storage_options)
    fs.pipe_file(f"{root}/{BUNDLE_NAME}", sealed_bundle(key))
    signed = sign_run(storage_url, storage_options if sign_options is None else sign_options, key)
    assert signed is not None, f"no signer for {storage_url}"
    job = signed_job(["--storage", storage_url], signed.env, key)
    output = job.communicate(timeout=120)[0]
    assert job.returncode == 0, output
    return collect(storage_url, storage_options, key)


def race_for_one_item(storage_url: str, storage_options: dict[str, Any], key: str, tmp_path: Path) -> tuple[Any, str]:
    """Two workers on the signed path racing for a map's one item: it runs once, and its result comes
    back signed with its index. Returns the result and the winner's name (what its claim holds)."""
    from toolkit.fanout.items import stage_items
    from toolkit.fanout.results import ItemResults

    def add_forty(x: int) -> int:
        print(f"ran item {x}", flush=True)
        return x + 40

    fs, root = fsspec.core.url_to_fs(storage_url, **storage_options)
    fs.pipe_file(f"{root}/{BUNDLE_NAME}", seal("bundle", dump_call(add_forty, (), {}), key, function="add_forty"))
    assert stage_items(add_forty, ([2],), key, tmp_path / "items") == 1
    fs.put_file(str(tmp_path / "items" / "0.tkb"), f"{root}/items/0.tkb")
    signed = sign_run(storage_url, storage_options, key, items=1)
    assert signed is not None and signed.table is not None, f"no signed map for {storage_url}"
    fs.pipe_file(f"{root}/{TABLE_NAME}", signed.table)
    fs.pipe_file(f"{root}/{CONTROL_NAME}", json.dumps({"pending": [], "done": True}).encode())
    workers = [
        signed_job(["--storage", storage_url, "--items", "1", "--worker", name, "--await-items"], signed.env, key)
        for name in ("worker-a", "worker-b")
    ]
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    ran = [line for output in outputs for line in output.splitlines() if line.startswith("ran item")]
    assert ran == ["ran item 2"], outputs
    collected = ItemResults(storage_url, storage_options, 1, key, tmp_path / "spool")
    assert collected.poll(), collected.counts()
    return collected.value(0), fs.cat_file(f"{root}/claims/0").decode()


def racing_creates(create: Callable[[str, bytes], bool], rounds: int = 10) -> list[list[bool]]:
    """Two threads creating the same fresh object at once (a barrier between them), ``rounds`` times:
    ``create(name, body)`` is True when this thread made it. What each thread was told, per round."""
    import threading

    outcomes: list[list[bool]] = []
    for number in range(rounds):
        barrier = threading.Barrier(2)
        won: list[bool] = []

        def attempt(body: bytes, name: str = f"race/{number}", barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            won.append(create(name, body))

        threads = [threading.Thread(target=attempt, args=(body,)) for body in (b"a", b"b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        outcomes.append(won)
    return outcomes


def signed_create(signer: Signer) -> Callable[[str, bytes], bool]:
    """``create`` for ``racing_creates`` through the signer's conditional create (a client per call)."""
    from toolkit.storage_urls import EXISTS, Http

    def create(name: str, body: bytes) -> bool:
        status, answer = Http().send(signer.sign("PUT", name, 600, create_only=True), body)
        assert status in (200, 201, *EXISTS), (status, answer)
        return status in (200, 201)

    return create
