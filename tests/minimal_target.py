"""A target defined only in the tests: one module plus one registry row (``ROW``), and nothing else.

Its job is a local process, made of what the toolkit gives every target: the
run flow, the local family's primitives (run directory, secrets file) and the
``LocalProcess`` resource. ``tests/test_target_registry.py`` registers the row
through an entry point of the ``toolkit.targets`` group, as a third party would.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from pydantic import Field

from toolkit.infra.base import Target, placeholders
from toolkit.infra.flow import JobParts, MapForm, Platform
from toolkit.infra.registry import TargetRow
from toolkit.infra.resources import LocalProcess
from toolkit.infra.run import JobConfiguration, RunContext
from toolkit.infra.variables import JobVariables
from toolkit.infra.watch import JobWatcher
from toolkit.secretvalues import Secret
from toolkit.targets.local import LocalPlatform, plain_env, run_directory
from toolkit.targets.process import ProcessWatcher


class MinimalVariables(JobVariables):
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables of the process.")


class MinimalJob(JobConfiguration):
    env: dict[str, str | Secret] = {}


class MinimalWatcher(ProcessWatcher):
    """The minimal target's own watcher (a process's exit file and log)."""


class MinimalTarget(Target):
    name = "minimal"
    variables_model = MinimalVariables
    job_model = MinimalJob

    @classmethod
    def default_job_configuration(cls) -> dict[str, Any]:
        return placeholders("env")

    def per_run_storage_url(self, run_id: str) -> str:
        return run_directory(run_id)

    def platform(self, run: RunContext) -> Platform:
        return LocalPlatform(run, MapForm(run.fanout, indexed=False))

    def job(self, run: RunContext, parts: JobParts) -> dict[str, Any]:
        assert isinstance(run.job, MinimalJob)
        pids = []
        for worker, secrets_name in parts.secrets.items():
            number = int(worker)
            command = parts.form.command(run.storage_url, sys.executable, os.path.join(run.storage_url, secrets_name), number)
            name = "job" if run.fanout is None else f"worker-{number}"
            props = {"run_dir": run.storage_url, "argv": command, "env": plain_env(run.job.env), "cwd": None, "pid": None}
            if run.fanout is not None:
                props.update(log_name=f"{name}.log", exit_name=f"{name}.exit")
            pids.append(LocalProcess(name, props, opts=parts.options(delete_before_replace=True)).pid)
        return {"pids": pids, "run_dir": run.storage_url}

    def watch(self, run: RunContext, outputs: dict[str, Any]) -> JobWatcher | list[JobWatcher]:
        run_dir = Path(outputs["run_dir"])
        if run.fanout is None:
            return MinimalWatcher(run_dir, int(outputs["pids"][0]))
        return [
            MinimalWatcher(run_dir, int(pid), f"worker-{number}.log", f"worker-{number}.exit")
            for number, pid in enumerate(outputs["pids"])
        ]


ROW = TargetRow("tests.minimal_target:MinimalTarget", prefect_workers=("MinimalWorker",))
