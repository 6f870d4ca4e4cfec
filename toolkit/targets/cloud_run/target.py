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
from typing import Any

import pulumi
import pulumi_gcp as gcp

from toolkit.infra.base import placeholders
from toolkit.infra.flow import JobParts
from toolkit.infra.rest import PolledWatcher, RestClient
from toolkit.infra.run import RunContext
from toolkit.infra.synonyms import (
    Synonym,
    cloud_run_cpu,
    cloud_run_memory,
    gcp_secret_into,
    gcp_secrets,
    no_counterpart,
    prefect_retries,
    renamed,
)
from toolkit.infra.watch import JobStatus, JobWatcher
from toolkit.secretvalues import Secret
from toolkit.targets.cloud_run.execution import STATUS_POLL_SECONDS, CloudRunExecution, execution_status, run_api
from toolkit.targets.cloud_run.models import CloudRunJob, CloudRunVariables
from toolkit.targets.google.logs import CloudLogReader
from toolkit.targets.google.platform import (
    GooglePlatform,
    grant_secret_access,
    parse_secret_reference,
    storage_options_env,
)
from toolkit.targets.google.target import PREFECT_GOOGLE, GoogleTarget

SERVICE_AGENT = "service-{number}@serverless-robot-prod.iam.gserviceaccount.com"
"""The Google-managed identity that pulls the job's image (not the job's own service account)."""
TASK_INDEX_ENV = "CLOUD_RUN_TASK_INDEX"
"""Where each task of a map's execution finds its index: the item it runs."""


class CloudRunWatcher(PolledWatcher):
    """Reads the execution (and its tasks on failure) and its Cloud Logging entries."""

    def __init__(
        self,
        execution: str,
        project: str,
        client: RestClient | None = None,
        logs: CloudLogReader | None = None,
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
        self._logs = logs or CloudLogReader(project, log_filter)
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


class CloudRunTarget(GoogleTarget):
    """Run the function as a Google Cloud Run job."""

    native_retries = "max_retries"  # a task that ended without a result runs again; the runner exits 0 on a result
    map_form = "indexed"  # one task per item, its index in CLOUD_RUN_TASK_INDEX
    index_env = TASK_INDEX_ENV

    name = "cloud_run"
    service_agent = SERVICE_AGENT
    synonyms = {
        **PREFECT_GOOGLE,
        **prefect_retries("max_retries"),
        "memory": renamed(
            "memory", "with a unit, e.g. '512Mi'; Prefect's integer + memory_unit are combined", cloud_run_memory
        ),
        "memory_unit": Synonym("memory", "memory=4, memory_unit='Gi' -> memory='4Gi'", part_of="memory"),
        "cpu": renamed("cpu", "'1000m' or '2'; a whole number of CPUs becomes millicores", cloud_run_cpu),
        "vpc_connector_name": renamed("vpc_connector"),
        "env_from_secrets": renamed("secrets", "NAME -> 'secret:version'", gcp_secrets),
        "prefect_api_key_secret": Synonym(
            "secrets", "becomes secrets={'PREFECT_API_KEY': 'secret:version'}", gcp_secret_into("PREFECT_API_KEY")
        ),
        "prefect_api_auth_string_secret": Synonym(
            "secrets",
            "becomes secrets={'PREFECT_API_AUTH_STRING': 'secret:version'}",
            gcp_secret_into("PREFECT_API_AUTH_STRING"),
        ),
        "args": no_counterpart("the container runs the toolkit's runner"),
        "keep_job": no_counterpart("a run's job is always deleted at teardown"),
        "launch_stage": no_counterpart("the job is created with the provider's default launch stage"),
        "cloudsql_instances": no_counterpart("mount Cloud SQL through customizations of the job's volumes"),
    }
    variables_model = CloudRunVariables
    job_model = CloudRunJob
    customization_root = "/job"

    @classmethod
    def default_job_configuration(cls) -> dict[str, Any]:
        return {
            **placeholders("region", "project", "service_account", "vpc_connector", "env", "secrets", "labels"),
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

    def job(self, run: RunContext, parts: JobParts) -> dict[str, Any]:
        """The Cloud Run job (deletion protection off) and one execution of it; a map is one task per item."""
        job = run.job
        platform = parts.platform
        assert isinstance(job, CloudRunJob) and isinstance(platform, GooglePlatform)
        envs, grants = _container_env(job, run, parts, platform.project)
        argv = parts.form.command(run.storage_url)
        args = copy.deepcopy(job.job)
        template = args.pop("template")
        if run.fanout is not None:  # a map: one task per item, its index in CLOUD_RUN_TASK_INDEX
            template.update(task_count=run.fanout.count, parallelism=run.fanout.parallelism)
        template.setdefault("labels", {}).update(platform.labels)
        task = template["template"]
        task["service_account"] = parts.identity.email
        if job.vpc_connector:
            task["vpc_access"] = {"connector": job.vpc_connector}
        task["containers"][0] = {
            **job.runner,
            **({"image": parts.image} if parts.image else {}),  # the call's environment, pulled by digest
            "commands": argv[:1],
            "args": argv[1:],
            "envs": [*job.runner.get("envs", []), *envs],
        }
        args.update(
            name=f"toolkit-{run.run_id}",
            location=job.region,
            project=platform.project,
            labels=platform.labels,
            deletion_protection=False,  # the stack must always be able to delete it
        )
        cloud_run_job = gcp.cloudrunv2.Job("job", template=template, **args, opts=parts.options(*grants))
        full_name = pulumi.Output.concat(
            "projects/", platform.project, "/locations/", job.region, "/jobs/", cloud_run_job.name
        )
        execution = CloudRunExecution("execution", full_name, opts=pulumi.ResourceOptions(depends_on=[cloud_run_job]))
        return {"execution": execution.execution, "project": platform.project}

    def watch(self, run: RunContext, outputs: dict[str, Any]) -> JobWatcher:
        return CloudRunWatcher(outputs["execution"], outputs["project"])


def _container_env(
    job: CloudRunJob, run: RunContext, parts: JobParts, project: str
) -> tuple[list[dict[str, Any]], list[pulumi.Resource]]:
    """The runner's env: plain values, the run's secrets and the pool's existing ones as secret references;
    and the grants that let the run's identity read the existing ones."""
    envs: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in job.env.items() if not isinstance(v, Secret)]
    envs += [{"name": k, "value": v} for k, v in storage_options_env(run).items()]
    for name, secret in parts.secrets.items():
        ref = {"secret": secret.secret.secret_id, "version": secret.version.version}
        envs.append({"name": name, "value_source": {"secret_key_ref": ref}})
    grants = []
    for name, reference in job.secrets.items():
        secret_name, version = parse_secret_reference(reference)
        grants.append(grant_secret_access(name, reference, project, parts.identity))
        envs.append({"name": name, "value_source": {"secret_key_ref": {"secret": secret_name, "version": version}}})
    return envs, grants
