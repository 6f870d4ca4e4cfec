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

from toolkit.bundles import dump_call, seal, unseal_result
from toolkit.runner import BUNDLE_NAME, RESULT_NAME, RUN_KEY_ENV, STORAGE_OPTIONS_ENV

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
    from toolkit.infra.base import FanOut, runner_command
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
