"""The ``vertex_ai`` target: the job is a Vertex AI CustomJob.

pulumi-gcp has no CustomJob resource, so the job is a dynamic resource over
the Vertex AI REST API (``projects.locations.customJobs``): create submits the
job; delete cancels it, waits until it reached a final state (Vertex refuses
to delete a running job) and deletes it, waiting for that long-running
operation. Around it: the per-run bucket, identity and object access that
Cloud Run uses too (``toolkit.infra.gcp``).

Secrets: a CustomJob's env is plain text in its API resource. The run key and
``toolkit.secret`` env values therefore go to Secret Manager (readable by the
run's identity only), the job spec names only their versions, and the job
starts with ``python3 -m toolkit.gcp_secret_env NAME=VERSION ... -- <runner>``,
which reads them with the job's own token and execs the runner with them in
its environment: the runner still receives ``TOOLKIT_RUN_KEY`` as usual.

The REST endpoint (``https://<region>-aiplatform.googleapis.com``) can be
replaced through ``TOOLKIT_VERTEX_ENDPOINT`` (tests point it at a fake).
"""

from __future__ import annotations

import copy
import functools
import re
import sys
import time
from typing import Any, Literal

import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider
from pydantic import Field, model_validator

from toolkit.environments.registry import ImageRegistry
from toolkit.environments.variables import EnvironmentVariables
from toolkit.infra import gcp as shared
from toolkit.infra.base import (
    JobConfiguration,
    JobStatus,
    JobWatcher,
    RunContext,
    Target,
    placeholders,
    runner_command,
)
from toolkit.infra.rest import CloudApiError, PolledWatcher, RestClient, endpoint, google_session
from toolkit.infra.storage import item_uploads
from toolkit.infra.synonyms import PREFECT_COMMON, no_counterpart, prefect_retries, renamed
from toolkit.runner import RUN_KEY_ENV, STORAGE_OPTIONS_ENV
from toolkit.secretvalues import Secret

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
RESERVED_ENV = (RUN_KEY_ENV, STORAGE_OPTIONS_ENV)
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
SERVICE_AGENT = "service-{number}@gcp-sa-aiplatform.iam.gserviceaccount.com"
"""The Google-managed identity that pulls the job's image (not the job's own service account)."""


class VertexAiVariables(EnvironmentVariables):
    """Job variables of the Vertex AI target."""

    region: str = Field(
        default="us-central1", pattern=r"^[a-z]+-[a-z]+\d+$", description="Region of the job and its bucket."
    )
    project: str | None = Field(
        default=None, description="Google Cloud project (default: the provider's, e.g. GOOGLE_CLOUD_PROJECT)."
    )
    image: str | None = Field(
        default=None,
        description=f"Container image with Python {PYTHON}, toolkit, cloudpickle and gcsfs installed (required).",
    )
    machine_type: str = Field(default="n1-standard-4", description="Compute Engine machine type of the replica.")
    accelerator_type: str | None = Field(
        default=None, pattern=r"^[A-Z0-9_]+$", description="Accelerator, e.g. 'NVIDIA_TESLA_T4' or 'NVIDIA_L4'."
    )
    accelerator_count: int | None = Field(
        default=None, ge=1, description="Number of accelerators (default 1 when accelerator_type is set)."
    )
    boot_disk_type: Literal["pd-ssd", "pd-standard", "hyperdisk-balanced"] = Field(
        default="pd-ssd", description="Boot disk type of the replica."
    )
    boot_disk_size_gb: int = Field(default=100, ge=100, le=64000, description="Boot disk size in GB.")
    service_account: str | None = Field(
        default=None,
        description="Email of an existing service account to run as (default: a per-run one). "
        "It is granted access to the run's bucket and secrets only.",
    )
    network: str | None = Field(
        default=None, description="Full name of a peered VPC network: projects/NUMBER/global/networks/NAME."
    )
    maximum_run_time_hours: int = Field(
        default=1, ge=1, le=168, description="Vertex AI cancels the job after this many hours."
    )
    restart_job_on_worker_restart: bool = Field(
        default=False, description="Restart the whole job when a replica restarts."
    )
    scheduling_strategy: Literal["STANDARD", "SPOT", "FLEX_START"] | None = Field(
        default=None, description="How resources are obtained (default: Vertex AI's, on-demand)."
    )
    disable_retries: bool = Field(default=False, description="Do not retry the job after an infrastructure error.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables of the container.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels on the job and every resource of the run.")
    customizations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="JSON-6902 patches applied to the CustomJob's jobSpec (REST shape, camelCase), "
        "e.g. [{'op': 'add', 'path': '/enableWebAccess', 'value': true}].",
    )


