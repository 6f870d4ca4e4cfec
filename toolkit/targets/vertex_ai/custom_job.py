"""The run's CustomJob: submitted on create, cancelled and deleted on delete; and its status.

pulumi-gcp has no CustomJob resource, so the job is a dynamic resource over the
Vertex AI REST API (``projects.locations.customJobs``): create submits the job;
delete cancels it, waits until it reached a final state (Vertex refuses to
delete a running job) and deletes it, waiting for that long-running operation.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider

from toolkit.infra.rest import CloudApiError, RestClient, endpoint, google_session
from toolkit.infra.watch import JobStatus

VERTEX_ENDPOINT_ENV = "TOOLKIT_VERTEX_ENDPOINT"
STATUS_POLL_SECONDS = 5.0
"""Minimum seconds between two job reads; Vertex jobs take minutes to start anyway."""
CANCEL_WAIT_SECONDS = 900.0
"""Vertex may take minutes to stop a job's VMs; the job cannot be deleted before."""
FINAL_STATES = frozenset(
    {
        "JOB_STATE_SUCCEEDED",
        "JOB_STATE_FAILED",
        "JOB_STATE_CANCELLED",
        "JOB_STATE_EXPIRED",
        "JOB_STATE_PARTIALLY_SUCCEEDED",
    }
)


def vertex_api(region: str) -> RestClient:
    base = endpoint(VERTEX_ENDPOINT_ENV, f"https://{region}-aiplatform.googleapis.com")
    return RestClient(base, google_session())


def remove_custom_job(client: RestClient, name: str, poll_seconds: float, wait_seconds: float) -> None:
    """Cancel the job unless it is final, wait until it is, delete it and wait for the deletion."""
    try:
        job = client.call("GET", f"/v1/{name}")
        if job.get("state") not in FINAL_STATES:
            if job.get("state") != "JOB_STATE_CANCELLING":
                _cancel(client, name)
            _wait_final(client, name, poll_seconds, wait_seconds)
        operation = client.call("DELETE", f"/v1/{name}")
    except CloudApiError as exc:
        if exc.status == 404:
            return
        raise
    deadline = time.monotonic() + wait_seconds
    while not operation.get("done"):
        if time.monotonic() > deadline:
            raise CloudApiError("DELETE", name, 504, "DEADLINE_EXCEEDED", f"deletion not done after {wait_seconds:g}s")
        time.sleep(poll_seconds)
        operation = client.call("GET", f"/v1/{operation['name']}")
    error = operation.get("error")
    if error:
        raise CloudApiError("DELETE", name, 200, str(error.get("code", "")), str(error.get("message", "")))


def _cancel(client: RestClient, name: str) -> None:
    try:
        client.call("POST", f"/v1/{name}:cancel", {})
    except CloudApiError as exc:
        if exc.code != "FAILED_PRECONDITION":  # it reached a final state meanwhile
            raise


def _wait_final(client: RestClient, name: str, poll_seconds: float, wait_seconds: float) -> None:
    deadline = time.monotonic() + wait_seconds
    while client.call("GET", f"/v1/{name}").get("state") not in FINAL_STATES:
        if time.monotonic() > deadline:
            raise CloudApiError(
                "POST",
                f"{name}:cancel",
                504,
                "DEADLINE_EXCEEDED",
                f"the job was not cancelled after {wait_seconds:g}s; cancel it in the console, then run `toolkit gc`",
            )
        time.sleep(poll_seconds)


class _CustomJobProvider(ResourceProvider):
    """Create submits the CustomJob; delete cancels and deletes it."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        job = vertex_api(props["region"]).call("POST", f"/v1/{props['parent']}/customJobs", props["body"])
        return CreateResult(id_=job["name"], outs={**props, "name": job["name"]})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        remove_custom_job(
            vertex_api(props["region"]), id_, float(props["poll_seconds"]), float(props["cancel_wait_seconds"])
        )


class CustomJob(Resource, module="toolkit", name="VertexCustomJob"):
    """A Vertex AI CustomJob, submitted on create and cancelled + deleted on delete."""

    name: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        region: str,
        parent: pulumi.Input[str],
        body: dict[str, Any],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "region": region,
            "parent": parent,
            "body": body,
            "name": None,
            "poll_seconds": STATUS_POLL_SECONDS,
            "cancel_wait_seconds": CANCEL_WAIT_SECONDS,
        }
        super().__init__(_CustomJobProvider(), resource_name, props, opts)


def custom_job_status(job: dict[str, Any]) -> JobStatus:
    """Map a CustomJob resource (its ``state`` and ``error``) to a ``JobStatus``."""
    state = job.get("state", "JOB_STATE_UNSPECIFIED")
    if state == "JOB_STATE_SUCCEEDED":
        return JobStatus(state="succeeded", exit_code=0)
    if state in FINAL_STATES:
        message = (job.get("error") or {}).get("message") or state
        if state == "JOB_STATE_CANCELLED":
            return JobStatus(state="failed", reason=f"the Vertex AI job was cancelled ({message})")
        if state == "JOB_STATE_EXPIRED":
            return JobStatus(state="failed", reason=f"the Vertex AI job expired before it got resources ({message})")
        found = re.search(r"non-zero status of (\d+)", message)
        exit_code = int(found.group(1)) if found else None
        reason = f"the Vertex AI job failed: {message}"
        if re.search(r"out[- ]of[- ]memory|OOM", message, re.I) or exit_code == 137:
            reason += "; the replica ran out of memory: choose a larger 'machine_type'"
        return JobStatus(state="failed", exit_code=exit_code, reason=reason)
    if state in ("JOB_STATE_QUEUED", "JOB_STATE_PENDING", "JOB_STATE_UNSPECIFIED"):
        return JobStatus(state="pending")
    return JobStatus(state="running")  # RUNNING, CANCELLING, PAUSED, UPDATING
