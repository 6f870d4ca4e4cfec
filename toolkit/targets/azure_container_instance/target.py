"""The ``azure_container_instance`` target: the job is an Azure Container Instances container group.

Job = a ``containerinstance.ContainerGroup`` with restart policy ``Never``
running the runner as the run's user-assigned identity; storage, identity,
secrets and pulls are the Azure family's (``toolkit.targets.azure``).

A pool whose storage is a shared prefix
(``az://CONTAINER@ACCOUNT.blob.core.windows.net/PREFIX``) gets no account: the
bundle goes to ``<prefix>/<run-id>/`` and the identity may use only that prefix
(an ABAC condition on its role assignment, in ``storage_resource_group``).

Per-run storage is ``az://run@tkrun<run-id>.blob.core.windows.net``: the URL names
the account, so adlfs (fsspec) finds it from the URL alone and authenticates
with ``DefaultAzureCredential``, on the client and in the job (where
``AZURE_CLIENT_ID`` selects the run's identity).

The watcher reads the container group's instance view (state, exit code,
events) and the container's logs from Azure Resource Manager; its endpoint can
be replaced through ``TOOLKIT_AZURE_MANAGEMENT_ENDPOINT`` (tests use a fake).
"""

from __future__ import annotations

import copy
import functools
import json
import time
from typing import Any

import pulumi_azure_native as azure

from toolkit.bundles import STORAGE_OPTIONS_ENV
from toolkit.infra.base import Target, placeholders
from toolkit.infra.flow import JobParts, Platform
from toolkit.infra.image_registry import ImageRegistry
from toolkit.infra.pulling import refuse_loopback
from toolkit.infra.rest import PolledWatcher, RestClient
from toolkit.infra.run import JobConfiguration, RunContext
from toolkit.infra.synonyms import PREFECT_COMMON, no_counterpart, prefect_retries, renamed
from toolkit.infra.watch import JobStatus, JobWatcher
from toolkit.secretvalues import Secret
from toolkit.targets.azure import CONTAINER, AzurePlatform, account_name, management_api
from toolkit.targets.azure_container_instance.models import (
    AzureContainerInstanceJob,
    AzureContainerInstanceVariables,
)

ACI_API_VERSION = "2023-05-01"
RUNNER = "runner"
MAX_CONTAINERS = 60
"""Azure's limit on containers in one container group: a map's workers at most."""
STATUS_POLL_SECONDS = 2.0
IMAGE_PULL_STATES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName")


def worker_name(number: int) -> str:
    """A map's worker ``number`` in the container group: the first is the usual runner container."""
    return RUNNER if number == 0 else f"{RUNNER}-{number}"


def container_group_status(group: dict[str, Any], container: str = RUNNER) -> JobStatus:
    """Map a container group (GET, with instance views) to a ``JobStatus`` of its ``container``."""
    properties = group.get("properties", {})
    containers = properties.get("containers", [])
    runner = next((c for c in containers if c.get("name") == container), containers[0] if containers else {})
    view = runner.get("properties", {}).get("instanceView") or {}
    current = view.get("currentState") or {}
    if current.get("state") == "Terminated":
        code = current.get("exitCode")
        if code == 0:
            return JobStatus(state="succeeded", exit_code=0)
        detail = current.get("detailStatus") or "no detail"
        reason = f"the container exited with status {code} ({detail})"
        if code == 137 or "oom" in detail.lower():
            reason += "; it was killed, most likely for running out of memory: raise the 'memory' job variable"
        return JobStatus(state="failed", exit_code=code, reason=reason)
    warnings = [e for e in view.get("events", []) if e.get("type") == "Warning"]
    if current.get("detailStatus") in IMAGE_PULL_STATES:
        detail = warnings[-1].get("message") if warnings else current.get("detailStatus")
        return JobStatus(state="failed", reason=f"the container's image could not be pulled: {detail}")
    group_state = (properties.get("instanceView") or {}).get("state")
    if group_state == "Failed" or properties.get("provisioningState") == "Failed":
        events = warnings or (properties.get("instanceView") or {}).get("events", [])
        detail = "; ".join(str(e.get("message")) for e in events) or "no events"
        return JobStatus(state="failed", reason=f"the container group failed to start: {detail}")
    if current.get("state") == "Running":
        return JobStatus(state="running")
    return JobStatus(state="pending")


