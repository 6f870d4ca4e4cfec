"""The ``cloud_run`` target: the job is a Google Cloud Run job execution.

Program: a per-run GCS bucket (force-destroyed) holding the bundle; a per-run
service account (or the pool's) with object read + create on exactly that
bucket; the run key and ``toolkit.secret`` env values as Secret Manager
secrets the job reads through ``value_source.secret_key_ref`` (its identity may
read exactly those, and the secrets the pool references); a
``gcp.cloudrunv2.Job`` with deletion protection off; and one execution of it,
a dynamic resource over the Cloud Run Admin API whose create runs the job and
whose delete cancels the execution, so ``pulumi destroy`` stops a running job
before its resources go.

Cloud Run's task timeout is the base ``timeout`` job variable: one number for
both, so Cloud Run never kills a job the engine still waits for, nor the other
way round. Without it Cloud Run's own default (10 minutes) applies.
"""

from __future__ import annotations

import copy
import functools
import inspect
import sys
import time
from collections.abc import Callable
from typing import Any

import pulumi
import pulumi_gcp as gcp
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
from toolkit.infra.synonyms import (
    PREFECT_COMMON,
    Synonym,
    cloud_run_cpu,
    cloud_run_memory,
    gcp_secret_into,
    gcp_secrets,
    no_counterpart,
    prefect_retries,
    renamed,
)
from toolkit.runner import RUN_KEY_ENV, STORAGE_OPTIONS_ENV
from toolkit.secretvalues import Secret

RUN_ENDPOINT_ENV = "TOOLKIT_CLOUD_RUN_ENDPOINT"
RUN_ENDPOINT = "https://run.googleapis.com"
STATUS_POLL_SECONDS = 2.0
"""Minimum seconds between two execution reads (Cloud Run Admin API read quota)."""
CANCEL_WAIT_SECONDS = 300.0
RESERVED_ENV = (RUN_KEY_ENV, STORAGE_OPTIONS_ENV)
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
SERVICE_AGENT = "service-{number}@serverless-robot-prod.iam.gserviceaccount.com"
TASK_INDEX_ENV = "CLOUD_RUN_TASK_INDEX"
"""Where each task of a map's execution finds its index: the item it runs."""
"""The Google-managed identity that pulls the job's image (not the job's own service account)."""
_JOB_ARGUMENTS = frozenset(inspect.signature(gcp.cloudrunv2.JobArgs.__init__).parameters) - {"__self__"}


class CloudRunVariables(EnvironmentVariables):
    """Job variables of the Cloud Run target."""

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
    cpu: str = Field(
        default="1000m", pattern=r"^(\d+(\.\d+)?|\d+m)$", description="CPU limit of the container, e.g. '1000m' or '2'."
    )
    memory: str = Field(
        default="512Mi", pattern=r"^\d+(Mi|Gi)$", description="Memory limit of the container, e.g. '512Mi' or '4Gi'."
    )
    max_retries: int = Field(
        default=0,
        ge=0,
        le=10,
        description="Retries of a task that ended without a result (a Python exception is a result, not a failure). "
        "This target's own name for 'retries'.",
    )
    service_account: str | None = Field(
        default=None,
        description="Email of an existing service account to run as (default: a per-run one). "
        "It is granted access to the run's bucket and secrets only.",
    )
    vpc_connector: str | None = Field(default=None, description="Serverless VPC Access connector for egress.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables of the container.")
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables read from Secret Manager: NAME -> 'secret', 'secret:version' "
        "or 'projects/P/secrets/S[/versions/V]'.",
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Labels on every resource of the run.")
    customizations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="JSON-6902 patches applied to the gcp.cloudrunv2.Job arguments (snake_case), "
        "e.g. [{'op': 'add', 'path': '/template/template/execution_environment', "
        "'value': 'EXECUTION_ENVIRONMENT_GEN2'}].",
    )


