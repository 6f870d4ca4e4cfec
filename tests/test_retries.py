"""Infrastructure retries of single calls (``retries=``) on real jobs: a killed job runs again, a
user's exception never does, nothing is left behind. Docker and process here; the real Kubernetes
cluster in ``tests/k8s``; the policy and classification alone at the bottom."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.leaks import assert_nothing_left
from toolkit import docker, process, records, settings
from toolkit.backend_store import BackendStore
from toolkit.errors import ConfigError, JobFailedError, RunCancelledError
from toolkit.futures import RunFuture, wait_for_teardowns
from toolkit.guardrails import history
from toolkit.infra.watch import JobStatus
from toolkit.retries import RetryPolicy, infrastructure_failure
from toolkit.templating import carry_into_native

DECORATORS = {"process": process, "docker": docker}
KILLED = {"process": r"killed by signal 9 \(SIGKILL\)", "docker": r"killed \(SIGKILL, exit 137\)"}


def napper(seconds: float) -> str:
    print("nap starts", flush=True)
    time.sleep(seconds)
    return "rested"


def failing() -> None:
    print("failing starts", flush=True)
    raise ValueError("the function's own error")


def _wait_until_started(future: RunFuture, starts: int = 1, timeout: float = 120) -> None:
    """Until the job has printed its ``starts``-th start line (so it is running the function)."""
    deadline = time.monotonic() + timeout
    while future.logs().count("nap starts") < starts:
        assert not future.done(), f"the run ended before its job started: {future.exception()!r}"
        assert time.monotonic() < deadline, f"no job start after {timeout}s ({future.state})"
        time.sleep(0.05)


def _runner_pids(run_id: str) -> list[int]:
    """The job's runner process (process target): the interpreter whose command line names the run directory."""
    run_dir = str(settings.home() / "work" / run_id)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"toolkit.runner" in argv and run_dir.encode() in argv and argv[0] != b"sh":
            found.append(int(entry.name))
    return found


def _kill_job(target: str, run_id: str) -> None:
    """Kill the running job from outside, as the infrastructure would."""
    if target == "docker":
        subprocess.run(["docker", "kill", f"toolkit-{run_id}"], check=True, capture_output=True)
        return
    pids = _runner_pids(run_id)
    assert len(pids) == 1, f"expected one runner process for run {run_id}, found {pids}"
    os.kill(pids[0], signal.SIGKILL)


@pytest.fixture(autouse=True)
def _nothing_left(request):
    yield
    if "engine" in request.keywords:
        wait_for_teardowns()
        assert_nothing_left()


def _history_entry(run_id: str) -> history.RunEntry:
    entries = history.entries(BackendStore(settings.default_backend_url()))
    return next(entry for entry in entries if entry.run_id == run_id)