class AzureContainerInstanceWatcher(PolledWatcher):
    """Reads the container group's instance view and the runner container's logs."""

    def __init__(
        self,
        group_id: str,
        client: RestClient | None = None,
        min_interval: float = STATUS_POLL_SECONDS,
        container: str = RUNNER,
    ) -> None:
        super().__init__(min_interval)
        self._group_id = group_id
        self._container = container
        self._given_client = client
        self._log_offset = 0
        self._last_log_read = float("-inf")

    @functools.cached_property
    def _client(self) -> RestClient:
        return self._given_client or management_api()

    def fetch_status(self) -> JobStatus:
        group = self._client.call("GET", self._group_id, params={"api-version": ACI_API_VERSION})
        return container_group_status(group, self._container)

    def read_logs(self) -> str:
        """The log text added since the last read (ACI returns the whole log each time)."""
        now = time.monotonic()
        if not self.finished and now - self._last_log_read < self._min_interval:
            return ""
        self._last_log_read = now
        content = (
            self._client.call(
                "GET", f"{self._group_id}/containers/{self._container}/logs", params={"api-version": ACI_API_VERSION}
            ).get("content")
            or ""
        )
        if len(content) < self._log_offset:  # the log was truncated or restarted: show it again
            self._log_offset = 0
        text = content[self._log_offset :]
        self._log_offset = len(content)
        return text