class VertexAiJob(JobConfiguration):
    region: str
    project: str | None = None
    service_account: str | None = None
    maximum_run_time_hours: int = 1
    env: dict[str, str | Secret] = {}
    labels: dict[str, str] = {}
    job_spec: dict[str, Any]
    """The CustomJob's ``jobSpec`` as the REST API takes it; the runner is worker pool 0."""

    @model_validator(mode="after")
    def _check(self) -> VertexAiJob:
        pools = self.job_spec.get("workerPoolSpecs")
        if not isinstance(pools, list) or not pools or not isinstance(pools[0], dict):
            raise ValueError("job_spec.workerPoolSpecs must list the runner's worker pool first")
        machine = pools[0].setdefault("machineSpec", {})
        if "acceleratorCount" in machine and "acceleratorType" not in machine:
            raise ValueError("accelerator_count is set without accelerator_type; set both")
        if "acceleratorType" in machine:
            machine.setdefault("acceleratorCount", 1)
        for name in self.env:
            if name in RESERVED_ENV:
                raise ValueError(f"environment variable {name!r} is set by the toolkit; use another name")
        return self

    @property
    def image(self) -> str | None:
        return self.job_spec["workerPoolSpecs"][0].get("containerSpec", {}).get("imageUri")


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


class VertexAiWatcher(PolledWatcher):
    """Reads the CustomJob's state and its Cloud Logging entries (resource type ``ml_job``)."""

    def __init__(
        self,
        name: str,
        region: str,
        client: RestClient | None = None,
        logs: shared.CloudLogReader | None = None,
        min_interval: float = STATUS_POLL_SECONDS,
    ) -> None:
        self._name = name
        self._region = region
        self._given_client = client
        project, job_id = name.split("/")[1], name.rsplit("/", 1)[-1]
        log_filter = f'resource.type="ml_job" AND resource.labels.job_id="{job_id}"'
        self._logs = logs or shared.CloudLogReader(project, log_filter)
        super().__init__(min_interval)

    @functools.cached_property
    def _client(self) -> RestClient:
        return self._given_client or vertex_api(self._region)

    def fetch_status(self) -> JobStatus:
        return custom_job_status(self._client.call("GET", f"/v1/{self._name}"))

    def read_logs(self) -> str:
        return self._logs.read(force=self.finished)


def _worker_pools(spec: dict[str, Any], parallelism: int) -> None:
    """A map's CustomJob: ``parallelism`` replicas claiming items from the run's bucket.

    Vertex's first worker pool is the primary replica (exactly one), so it runs one
    worker and waits for every item's result before it exits (its exit ends the
    job); a second pool of the same container holds the other ``parallelism - 1``.
    """
    primary = spec["workerPoolSpecs"][0]
    container = primary["containerSpec"]
    if parallelism > 1:  # shallow copies: the command holds secret references (Outputs)
        workers = {**primary, "replicaCount": parallelism - 1, "containerSpec": {**container}}
        spec["workerPoolSpecs"] = [primary, workers, *spec["workerPoolSpecs"][1:]]
    primary["replicaCount"] = 1
    primary["containerSpec"] = {**container, "command": [*container["command"], "--await-items"]}