class CloudRunJob(JobConfiguration):
    region: str
    project: str | None = None
    service_account: str | None = None
    vpc_connector: str | None = None
    env: dict[str, str | Secret] = {}
    secrets: dict[str, str] = {}
    labels: dict[str, str] = {}
    job: dict[str, Any]
    """Arguments of ``gcp.cloudrunv2.Job`` (snake_case); the runner is the first container."""

    @model_validator(mode="after")
    def _check(self) -> CloudRunJob:
        containers = self.job.get("template", {}).get("template", {}).get("containers")
        if not isinstance(containers, list) or not containers or not isinstance(containers[0], dict):
            raise ValueError("job.template.template.containers must list the runner container first")
        for name in [*self.env, *self.secrets]:
            if name in RESERVED_ENV:
                raise ValueError(f"environment variable {name!r} is set by the toolkit; use another name")
        unknown = sorted(set(self.job) - _JOB_ARGUMENTS)
        if unknown:
            raise ValueError(
                f"job: gcp.cloudrunv2.Job takes no argument {unknown[0]!r}; fix the pool's 'customizations'. "
                f"Arguments: {', '.join(sorted(_JOB_ARGUMENTS))}"
            )
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise ValueError(f"{both} given both in 'env' and in 'secrets'; keep one")
        return self

    @property
    def runner_container(self) -> dict[str, Any]:
        return self.job["template"]["template"]["containers"][0]


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


class CloudRunWatcher(PolledWatcher):
    """Reads the execution (and its tasks on failure) and its Cloud Logging entries."""

    def __init__(
        self,
        execution: str,
        project: str,
        client: RestClient | None = None,
        logs: shared.CloudLogReader | None = None,
        min_interval: float = STATUS_POLL_SECONDS,
    ) -> None:
        self._execution = execution
        self._given_client = client
        job_name = execution.split("/jobs/", 1)[1].split("/", 1)[0]
        short = execution.rsplit("/", 1)[-1]
        log_filter = (
            f'resource.type="cloud_run_job" AND resource.labels.job_name="{job_name}" '
            f'AND labels."run.googleapis.com/execution_name"="{short}"'
        )
        self._logs = logs or shared.CloudLogReader(project, log_filter)
        super().__init__(min_interval)

    @functools.cached_property
    def _client(self) -> RestClient:
        """Built on first use: looking up credentials is the caller's first API call, not construction."""
        return self._given_client or run_api()

    def fetch_status(self) -> JobStatus:
        execution = self._client.call("GET", f"/v2/{self._execution}")
        return execution_status(
            execution, lambda: self._client.call("GET", f"/v2/{self._execution}/tasks").get("tasks", [])
        )

    def read_logs(self) -> str:
        # The engine reads logs once more after the job finished: read past the throttle then.
        return self._logs.read(force=self.finished)


