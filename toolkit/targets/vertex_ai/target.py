"""The ``vertex_ai`` target: the job is a Vertex AI CustomJob.

pulumi-gcp has no CustomJob resource, so the job is a dynamic resource over
the Vertex AI REST API (``projects.locations.customJobs``): create submits the
job; delete cancels it, waits until it reached a final state (Vertex refuses
to delete a running job) and deletes it, waiting for that long-running
operation. Around it: the per-run bucket, identity and object access that
Cloud Run uses too (``toolkit.targets.google``).

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
from typing import Any

import pulumi

from toolkit.infra.base import placeholders
from toolkit.infra.flow import JobParts
from toolkit.infra.rest import PolledWatcher, RestClient
from toolkit.infra.run import RunContext
from toolkit.infra.synonyms import no_counterpart, prefect_retries
from toolkit.infra.watch import JobStatus, JobWatcher
from toolkit.secretvalues import Secret
from toolkit.targets.google.logs import CloudLogReader
from toolkit.targets.google.platform import (
    GooglePlatform,
    storage_options_env,
)
from toolkit.targets.google.target import PREFECT_GOOGLE, GoogleTarget
from toolkit.targets.vertex_ai.custom_job import STATUS_POLL_SECONDS, CustomJob, custom_job_status, vertex_api
from toolkit.targets.vertex_ai.models import VertexAiJob, VertexAiVariables

SERVICE_AGENT = "service-{number}@gcp-sa-aiplatform.iam.gserviceaccount.com"
"""The Google-managed identity that pulls the job's image (not the job's own service account)."""


class VertexAiWatcher(PolledWatcher):
    """Reads the CustomJob's state and its Cloud Logging entries (resource type ``ml_job``)."""

    def __init__(
        self,
        name: str,
        region: str,
        client: RestClient | None = None,
        logs: CloudLogReader | None = None,
        min_interval: float = STATUS_POLL_SECONDS,
    ) -> None:
        self._name = name
        self._region = region
        self._given_client = client
        project, job_id = name.split("/")[1], name.rsplit("/", 1)[-1]
        log_filter = f'resource.type="ml_job" AND resource.labels.job_id="{job_id}"'
        self._logs = logs or CloudLogReader(project, log_filter)
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


class VertexAiTarget(GoogleTarget):
    """Run the function as a Vertex AI custom training job."""

    name = "vertex_ai"
    service_agent = SERVICE_AGENT
    synonyms = {
        **PREFECT_GOOGLE,
        **prefect_retries(),
        "reserved_ip_ranges": no_counterpart("set jobSpec.reservedIpRanges through customizations"),
        "scheduling": no_counterpart(
            "use maximum_run_time_hours, restart_job_on_worker_restart and scheduling_strategy"
        ),
        "enable_web_access": no_counterpart("set jobSpec.enableWebAccess through customizations"),
        "enable_dashboard_access": no_counterpart("set jobSpec.enableDashboardAccess through customizations"),
        "job_watch_poll_interval": no_counterpart("the toolkit polls the job itself"),
    }
    variables_model = VertexAiVariables
    job_model = VertexAiJob
    customization_root = "/job_spec"

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

    def job(self, run: RunContext, parts: JobParts) -> dict[str, Any]:
        """The CustomJob: the runner behind ``gcp_secret_env``, which reads the run's secrets (named by
        version only) with the job's own token; a map's workers are replicas claiming items."""
        job = run.job
        platform = parts.platform
        assert isinstance(job, VertexAiJob) and isinstance(platform, GooglePlatform)
        plain = {k: v for k, v in job.env.items() if not isinstance(v, Secret)}
        plain.update(storage_options_env(run))
        references = [
            pulumi.Output.concat(name, "=", secret.version.name) for name, secret in parts.secrets.items()
        ]
        spec = copy.deepcopy(job.job_spec)
        pool = spec["workerPoolSpecs"][0]
        pool["containerSpec"] = {
            **pool.get("containerSpec", {}),
            **({"imageUri": parts.image} if parts.image else {}),  # the call's environment, pulled by digest
            "command": ["python3", "-m", "toolkit.gcp_secret_env", *references, "--",
                        *parts.form.command(run.storage_url)],
            "env": [*pool.get("containerSpec", {}).get("env", []),
                    *({"name": k, "value": v} for k, v in plain.items())],
        }
        if run.fanout is not None:
            _worker_pools(spec, run.fanout.parallelism)
        spec["serviceAccount"] = parts.identity.email
        spec.setdefault("scheduling", {})["timeout"] = f"{job.maximum_run_time_hours * 3600}s"
        body = {"displayName": f"toolkit-{run.run_id}-{run.function_name}"[:128], "labels": platform.labels,
                "jobSpec": spec}
        # Vertex restarts a job only per worker and without a count: a new attempt (toolkit.retries) is a new CustomJob
        custom_job = CustomJob(
            "job", region=job.region, parent=f"projects/{platform.project}/locations/{job.region}", body=body,
            opts=parts.options(),
        )
        return {"custom_job": custom_job.name, "region": job.region}

    def watch(self, run: RunContext, outputs: dict[str, Any]) -> JobWatcher:
        return VertexAiWatcher(outputs["custom_job"], outputs["region"])
