"""The ``azure_container_instance`` target: the job is an Azure Container Instances container group.

Program: a storage account ``tkrun<run-id>`` with one private blob container
``run`` holding the bundle; a user-assigned identity with Storage Blob Data
Contributor on exactly that container (and the deploying principal with
Storage Blob Data Reader on it, so the client can read the result with its own
Azure AD credentials); and a ``containerinstance.ContainerGroup`` with restart
policy ``Never`` running the runner as that identity. The run key and
``toolkit.secret`` env values are ``secure_value`` environment variables
(never returned by the ACI API) and travel as Pulumi secrets.

Run storage is ``az://run@tkrun<run-id>.blob.core.windows.net``: the URL names
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
import inspect
import json
import sys
import time
from typing import Any, Literal

import pulumi
import pulumi_azure_native as azure
from pydantic import Field, model_validator

from toolkit.bundles import FILES_NAME
from toolkit.environments.registry import ImageRegistry
from toolkit.environments.variables import EnvironmentVariables
from toolkit.fanout.watch import WorkersWatcher
from toolkit.infra.base import (
    JobConfiguration,
    JobStatus,
    JobWatcher,
    RunContext,
    Target,
    placeholders,
    runner_command,
)
from toolkit.infra.pulling import refuse_loopback
from toolkit.infra.rest import PolledWatcher, RestClient, azure_session, endpoint
from toolkit.infra.storage import item_uploads
from toolkit.infra.synonyms import PREFECT_COMMON, no_counterpart, prefect_retries, renamed
from toolkit.runner import BUNDLE_NAME, RUN_KEY_ENV, STORAGE_OPTIONS_ENV
from toolkit.secretvalues import Secret

MANAGEMENT_ENDPOINT_ENV = "TOOLKIT_AZURE_MANAGEMENT_ENDPOINT"
MANAGEMENT_ENDPOINT = "https://management.azure.com"
ACI_API_VERSION = "2023-05-01"
CONTAINER = "run"
RUNNER = "runner"
MAX_CONTAINERS = 60
"""Azure's limit on containers in one container group: a map's workers at most."""
BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
BLOB_DATA_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
STATUS_POLL_SECONDS = 2.0
RESERVED_ENV = (RUN_KEY_ENV, STORAGE_OPTIONS_ENV, "AZURE_CLIENT_ID")
IMAGE_PULL_STATES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName")
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
_GROUP_ARGUMENTS = frozenset(inspect.signature(azure.containerinstance.ContainerGroupArgs.__init__).parameters) - {
    "__self__"
}


class AzureContainerInstanceVariables(EnvironmentVariables):
    """Job variables of the Azure Container Instances target."""

    subscription: str | None = Field(
        default=None,
        pattern=r"^[0-9a-fA-F-]{36}$",
        description="Subscription ID (default: the Azure provider's, e.g. ARM_SUBSCRIPTION_ID or `az account`).",
    )
    resource_group: str | None = Field(
        default=None, description="Existing resource group the run's resources are created in (required)."
    )
    location: str | None = Field(default=None, description="Azure region (default: the resource group's).")
    image: str | None = Field(
        default=None,
        description=f"Container image with Python {PYTHON}, toolkit, cloudpickle and adlfs installed (required).",
    )
    cpu: float = Field(default=1.0, gt=0, le=4, description="CPU cores requested for the container.")
    memory: float = Field(default=1.5, gt=0, le=16, description="Memory requested for the container, in GB.")
    gpu_sku: Literal["K80", "P100", "V100"] | None = Field(default=None, description="GPU model, if any.")
    gpu_count: int | None = Field(default=None, ge=1, le=4, description="Number of GPUs (default 1 with gpu_sku).")
    identities: list[str] = Field(
        default_factory=list,
        description="Resource IDs of further user-assigned identities to attach; the first one pulls the "
        "environment image from the pool's ACR when set (else the run's own identity gets AcrPull on it).",
    )
    registry_resource_group: str | None = Field(
        default=None,
        description="Resource group of the pool's Azure Container Registry, where the run's identity is granted "
        "AcrPull (default: resource_group).",
    )
    subnet_ids: list[str] = Field(
        default_factory=list, description="Resource IDs of delegated subnets to run the container group in."
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables; toolkit.secret(...) values become secure environment variables.",
    )
    client_principal_type: Literal["User", "ServicePrincipal", "Group"] = Field(
        default="User",
        description="What the principal submitting runs is (ServicePrincipal in CI): it is granted read access "
        "to the run's container so it can read the result.",
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Tags on every resource of the run.")
    customizations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="JSON-6902 patches applied to the containerinstance.ContainerGroup arguments (snake_case), "
        "e.g. [{'op': 'add', 'path': '/priority', 'value': 'Spot'}].",
    )


class AzureContainerInstanceJob(JobConfiguration):
    subscription: str | None = None
    resource_group: str | None = None
    identities: list[str] = []
    registry_resource_group: str | None = None
    subnet_ids: list[str] = []
    client_principal_type: str = "User"
    env: dict[str, str | Secret] = {}
    labels: dict[str, str] = {}
    container_group: dict[str, Any]
    """Arguments of ``containerinstance.ContainerGroup`` (snake_case); the runner is the first container."""

    @model_validator(mode="after")
    def _check(self) -> AzureContainerInstanceJob:
        group = self.container_group
        unknown = sorted(set(group) - _GROUP_ARGUMENTS)
        if unknown:
            raise ValueError(
                f"container_group: ContainerGroup takes no argument {unknown[0]!r}; fix the pool's "
                f"'customizations'. Arguments: {', '.join(sorted(_GROUP_ARGUMENTS))}"
            )
        if group.get("restart_policy", "Never") != "Never":
            raise ValueError("container_group.restart_policy must be 'Never': a run's result is collected once")
        containers = group.get("containers")
        if not isinstance(containers, list) or not containers or not isinstance(containers[0], dict):
            raise ValueError("container_group.containers must list the runner container first")
        requests = containers[0].setdefault("resources", {}).setdefault("requests", {})
        gpu = requests.get("gpu")
        if gpu == {}:
            del requests["gpu"]
        elif isinstance(gpu, dict):
            if "sku" not in gpu:
                raise ValueError("gpu_count is set without gpu_sku; set both")
            gpu.setdefault("count", 1)
        for name in self.env:
            if name in RESERVED_ENV:
                raise ValueError(f"environment variable {name!r} is set by the toolkit; use another name")
        return self

    @property
    def runner_container(self) -> dict[str, Any]:
        return self.container_group["containers"][0]


def account_name(run_id: str) -> str:
    """Storage account names are 3-24 lowercase letters and digits, globally unique."""
    return f"tkrun{run_id}"


def management_api() -> RestClient:
    base = endpoint(MANAGEMENT_ENDPOINT_ENV, MANAGEMENT_ENDPOINT)
    return RestClient(base, azure_session())


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

    def environment_base(self, job: JobConfiguration) -> str | None:
        assert isinstance(job, AzureContainerInstanceJob)
        return job.runner_container.get("image")

    def check_image_registry(self, registry: ImageRegistry, job: JobConfiguration, pool_name: str) -> None:
        refuse_loopback(registry, self.name, pool_name)

    @classmethod
    def default_job_configuration(cls) -> dict[str, Any]:
        return {
            **placeholders(
                "subscription",
                "resource_group",
                "identities",
                "registry_resource_group",
                "subnet_ids",
                "client_principal_type",
                "env",
                "labels",
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

    def program(self, run: RunContext) -> None:
        job = run.job
        assert isinstance(job, AzureContainerInstanceJob)
        self.require(  # again: customizations may have dropped them
            {"image": job.runner_container.get("image"), "resource_group": job.resource_group},
            run.pool_name,
            self.required,
        )
        provider = azure.Provider("azure", subscription_id=job.subscription) if job.subscription else None
        opts = pulumi.ResourceOptions(provider=provider)
        client = azure.authorization.get_client_config_output(opts=pulumi.InvokeOutputOptions(provider=provider))
        subscription = job.subscription or client.subscription_id
        group_args = copy.deepcopy(job.container_group)
        location = group_args.get("location")
        tags = {**job.labels, **run.labels}
        rg = job.resource_group

        account = azure.storage.StorageAccount(
            "storage",
            account_name=account_name(run.run_id),
            resource_group_name=rg,
            location=location,
            kind="StorageV2",
            sku={"name": "Standard_LRS"},
            allow_blob_public_access=False,
            minimum_tls_version="TLS1_2",
            enable_https_traffic_only=True,
            tags=tags,
            opts=opts,
        )
        container = azure.storage.BlobContainer(
            "container",
            account_name=account.name,
            resource_group_name=rg,
            container_name=CONTAINER,
            public_access="None",
            opts=opts,
        )
        bundle = azure.storage.Blob(
            "bundle",
            account_name=account.name,
            resource_group_name=rg,
            container_name=container.name,
            blob_name=BUNDLE_NAME,
            type="Block",
            source=pulumi.FileAsset(str(run.bundle_path)),
            opts=opts,
        )
        uploads: list[pulumi.Resource] = [bundle]
        if run.files_path:
            uploads.append(
                azure.storage.Blob(
                    "files",
                    account_name=account.name,
                    resource_group_name=rg,
                    container_name=container.name,
                    blob_name=FILES_NAME,
                    type="Block",
                    source=pulumi.FileAsset(str(run.files_path)),
                    opts=opts,
                )
            )
        identity = azure.managedidentity.UserAssignedIdentity(
            "job-identity",
            resource_name_=f"toolkit-run-{run.run_id}",
            resource_group_name=rg,
            location=location,
            tags=tags,
            opts=opts,
        )
        grants = [
            azure.authorization.RoleAssignment(
                "job-blob-access",
                principal_id=identity.principal_id,
                principal_type="ServicePrincipal",
                role_definition_id=_role(subscription, BLOB_DATA_CONTRIBUTOR),
                scope=container.id,
                opts=opts,
            ),
            azure.authorization.RoleAssignment(
                "client-blob-read",
                principal_id=client.object_id,
                principal_type=job.client_principal_type,
                role_definition_id=_role(subscription, BLOB_DATA_READER),
                scope=container.id,
                opts=opts,
            ),
        ]

        env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in job.env.items() if not isinstance(v, Secret)]
        if run.storage_options:
            env.append({"name": STORAGE_OPTIONS_ENV, "value": json.dumps(run.storage_options)})
        env.append({"name": "AZURE_CLIENT_ID", "value": identity.client_id})
        secure = {RUN_KEY_ENV: run.run_key, **{k: v.reveal() for k, v in job.env.items() if isinstance(v, Secret)}}
        env += [{"name": k, "secure_value": pulumi.Output.secret(v)} for k, v in secure.items()]

        credentials = self._pull_credentials(run, job, identity, subscription, grants, opts)
        if credentials:
            group_args["image_registry_credentials"] = [*group_args.get("image_registry_credentials", []), *credentials]
        containers = group_args.pop("containers")
        containers[0] = {
            **containers[0],
            **({"image": run.image} if run.image else {}),  # the call's environment, pulled by digest
            "command": runner_command(run.storage_url, fanout=run.fanout),
            "environment_variables": [*containers[0].get("environment_variables", []), *env],
        }
        if run.fanout is not None:  # a map: the group's containers are workers claiming items
            workers = [{**containers[0], "name": worker_name(k)} for k in range(1, run.fanout.parallelism)]
            containers[1:1] = workers
            keys = azure.storage.list_storage_account_keys_output(
                resource_group_name=rg, account_name=account.name, opts=pulumi.InvokeOutputOptions(provider=provider)
            )
            upload_options = pulumi.Output.secret(
                pulumi.Output.all(account.name, keys.keys[0].value).apply(
                    lambda values: {"account_name": values[0], "account_key": values[1]}
                )
            )
            uploads += item_uploads(run, container, upload_options)
        group_args.update(
            container_group_name=f"toolkit-{run.run_id}",
            resource_group_name=rg,
            restart_policy="Never",
            tags=tags,
            identity={"type": "UserAssigned", "user_assigned_identities": [identity.id, *job.identities]},
        )
        if job.subnet_ids:
            group_args["subnet_ids"] = [{"id": subnet} for subnet in job.subnet_ids]
        group = azure.containerinstance.ContainerGroup(
            "job",
            containers=containers,
            **group_args,
            # restart_policy OnFailure would restart without a count and collect the result twice: a new
            # attempt (toolkit.retries) is a new group of the same name, so the old one goes first
            opts=pulumi.ResourceOptions(
                provider=provider,
                depends_on=[*uploads, *grants],
                replacement_trigger=run.attempt,
                delete_before_replace=True,
            ),
        )
        pulumi.export("container_group", group.id)

    @staticmethod
    def _pull_credentials(
        run: RunContext,
        job: AzureContainerInstanceJob,
        identity: azure.managedidentity.UserAssignedIdentity,
        subscription: pulumi.Input[str],
        grants: list[pulumi.Resource],
        opts: pulumi.ResourceOptions,
    ) -> list[dict[str, Any]]:
        """``imageRegistryCredentials`` for the environment image: the pool's credentials (a secret), or for
        an ACR an identity that may pull (the pool's first one, else the run's own, granted AcrPull)."""
        registry = run.image_registry
        if registry is None:
            return []
        if registry.has_credentials:
            password = pulumi.Output.secret(registry.password())
            return [{"server": registry.host, "username": registry.username, "password": password}]
        acr = registry.acr_name()
        if acr is None:
            return []  # a public image: nothing to sign in with
        if job.identities:
            return [{"server": registry.host, "identity": job.identities[0]}]
        scope = pulumi.Output.concat(
            "/subscriptions/", subscription, "/resourceGroups/", job.registry_resource_group or job.resource_group or "",
            "/providers/Microsoft.ContainerRegistry/registries/", acr,
        )
        grants.append(
            azure.authorization.RoleAssignment(
                "job-acr-pull",
                principal_id=identity.principal_id,
                principal_type="ServicePrincipal",
                role_definition_id=_role(subscription, ACR_PULL),
                scope=scope,
                opts=opts,
            )
        )
        return [{"server": registry.host, "identity": identity.id}]

    def watcher(self, run: RunContext, outputs: dict[str, Any]) -> JobWatcher:
        if getattr(run, "fanout", None) is None:
            return AzureContainerInstanceWatcher(outputs["container_group"])
        names = [worker_name(k) for k in range(run.fanout.parallelism)]
        return WorkersWatcher(
            [AzureContainerInstanceWatcher(outputs["container_group"], container=name) for name in names]
        )




def _role(subscription: pulumi.Input[str], role: str) -> pulumi.Output[str]:
    return pulumi.Output.concat(
        "/subscriptions/", subscription, "/providers/Microsoft.Authorization/roleDefinitions/", role
    )
