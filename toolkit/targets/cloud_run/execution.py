"""One execution of the run's Cloud Run job: started on create, cancelled on delete; and its status.

A dynamic resource over the Cloud Run Admin API whose create runs the job and
whose delete cancels the execution, so ``pulumi destroy`` stops a running job
before its resources go. ``execution_status`` maps an execution (and, on
failure, its tasks) to a ``JobStatus``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider

from toolkit.infra.rest import CloudApiError, RestClient, endpoint, google_session
from toolkit.infra.watch import JobStatus

RUN_ENDPOINT_ENV = "TOOLKIT_CLOUD_RUN_ENDPOINT"
RUN_ENDPOINT = "https://run.googleapis.com"
STATUS_POLL_SECONDS = 2.0
"""Minimum seconds between two execution reads (Cloud Run Admin API read quota)."""
CANCEL_WAIT_SECONDS = 300.0


def run_api() -> RestClient:
    base = endpoint(RUN_ENDPOINT_ENV, RUN_ENDPOINT)
    return RestClient(base, google_session())


def cancel_execution(client: RestClient, execution: str, poll_seconds: float, wait_seconds: float) -> None:
    """Cancel ``execution`` and wait until Cloud Run reports it finished (or gone)."""
    try:
        if client.call("GET", f"/v2/{execution}").get("completionTime"):
            return
        client.call("POST", f"/v2/{execution}:cancel", {})
    except CloudApiError as exc:
        if exc.status == 404 or exc.code == "FAILED_PRECONDITION":
            return  # gone, or finished between the two calls
        raise
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        try:
            if client.call("GET", f"/v2/{execution}").get("completionTime"):
                return
        except CloudApiError as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(poll_seconds)
    raise CloudApiError(
        "POST",
        f"/v2/{execution}:cancel",
        504,
        "DEADLINE_EXCEEDED",
        f"the execution was still running {wait_seconds:g}s after it was cancelled; "
        "cancel it in the console, then run `toolkit gc`",
    )


class _ExecutionProvider(ResourceProvider):
    """Create runs the job (``jobs.run``); delete cancels the execution and waits for it to stop."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        operation = run_api().call("POST", f"/v2/{props['job']}:run", {})
        execution = (operation.get("metadata") or {}).get("name")
        if not execution:
            raise CloudApiError(
                "POST", f"/v2/{props['job']}:run", 200, "", f"the run operation named no execution: {operation!r}"
            )
        return CreateResult(id_=execution, outs={**props, "execution": execution})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        cancel_execution(run_api(), id_, float(props["poll_seconds"]), float(props["cancel_wait_seconds"]))


class CloudRunExecution(Resource, module="toolkit", name="CloudRunExecution"):
    """One execution of a Cloud Run job, started on create and cancelled on delete."""

    execution: pulumi.Output[str]

    def __init__(self, name: str, job: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None) -> None:
        props = {
            "job": job,
            "execution": None,
            "poll_seconds": STATUS_POLL_SECONDS,
            "cancel_wait_seconds": CANCEL_WAIT_SECONDS,
        }
        super().__init__(_ExecutionProvider(), name, props, opts)


def _condition(execution: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in execution.get("conditions", []) if c.get("type") == kind), {})


def _oom(message: str, exit_code: int | None) -> bool:
    return "memory limit" in message.lower() or exit_code == 137


def execution_status(execution: dict[str, Any], tasks: Callable[[], list[dict[str, Any]]]) -> JobStatus:
    """Map a Cloud Run v2 Execution (and, on failure, its Tasks) to a ``JobStatus``."""
    completed = _condition(execution, "Completed")
    state = completed.get("state")
    if state == "CONDITION_SUCCEEDED":
        return JobStatus(state="succeeded", exit_code=0)
    if state == "CONDITION_FAILED" or execution.get("completionTime"):
        if execution.get("cancelledCount") or completed.get("executionReason") in ("CANCELLED", "CANCELLING"):
            return JobStatus(state="failed", reason="the Cloud Run execution was cancelled")
        return _failure(completed, tasks())
    for condition in execution.get("conditions", []):
        if condition.get("state") == "CONDITION_FAILED":
            return JobStatus(
                state="failed",
                reason=f"the Cloud Run execution could not start ({condition.get('type')}): "
                f"{condition.get('message') or condition.get('reason')}",
            )
    if execution.get("runningCount") or _condition(execution, "Started").get("state") == "CONDITION_SUCCEEDED":
        return JobStatus(state="running")
    return JobStatus(state="pending")


def _failure(completed: dict[str, Any], tasks: list[dict[str, Any]]) -> JobStatus:
    failed = [t for t in tasks if (t.get("lastAttemptResult") or {}).get("exitCode") or _task_failed(t)]
    if not failed:
        return JobStatus(state="failed", reason=f"the Cloud Run execution failed: {completed.get('message', '?')}")
    attempt = failed[0].get("lastAttemptResult") or {}
    exit_code = attempt.get("exitCode")
    message = (attempt.get("status") or {}).get("message") or completed.get("message") or "no message"
    reason = f"task {failed[0].get('index', 0)} failed: {message}"
    if exit_code is not None:
        reason += f" (exit code {exit_code})"
    if _oom(message, exit_code):
        reason += "; the container ran out of memory: raise the 'memory' job variable"
    # max_retries (= `retries`): Cloud Run ran the task again that many times before giving up
    attempts = int(failed[0].get("retried") or 0) + 1
    return JobStatus(state="failed", exit_code=exit_code, reason=reason, attempt=attempts)


def _task_failed(task: dict[str, Any]) -> bool:
    return _condition(task, "Completed").get("state") == "CONDITION_FAILED"
