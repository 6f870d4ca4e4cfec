"""The ``process`` target: the job is a local subprocess.

Bucket = a per-run directory (0700) under ``$TOOLKIT_HOME/work``; IAM = the
per-run signing key, which travels only as a Pulumi secret into the run's
0600 secrets file (``toolkit.targets.local``, never the process environment), and the
directory permissions; job = a dynamic resource whose create starts the
runner in its own session and whose delete kills the whole process group
(``toolkit.infra.resources.LocalProcess``). The process outlives
the provider that started it; a small ``sh`` wrapper records its exit status
in the run directory so a crash is still observable.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from pydantic import Field

from toolkit.infra.base import Target, placeholders
from toolkit.infra.fields import unset
from toolkit.infra.flow import JobParts, MapForm, Platform
from toolkit.infra.resources import LocalProcess
from toolkit.infra.run import JobConfiguration, RunContext
from toolkit.infra.synonyms import PREFECT_COMMON, prefect_retries, renamed
from toolkit.infra.variables import EnvironmentVariables
from toolkit.infra.watch import JobStatus, JobWatcher
from toolkit.providers.local_process import EXIT_NAME, LOG_NAME, running
from toolkit.secretvalues import Secret
from toolkit.targets.local import LocalPlatform, plain_env, run_directory


class ProcessVariables(EnvironmentVariables):
    """Job variables of the process target."""

    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables for the process.")
    python: str | None = unset("Interpreter that runs the job (default: the client's own interpreter).")
    working_dir: str | None = unset("Working directory of the process (default: the run directory).")
    command: list[str] | None = unset(
        "Command prefix run before the runner, e.g. ['nice', '-n', '10'] or ['taskset', '-c', '0'].",
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Labels recorded on the run (metadata only).")
    stream_output: bool = Field(default=True, description="Stream the process output to the caller.")


class ProcessJob(JobConfiguration):
    env: dict[str, str | Secret] = {}
    python: str | None = None
    working_dir: str | None = None
    command: list[str] = []
    labels: dict[str, str] = {}
    stream_output: bool = True


class ProcessWatcher(JobWatcher):
    """Reads the exit-status file and the log the wrapper writes in the run directory."""

    def __init__(self, run_dir: Path, pid: int, log_name: str = LOG_NAME, exit_name: str = EXIT_NAME) -> None:
        self._run_dir = run_dir
        self._pid = pid
        self._log_name = log_name
        self._exit_name = exit_name
        self._offset = 0

    def status(self) -> JobStatus:
        exit_file = self._run_dir / self._exit_name
        if exit_file.exists():
            code = int(exit_file.read_text().strip() or "1")
            if code == 0:
                return JobStatus(state="succeeded", exit_code=0)
            reason = f"the job process exited with status {code}"
            if code > 128:
                name = signal.Signals(code - 128).name if code - 128 in signal.Signals._value2member_map_ else "?"
                reason = f"the job process was killed by signal {code - 128} ({name})"
                if code - 128 == signal.SIGKILL:
                    reason += "; the kernel's OOM killer is a common cause"
                elif code - 128 == signal.SIGSEGV:
                    reason += "; the interpreter crashed (segmentation fault)"
            return JobStatus(state="failed", exit_code=code, reason=reason)
        if not running(self._pid):
            return JobStatus(state="failed", reason="the job process disappeared without recording an exit status")
        return JobStatus(state="running")

    def read_logs(self) -> str:
        log = self._run_dir / self._log_name
        if not log.exists():
            return ""
        with log.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        self._offset += len(data)
        return data.decode("utf-8", errors="replace")


class ProcessTarget(Target):
    """Run the function in a local subprocess."""

    name = "process"
    synonyms = {
        **PREFECT_COMMON,
        **prefect_retries(),
        "cwd": renamed("working_dir"),
        "interpreter": renamed("python"),
    }
    variables_model = ProcessVariables
    job_model = ProcessJob
    environment = "interpreter"

    @classmethod
    def default_job_configuration(cls) -> dict[str, Any]:
        return placeholders("env", "python", "working_dir", "command", "labels", "stream_output")

    def default_map_parallelism(self, count: int) -> int:
        """Workers on this machine: one per CPU unless max_parallel says otherwise."""
        return os.cpu_count() or 1

    def per_run_storage_url(self, run_id: str) -> str:
        return run_directory(run_id)

    def platform(self, run: RunContext) -> Platform:
        return LocalPlatform(run, MapForm(run.fanout, indexed=False))

    def job(self, run: RunContext, parts: JobParts) -> dict[str, Any]:
        """One process; for a map, ``fanout.parallelism`` worker processes that claim items.

        Workers, not a process per item: an interpreter's start and the function's
        load are paid once per worker, and the stack holds P resources, not N.
        """
        job = run.job
        assert isinstance(job, ProcessJob)
        python = run.python or job.python or sys.executable
        pids = []
        for worker, secrets_name in parts.secrets.items():
            number = int(worker)
            command = parts.form.command(run.storage_url, python, os.path.join(run.storage_url, secrets_name), number)
            props: dict[str, Any] = {
                "run_dir": run.storage_url,
                "argv": [*job.command, *command],
                "env": plain_env(job.env),
                "cwd": job.working_dir,
                "pid": None,
            }
            if run.fanout is not None:
                props.update(
                    cwd=job.working_dir or os.path.join(run.storage_url, f"worker-{number}"),
                    create_cwd=not job.working_dir,
                    log_name=f"worker-{number}.log",
                    exit_name=f"worker-{number}.exit",
                )
            # a new attempt replaces the process; the old one goes first (its pid must not be reused meanwhile)
            name = "job" if run.fanout is None else f"worker-{number}"
            pids.append(LocalProcess(name, props, opts=parts.options(delete_before_replace=True)).pid)
        if run.fanout is None:
            return {"pid": pids[0], "run_dir": run.storage_url}
        return {"pids": pids, "run_dir": run.storage_url}

    def watch(self, run: RunContext, outputs: dict[str, Any]) -> JobWatcher | list[JobWatcher]:
        run_dir = Path(outputs["run_dir"])
        if run.fanout is None:
            return ProcessWatcher(run_dir, int(outputs["pid"]))
        return [
            ProcessWatcher(run_dir, int(pid), f"worker-{number}.log", f"worker-{number}.exit")
            for number, pid in enumerate(outputs["pids"])
        ]