class CloudRunTarget(Target):
    """Run the function as a Google Cloud Run job."""

    native_retries = "max_retries"  # a task that ended without a result runs again; the runner exits 0 on a result

    name = "cloud_run"
    plugin_packages = ("pulumi_gcp",)
    synonyms = {
        **PREFECT_COMMON,
        **prefect_retries("max_retries"),
        "memory": renamed(
            "memory", "with a unit, e.g. '512Mi'; Prefect's integer + memory_unit are combined", cloud_run_memory
        ),
        "memory_unit": Synonym("memory", "memory=4, memory_unit='Gi' -> memory='4Gi'", part_of="memory"),
        "cpu": renamed("cpu", "'1000m' or '2'; a whole number of CPUs becomes millicores", cloud_run_cpu),
        "vpc_connector_name": renamed("vpc_connector"),
        "service_account_name": renamed("service_account"),
        "env_from_secrets": renamed("secrets", "NAME -> 'secret:version'", gcp_secrets),
        "prefect_api_key_secret": Synonym(
            "secrets", "becomes secrets={'PREFECT_API_KEY': 'secret:version'}", gcp_secret_into("PREFECT_API_KEY")
        ),
        "prefect_api_auth_string_secret": Synonym(
            "secrets",
            "becomes secrets={'PREFECT_API_AUTH_STRING': 'secret:version'}",
            gcp_secret_into("PREFECT_API_AUTH_STRING"),
        ),
        "credentials": no_counterpart("a Prefect block; credentials come from the caller's Google environment (ADC)"),
        "args": no_counterpart("the container runs the toolkit's runner"),
        "keep_job": no_counterpart("a run's job is always deleted at teardown"),
        "launch_stage": no_counterpart("the job is created with the provider's default launch stage"),
        "cloudsql_instances": no_counterpart("mount Cloud SQL through customizations of the job's volumes"),
    }
    extra = "gcp"
    variables_model = CloudRunVariables
    job_model = CloudRunJob
    required = ("image",)
    customization_root = "/job"
    environment = "image"
    images_from_registry = True

    def environment_base(self, job: JobConfiguration) -> str | None:
        assert isinstance(job, CloudRunJob)
        return job.runner_container.get("image")

    def check_image_registry(self, registry: ImageRegistry, job: JobConfiguration, pool_name: str) -> None:
        shared.check_registry(registry, self.name, pool_name)

    @classmethod
    def default_job_configuration(cls) -> dict[str, Any]:
        return {
            **placeholders(
                "region",
                "project",
                "service_account",
                "vpc_connector",
                "env",
                "secrets",
                "labels",
            ),
            "job": {
                "template": {
                    "task_count": 1,
                    "parallelism": 1,
                    "template": {
                        "max_retries": "{{ max_retries }}",
                        "timeout": "{{ timeout }}s",
                        "containers": [
                            {
                                "name": "runner",
                                "image": "{{ image }}",
                                "resources": {"limits": {"cpu": "{{ cpu }}", "memory": "{{ memory }}"}},
                            }
                        ],
                    },
                }
            },
        }

    def per_run_storage_url(self, run_id: str) -> str:
        return shared.storage_url(run_id)

    def program(self, run: RunContext) -> None:
        job = run.job
        assert isinstance(job, CloudRunJob)
        # again: customizations may have dropped it
        self.require({"image": job.runner_container.get("image")}, run.pool_name, ("image",))
        project = shared.resolve_project(job.project, self.name)
        labels = shared.gcp_labels(job.labels, run.labels)
        identity = shared.run_identity(run, project, job.service_account)
        needed: list[pulumi.Resource] = shared.run_bucket(run, project, job.region, identity, labels)
        needed += item_uploads(run, needed[0])
        needed += shared.image_pull_grant(run, project, SERVICE_AGENT)

        envs: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in job.env.items() if not isinstance(v, Secret)]
        envs += [{"name": k, "value": v} for k, v in shared.storage_options_env(run).items()]
        created = {RUN_KEY_ENV: run.run_key, **{k: v.reveal() for k, v in job.env.items() if isinstance(v, Secret)}}
        for name, value in created.items():
            secret = shared.run_secret(run, name, value, project, identity, labels)
            needed += [secret.version, secret.grant]
            ref = {"secret": secret.secret.secret_id, "version": secret.version.version}
            envs.append({"name": name, "value_source": {"secret_key_ref": ref}})
        for name, reference in job.secrets.items():
            secret_name, version = shared.parse_secret_reference(reference)
            needed.append(shared.grant_secret_access(name, reference, project, identity))
            envs.append({"name": name, "value_source": {"secret_key_ref": {"secret": secret_name, "version": version}}})

        argv = runner_command(run.storage_url, fanout=run.fanout, index_env=TASK_INDEX_ENV)
        args = copy.deepcopy(job.job)
        template = args.pop("template")
        if run.fanout is not None:  # a map: one task per item, its index in CLOUD_RUN_TASK_INDEX
            template.update(task_count=run.fanout.count, parallelism=run.fanout.parallelism)
        template.setdefault("labels", {}).update(labels)
        task = template["template"]
        task["service_account"] = identity.email
        if job.vpc_connector:
            task["vpc_access"] = {"connector": job.vpc_connector}
        task["containers"][0] = {
            **job.runner_container,
            **({"image": run.image} if run.image else {}),  # the call's environment, pulled by digest
            "commands": argv[:1],
            "args": argv[1:],
            "envs": [*job.runner_container.get("envs", []), *envs],
        }
        args.update(
            name=f"toolkit-{run.run_id}",
            location=job.region,
            project=project,
            labels=labels,
            deletion_protection=False,  # the stack must always be able to delete it
        )
        cloud_run_job = gcp.cloudrunv2.Job(
            "job", template=template, **args, opts=pulumi.ResourceOptions(depends_on=needed)
        )
        full_name = pulumi.Output.concat("projects/", project, "/locations/", job.region, "/jobs/", cloud_run_job.name)
        execution = CloudRunExecution("execution", full_name, opts=pulumi.ResourceOptions(depends_on=[cloud_run_job]))
        pulumi.export("execution", execution.execution)
        pulumi.export("project", project)

    def watcher(self, run: RunContext, outputs: dict[str, Any]) -> JobWatcher:
        return CloudRunWatcher(outputs["execution"], outputs["project"])
