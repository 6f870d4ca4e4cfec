"""The process target end to end, through real stacks on the local file backend."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path

import pytest

import toolkit
from tests.leaks import assert_nothing_left, run_stacks
from toolkit import process, records
from toolkit.errors import ConfigError, JobFailedError, RunCancelledError, RunTimeoutError
from toolkit.futures import wait_for_teardowns

pytestmark = pytest.mark.engine


@dataclasses.dataclass
class Score:
    name: str
    value: float


@process
def echo(value):
    return value


@pytest.fixture(autouse=True)
def _nothing_left_after_each_test():
    yield
    wait_for_teardowns()
    assert_nothing_left()


def _settle(future: toolkit.RunFuture) -> None:
    assert future.wait_teardown(120), f"run {future.run_id} was not torn down"


def test_values_of_several_kinds_round_trip():
    offset = 10
    closure = process(lambda x: x + offset)
    sent = os.urandom(50 * 1024 * 1024)
    futures = {
        "number": echo.submit(3.5),
        "dataclass": echo.submit(Score("loss", 0.25)),
        "closure": closure.submit(5),
        "big bytes": echo.submit(sent),
    }
    assert futures["number"].result() == 3.5
    assert futures["dataclass"].result() == Score("loss", 0.25)
    assert futures["closure"].result() == 15
    big = futures["big bytes"].result()
    assert len(big) == len(sent) and hashlib.sha256(big).digest() == hashlib.sha256(sent).digest()
    for future in futures.values():
        _settle(future)


def test_remote_value_error_reraises_with_the_remote_traceback():
    @process
    def fail(x):
        raise ValueError(f"x must be positive, got {x}")

    future = fail.submit(-1)
    with pytest.raises(ValueError, match="x must be positive, got -1") as info:
        future.result()
    assert "in fail" in info.value.remote_traceback
    assert "ValueError: x must be positive, got -1" in info.value.remote_traceback
    assert future.state == "failed"
    _settle(future)


def test_misspelled_variable_fails_before_any_stack_or_directory(toolkit_home):
    before = set(toolkit_home.rglob("*"))
    with pytest.raises(ConfigError, match="Did you mean 'env'"):
        echo.with_options(evn={"A": "1"}).submit(1)
    assert set(toolkit_home.rglob("*")) == before  # no stack file, run directory, bundle or record
    assert run_stacks() == []


def test_eight_concurrent_submits_all_succeed_and_leave_nothing():
    @process
    def square(x):
        time.sleep(0.2)
        return x * x

    futures = [square.submit(x) for x in range(8)]
    assert [f.result(timeout=300) for f in futures] == [x * x for x in range(8)]
    for future in futures:
        _settle(future)
    assert {f.state for f in futures} == {"completed"}


def test_job_output_streams_into_logs():
    @process
    def chatty():
        for i in range(3):
            print(f"line {i}", flush=True)
        return "done"

    future = chatty.submit()
    assert future.result() == "done"
    _settle(future)
    assert future.logs() == "line 0\nline 1\nline 2\n"
    assert records.load(future.run_id).logs() == future.logs()


def test_crashing_interpreter_is_a_clear_error():
    @process
    def crash():
        os._exit(3)

    future = crash.submit()
    with pytest.raises(JobFailedError, match="exited with status 3"):
        future.result()
    _settle(future)


def test_timeout_cancels_and_destroys():
    @process(timeout=2)
    def forever():
        time.sleep(600)

    future = forever.submit()
    with pytest.raises(RunTimeoutError, match="timeout of 2s"):
        future.result(timeout=120)
    _settle(future)


def test_cancel_mid_run_kills_the_job_and_destroys_the_stack(tmp_path):
    marker = tmp_path / "pid"

    @process
    def long_running(path):
        Path(path).write_text(str(os.getpid()))
        time.sleep(600)

    future = long_running.submit(str(marker))
    try:
        deadline = time.monotonic() + 60
        while not (marker.exists() and future.state == "running") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert future.state == "running"
        job_pid = int(marker.read_text())
    finally:
        assert future.cancel(timeout=120) is True
    with pytest.raises(RunCancelledError):
        future.result()
    assert future.state == "cancelled"
    with pytest.raises(ProcessLookupError):
        os.kill(job_pid, 0)


def test_submitter_context_waits_for_teardown():
    with toolkit.Submitter("local-process") as submitter:
        futures = [submitter.submit(pow, 2, n, job_variables={"env": {"N": str(n)}}) for n in range(3)]
    assert [f.result() for f in futures] == [1, 2, 4]
    assert all(f.wait_teardown(0) for f in futures)


def test_preview_leaves_nothing_behind_and_masks_secrets():
    plan = echo.with_options(env={"TOKEN": toolkit.secret("hunter2"), "MODE": "x"}).preview(1)
    assert [c.op for c in plan.changes].count("create") >= 2
    job = next(c for c in plan.changes if c.name == "job")
    assert job.inputs["env"] == {"MODE": "x"}  # the secret goes to the job's 0600 file, not its environment
    storage = next(c for c in plan.changes if c.name == "run-directory")
    assert storage.inputs["secrets"] == {"TOKEN": "[secret]", "TOOLKIT_RUN_KEY": "[secret]"}
    assert "hunter2" not in str(plan) and "hunter2" not in plan.to_json()
    assert "OP" in str(plan) and "toolkit:index:LocalProcess" in str(plan)