class AzureContainerInstanceTarget(Target):
    """Run the function in an Azure Container Instances container group."""

    max_map_parallelism = MAX_CONTAINERS

    name = "azure_container_instance"
    plugin_packages = ("pulumi_azure_native",)
    synonyms = {
        **PREFECT_COMMON,
        **prefect_retries(),
        "resource_group_name": renamed("resource_group"),
        "subscription_id": renamed("subscription"),
        "aci_credentials": no_counterpart(
            "a Prefect block; credentials come from the caller's Azure environment (az login, ARM_* variables)"
        ),
        "image_registry": no_counterpart(
            "a Prefect block; the pool's own image_registry (with username and password_env) or, for an ACR, an "
            "identity that may pull (identities) gives jobs access"
        ),
        "entrypoint": no_counterpart("the container runs the toolkit's runner"),
        "dns_servers": no_counterpart("set ip_address/dns_config through customizations"),
        "stream_output": no_counterpart("container logs always stream to the caller"),
        "keep_container_group": no_counterpart("a run's container group is always deleted at teardown"),
        "task_start_timeout_seconds": no_counterpart("bound a run with timeout (seconds)"),
        "task_watch_poll_interval": no_counterpart("the toolkit polls the container group itself"),
    }
    extra = "azure"
    variables_model = AzureContainerInstanceVariables
    job_model = AzureContainerInstanceJob
    customization_root = "/container_group"
    required = ("image", "resource_group")
    environment = "image"
    images_from_registry = True
    storage_schemes = ("az", "abfs", "abfss")
    signed_storage = True

    def check_image_registry(self, registry: ImageRegistry, job: JobConfiguration, pool_name: str) -> None:
        refuse_loopback(registry, self.name, pool_name)

    @classmethod
    def default_job_configuration(cls) -> dict[str, Any]:
        return {
            **placeholders(
                "subscription", "resource_group", "identities", "registry_resource_group", "storage_resource_group",
                "subnet_ids", "client_principal_type", "env", "labels",
            ),
            "container_group": {
                "location": "{{ location }}",
                "os_type": "Linux",
                "restart_policy": "Never",
                "sku": "Standard",
                "containers": [
                    {
                        "name": RUNNER,
                        "image": "{{ image }}",
                        "resources": {
                            "requests": {
                                "cpu": "{{ cpu }}",
                                "memory_in_gb": "{{ memory }}",
                                "gpu": {"sku": "{{ gpu_sku }}", "count": "{{ gpu_count }}"},
                            }
                        },
                    }
                ],
            },
        }

    def per_run_storage_url(self, run_id: str) -> str:
        return f"az://{CONTAINER}@{account_name(run_id)}.blob.core.windows.net"

    def platform(self, run: RunContext) -> Platform:
        job = run.job
        assert isinstance(job, AzureContainerInstanceJob) and job.resource_group is not None
        settings = {
            name: getattr(job, name)
            for name in ("client_principal_type", "identities", "registry_resource_group", "storage_resource_group")
        }
        tags = {**job.labels, **run.labels}
        location = job.container_group.get("location")
        return AzurePlatform(run, job.subscription, job.resource_group, location, tags, settings)

    def job(self, run: RunContext, parts: JobParts) -> dict[str, Any]:
        """The container group: the runner (and a map's other workers, claiming items) as the run's identity."""
        job = run.job
        platform = parts.platform
        assert isinstance(job, AzureContainerInstanceJob) and isinstance(platform, AzurePlatform)
        group_args = copy.deepcopy(job.container_group)
        if parts.pull:
            group_args["image_registry_credentials"] = [*group_args.get("image_registry_credentials", []), *parts.pull]
        containers = group_args.pop("containers")
        containers[0] = {
            **containers[0],
            **({"image": parts.image} if parts.image else {}),  # the call's environment, pulled by digest
            "command": parts.form.command(run.storage_url),
            "environment_variables": [*containers[0].get("environment_variables", []), *_env(job, run, parts)],
        }
        # a map: the group's containers are workers claiming items
        containers[1:1] = [{**containers[0], "name": worker_name(k)} for k in range(1, parts.form.workers)]
        group_args.update(
            container_group_name=f"toolkit-{run.run_id}",
            resource_group_name=platform.resource_group,
            restart_policy="Never",
            tags=platform.tags,
            identity={"type": "UserAssigned", "user_assigned_identities": [parts.identity.id, *job.identities]},
        )
        if job.subnet_ids:
            group_args["subnet_ids"] = [{"id": subnet} for subnet in job.subnet_ids]
        # restart_policy OnFailure would restart without a count and collect the result twice: a new
        # attempt (toolkit.retries) is a new group of the same name, so the old one goes first
        group = azure.containerinstance.ContainerGroup(
            "job", containers=containers, **group_args,
            opts=parts.options(provider=platform.provider, delete_before_replace=True),
        )
        return {"container_group": group.id}

    def watch(self, run: RunContext, outputs: dict[str, Any]) -> JobWatcher | list[JobWatcher]:
        if getattr(run, "fanout", None) is None:  # (the group alone names a single call's job)
            return AzureContainerInstanceWatcher(outputs["container_group"])
        names = [worker_name(k) for k in range(run.fanout.parallelism)]
        return [AzureContainerInstanceWatcher(outputs["container_group"], container=name) for name in names]


def _env(job: AzureContainerInstanceJob, run: RunContext, parts: JobParts) -> list[dict[str, Any]]:
    """Plain values; the pool's storage options; the identity storage is reached as; the run's secrets as
    secure values."""
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in job.env.items() if not isinstance(v, Secret)]
    if run.storage_options:
        env.append({"name": STORAGE_OPTIONS_ENV, "value": json.dumps(run.storage_options)})
    env.append({"name": "AZURE_CLIENT_ID", "value": parts.identity.client_id})
    return env + [{"name": name, "secure_value": value} for name, value in parts.secrets.items()]