class VertexAiTarget(Target):
    """Run the function as a Vertex AI custom training job."""

    name = "vertex_ai"
    plugin_packages = ("pulumi_gcp",)
    synonyms = {
        **PREFECT_COMMON,
        **prefect_retries(),
        "service_account_name": renamed("service_account"),
        "credentials": no_counterpart("a Prefect block; credentials come from the caller's Google environment (ADC)"),
        "reserved_ip_ranges": no_counterpart("set jobSpec.reservedIpRanges through customizations"),
        "scheduling": no_counterpart(
            "use maximum_run_time_hours, restart_job_on_worker_restart and scheduling_strategy"
        ),
        "enable_web_access": no_counterpart("set jobSpec.enableWebAccess through customizations"),
        "enable_dashboard_access": no_counterpart("set jobSpec.enableDashboardAccess through customizations"),
        "job_watch_poll_interval": no_counterpart("the toolkit polls the job itself"),
    }
    extra = "gcp"
    variables_model = VertexAiVariables
    job_model = VertexAiJob
    required = ("image",)
    customization_root = "/job_spec"
    environment = "image"
    images_from_registry = True

    def environment_base(self, job: JobConfiguration) -> str | None:
        assert isinstance(job, VertexAiJob)
        return job.image

    def check_image_registry(self, registry: ImageRegistry, job: JobConfiguration, pool_name: str) -> None:
        shared.check_registry(registry, self.name, pool_name)

    @classmethod
    def default_job_configuration(cls) -> dict[str, Any]:
        return {
            **placeholders("region", "project", "service_account", "maximum_run_time_hours", "env", "labels"),
            "job_spec": {
                "workerPoolSpecs": [
                    {
                        "replicaCount": 1,
                        "machineSpec": {
                            "machineType": "{{ machine_type }}",
                            "acceleratorType": "{{ accelerator_type }}",
                            "acceleratorCount": "{{ accelerator_count }}",
                        },
                        "diskSpec": {
                            "bootDiskType": "{{ boot_disk_type }}",
                            "bootDiskSizeGb": "{{ boot_disk_size_gb }}",
                        },
                        "containerSpec": {"imageUri": "{{ image }}"},
                    }
                ],
                "network": "{{ network }}",
                "scheduling": {
                    "restartJobOnWorkerRestart": "{{ restart_job_on_worker_restart }}",
                    "strategy": "{{ scheduling_strategy }}",
                    "disableRetries": "{{ disable_retries }}",
                },
            },
        }

    def per_run_storage_url(self, run_id: str) -> str:
        return shared.storage_url(run_id)

    def program(self, run: RunContext) -> None:
        job = run.job
        assert isinstance(job, VertexAiJob)
        # again: customizations may have dropped it
        self.require({"image": job.image}, run.pool_name, ("image",))
        project = shared.resolve_project(job.project, self.name)
        labels = shared.gcp_labels(job.labels, run.labels)
        identity = shared.run_identity(run, project, job.service_account)
        needed: list[pulumi.Resource] = shared.run_bucket(run, project, job.region, identity, labels)
        needed += item_uploads(run, needed[0])
        needed += shared.image_pull_grant(run, project, SERVICE_AGENT)

        plain = {k: v for k, v in job.env.items() if not isinstance(v, Secret)}
        plain.update(shared.storage_options_env(run))
        hidden = {RUN_KEY_ENV: run.run_key, **{k: v.reveal() for k, v in job.env.items() if isinstance(v, Secret)}}
        references: list[pulumi.Output[str]] = []
        for name, value in hidden.items():
            secret = shared.run_secret(run, name, value, project, identity, labels)
            needed += [secret.version, secret.grant]
            references.append(pulumi.Output.concat(name, "=", secret.version.name))

        spec = copy.deepcopy(job.job_spec)
        pool = spec["workerPoolSpecs"][0]
        runner = runner_command(run.storage_url, fanout=run.fanout)
        pool["containerSpec"] = {
            **pool.get("containerSpec", {}),
            **({"imageUri": run.image} if run.image else {}),  # the call's environment, pulled by digest
            "command": ["python3", "-m", "toolkit.gcp_secret_env", *references, "--", *runner],
            "env": [
                *pool.get("containerSpec", {}).get("env", []),
                *({"name": k, "value": v} for k, v in plain.items()),
            ],
        }
        if run.fanout is not None:
            _worker_pools(spec, run.fanout.parallelism)
        spec["serviceAccount"] = identity.email
        spec.setdefault("scheduling", {})["timeout"] = f"{job.maximum_run_time_hours * 3600}s"
        body = {"displayName": f"toolkit-{run.run_id}-{run.function_name}"[:128], "labels": labels, "jobSpec": spec}
        custom_job = CustomJob(
            "job",
            region=job.region,
            parent=f"projects/{project}/locations/{job.region}",
            body=body,
            # Vertex restarts a job only per worker and without a count: a new attempt (toolkit.retries)
            # is a new CustomJob
            opts=pulumi.ResourceOptions(depends_on=needed, replacement_trigger=run.attempt),
        )
        pulumi.export("custom_job", custom_job.name)
        pulumi.export("region", job.region)

    def watcher(self, run: RunContext, outputs: dict[str, Any]) -> JobWatcher:
        return VertexAiWatcher(outputs["custom_job"], outputs["region"])