@pytest.mark.engine
@pytest.mark.parametrize("target", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_a_killed_job_runs_again_and_the_call_succeeds(target, capfd, monkeypatch):
    monkeypatch.setenv("TOOLKIT_PROGRESS", "1")
    future = DECORATORS[target](retries=1)(napper).submit(3)
    _wait_until_started(future)
    _kill_job(target, future.run_id)
    assert future.result(timeout=180) == "rested"
    assert future.attempts == 2
    future.wait_teardown()
    record = records.load(future.run_id)
    assert record.attempts == 2 and record.state == "completed" and record.torn_down
    assert len(record.retried_after) == 1
    assert _history_entry(future.run_id).attempts == 2
    assert future.logs().count("nap starts") == 2
    err = capfd.readouterr().err
    assert "attempt 2/2: retrying after" in err
    assert "SIGKILL" in err


@pytest.mark.engine
@pytest.mark.parametrize("target", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_a_killed_job_without_retries_fails_naming_the_reason_and_retries(target):
    future = DECORATORS[target](napper).submit(30)
    _wait_until_started(future)
    _kill_job(target, future.run_id)
    with pytest.raises(JobFailedError, match=KILLED[target]) as raised:
        future.result(timeout=120)
    assert "infrastructure failure; pass retries=N" in str(raised.value)
    assert future.attempts == 1


@pytest.mark.engine
def test_a_killed_job_that_uses_up_its_retries_names_every_attempt():
    future = process(retries=1)(napper).submit(30)
    _wait_until_started(future)
    _kill_job("process", future.run_id)
    _wait_until_started(future, starts=2)
    _kill_job("process", future.run_id)
    with pytest.raises(JobFailedError, match=r"failed on all 2 attempts; attempt 2: .*SIGKILL.*\(attempt 1: .*SIGKILL"):
        future.result(timeout=120)
    future.wait_teardown()
    assert records.load(future.run_id).attempts == 2


@pytest.mark.engine
def test_an_exception_from_the_function_is_never_retried():
    future = process(retries=2)(failing).submit()
    with pytest.raises(ValueError, match="the function's own error"):
        future.result(timeout=120)
    future.wait_teardown()
    assert future.attempts == 1
    assert future.logs().count("failing starts") == 1
    assert records.load(future.run_id).attempts == 1


@pytest.mark.engine
def test_cancel_during_a_retry_tears_everything_down():
    future = process(retries=3)(napper).submit(30)
    _wait_until_started(future)
    _kill_job("process", future.run_id)
    _wait_until_started(future, starts=2)
    assert future.attempts == 2
    assert future.cancel(timeout=120)
    with pytest.raises(RunCancelledError):
        future.result()
    assert _runner_pids(future.run_id) == []


# -- bad values, before anything exists ---------------------------------------------------------


@pytest.mark.parametrize("value", [-1, "2", 1.5, True])
def test_a_bad_retries_value_is_refused_before_provisioning(value):
    with pytest.raises(ConfigError, match="retries"):
        process(retries=value)(napper).submit(0)
    assert not (settings.home() / "staging").exists() or not list((settings.home() / "staging").iterdir())


# -- the policy and the classification ------------------------------------------------------------


def test_only_a_job_without_a_result_is_an_infrastructure_failure():
    killed = JobStatus(state="failed", exit_code=137, reason="the container was killed")
    assert infrastructure_failure(killed, has_result=False) == "the container was killed"
    assert infrastructure_failure(killed, has_result=True) is None  # the result is what counts
    assert infrastructure_failure(JobStatus(state="succeeded", exit_code=0), has_result=True) is None
    assert infrastructure_failure(JobStatus(state="running"), has_result=False) is None
    assert "status 3" in infrastructure_failure(JobStatus(state="failed", exit_code=3), has_result=False)


def test_the_policy_counts_attempts_and_stops_at_retries():
    policy = RetryPolicy(retries=2)
    assert policy.attempts == 3 and policy.engine_retries
    assert not policy.retry(None)  # a result (or a user's exception) never starts another attempt
    assert policy.retry("pod evicted") and policy.attempt == 2
    assert policy.announcement() == "attempt 2/3: retrying after pod evicted"
    assert policy.retry("node lost") and policy.attempt == 3
    assert not policy.retry("killed again") and policy.attempt == 3
    error = policy.failed_error("run x (f)", "killed again")
    assert "failed on all 3 attempts" in str(error) and "attempt 1: pod evicted; attempt 2: node lost" in str(error)
    native = RetryPolicy.from_variables({"retries": 2, "backoff_limit": 2}, native="backoff_limit")
    assert native.retries == 2 and not native.engine_retries and not native.retry("evicted")


def test_retries_carry_into_a_native_variable_and_conflicts_are_errors():
    assert carry_into_native({"retries": 0, "backoff_limit": 4}, "backoff_limit", "p") is None
    assert carry_into_native({"retries": 2, "backoff_limit": 0}, "backoff_limit", "p") == {"backoff_limit": 2}
    with pytest.raises(ConfigError, match="retries=2 and backoff_limit=4 both set"):
        carry_into_native({"retries": 2, "backoff_limit": 4}, "backoff_limit", "p")


def test_prefects_names_for_retries_lead_to_retries():
    from toolkit.infra.synonyms import translate
    from toolkit.targets.kubernetes.target import KubernetesTarget
    from toolkit.targets.process import ProcessTarget

    with pytest.raises(ConfigError, match="Did you mean 'retries'"):
        process(backoff_limit=2)(napper).submit(0)
    assert translate(ProcessTarget.synonyms, {"max_retries": 2}) == {"retries": 2}
    assert translate(KubernetesTarget.synonyms, {"backoff_limit": 2}) == {"backoff_limit": 2}  # its own, kept
