"""The ``process`` target's job resource: a local subprocess in its own session.

Create starts the runner through a small ``sh`` wrapper that appends its output
to the run directory's log and records its exit status there atomically, so a
crash is observable after the provider that started it has exited. Delete
kills the whole process group, SIGTERM first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pulumi.dynamic import CreateResult, ResourceProvider

LOG_NAME = "job.log"
EXIT_NAME = "exit_code"
PID_SUFFIX = ".pid"
"""``<exit name>.pid`` in the run directory: the job's pid and start time, for run storage's delete."""
_WRAPPER = '"$@" >>"$TOOLKIT_LOG" 2>&1; echo $? >"$TOOLKIT_EXIT.tmp" && mv "$TOOLKIT_EXIT.tmp" "$TOOLKIT_EXIT"'
"""Runs the command with output to the log, then records its exit status atomically."""


def process_env(extra: dict[str, str]) -> dict[str, str]:
    """The job's environment: the caller's, minus the toolkit's and Pulumi's own settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "TOOLKIT_"))}
    return {**base, **extra}


def exists(pid: int) -> bool:
    """True until ``pid`` is reaped (a zombie still exists)."""
    return _answers_signal_zero(os.kill, pid)


def group_exists(pgid: int) -> bool:
    """True while any process of group ``pgid`` exists (a zombie not yet reaped included)."""
    return _answers_signal_zero(os.killpg, pgid)


def _answers_signal_zero(send: Callable[[int, int], None], target: int) -> bool:
    """Whether ``send(target, 0)`` finds its target: one owned by another user refuses it, but exists."""
    try:
        send(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(pid: int) -> bool:
    """True while ``pid`` runs: a zombie -- exited, not yet reaped by the process that adopted it
    when the provider that started it exited -- has stopped running."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here
        return exists(pid)


def start_time(pid: int) -> str:
    """Start time of ``pid`` in clock ticks since boot ('' if unknown): tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def record_pid(path: str, pid: int) -> None:
    """Write ``pid`` and its start time to ``path``."""
    with open(path, "w") as handle:
        handle.write(f"{pid} {start_time(pid)}\n")


def stop_recorded(directory: str) -> None:
    """Kill the process group of every job recorded in ``directory`` (``record_pid``) that still runs.

    A job whose create the engine never heard of (the resident provider's
    client killed between starting it and answering) is in no stack's state;
    its run directory is, and deleting that stops it here.
    """
    for name in os.listdir(directory):
        if not name.endswith(PID_SUFFIX):
            continue
        try:
            with open(os.path.join(directory, name)) as handle:
                pid_text, _, started = handle.read().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if started and start_time(pid) == started and running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


class LocalProcessProvider(ResourceProvider):
    """Starts the job process on create; kills its process group on delete."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        run_dir = Path(props["run_dir"])
        log, exit_status = run_dir / (props.get("log_name") or LOG_NAME), run_dir / (props.get("exit_name") or EXIT_NAME)
        # A new attempt of the run (toolkit.retries) starts clean: the last one's exit status would
        # read as this one's, and its output was forwarded already.
        exit_status.unlink(missing_ok=True)
        log.unlink(missing_ok=True)
        env = process_env(props["env"])
        env["TOOLKIT_LOG"] = str(log)
        env["TOOLKIT_EXIT"] = str(exit_status)
        if props.get("create_cwd"):  # a map's worker: its own working directory inside the run's
            os.makedirs(props["cwd"], mode=0o700, exist_ok=True)
        process = subprocess.Popen(
            ["sh", "-c", _WRAPPER, "sh", *props["argv"]],
            cwd=props.get("cwd") or str(run_dir),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # survives the provider; Ctrl-C at the client doesn't reach it
        )
        record_pid(f"{exit_status}{PID_SUFFIX}", process.pid)
        # Reaped as soon as it exits: served resident, this process is its parent for as long as the
        # client lives, and a zombie would keep its pid (and `delete`'s wait) alive.
        threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()
        outs = {"pid": process.pid, "run_dir": str(run_dir), "argv": props["argv"]}
        return CreateResult(id_=str(process.pid), outs=outs)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        pid = int(props["pid"])
        if not running(pid):
            # The job ended (usually: a run's teardown). Stop what it may have left in its group;
            # waiting for its adoptive parent to reap it would only delay the teardown.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            return
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if not group_exists(pid):  # the job and its children, not only the wrapper: served
                    return  # resident, the wrapper is reaped at once, before its child is gone
                time.sleep(0.05)
