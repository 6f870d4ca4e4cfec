"""The azure_container_instance target's models: its job variables and its job (ContainerGroup arguments)."""

from __future__ import annotations

import inspect
import sys
from typing import Any, Literal

import pulumi_azure_native as azure
from pydantic import Field, model_validator

from toolkit.infra.fields import customizations_field, unset
from toolkit.infra.run import JobConfiguration
from toolkit.infra.variables import EnvironmentVariables
from toolkit.secretvalues import Secret

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
_GROUP_ARGUMENTS = frozenset(inspect.signature(azure.containerinstance.ContainerGroupArgs.__init__).parameters) - {
    "__self__"
}


class AzureContainerInstanceVariables(EnvironmentVariables):
    """Job variables of the Azure Container Instances target."""

    subscription: str | None = unset(
        "Subscription ID (default: the Azure provider's, e.g. ARM_SUBSCRIPTION_ID or `az account`).",
        pattern=r"^[0-9a-fA-F-]{36}$",
    )
    resource_group: str | None = unset("Existing resource group the run's resources are created in (required).")
    location: str | None = unset("Azure region (default: the resource group's).")
    image: str | None = unset(
        f"Container image with Python {PYTHON}, toolkit, cloudpickle and adlfs installed (required).",
    )
    cpu: float = Field(default=1.0, gt=0, le=4, description="CPU cores requested for the container.")
    memory: float = Field(default=1.5, gt=0, le=16, description="Memory requested for the container, in GB.")
    gpu_sku: Literal["K80", "P100", "V100"] | None = unset("GPU model, if any.")
    gpu_count: int | None = unset("Number of GPUs (default 1 with gpu_sku).", ge=1, le=4)
    identities: list[str] = Field(
        default_factory=list,
        description="Resource IDs of further user-assigned identities to attach; the first one pulls the "
        "environment image from the pool's ACR when set (else the run's own identity gets AcrPull on it).",
    )
    registry_resource_group: str | None = unset(
        "Resource group of the pool's Azure Container Registry, where the run's identity is granted "
        "AcrPull (default: resource_group).",
    )
    storage_resource_group: str | None = unset(
        "Resource group of the storage account of a shared-prefix pool, where the run's identity is "
        "granted access to its own prefix (default: resource_group).",
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
    customizations: list[dict[str, Any]] = customizations_field(
        "the containerinstance.ContainerGroup arguments (snake_case)",
        "[{'op': 'add', 'path': '/priority', 'value': 'Spot'}]",
    )


class AzureContainerInstanceJob(JobConfiguration):
    subscription: str | None = None
    resource_group: str | None = None
    identities: list[str] = []
    registry_resource_group: str | None = None
    storage_resource_group: str | None = None
    subnet_ids: list[str] = []
    client_principal_type: str = "User"
    env: dict[str, str | Secret] = {}
    labels: dict[str, str] = {}
    container_group: dict[str, Any]
    """Arguments of ``containerinstance.ContainerGroup`` (snake_case); the runner is the first container."""

    reserved_env = (*JobConfiguration.reserved_env, "AZURE_CLIENT_ID")
    runner_path = ("container_group", "containers")

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
        requests = self.runner.setdefault("resources", {}).setdefault("requests", {})
        gpu = requests.get("gpu")
        if gpu == {}:
            del requests["gpu"]
        elif isinstance(gpu, dict):
            if "sku" not in gpu:
                raise ValueError("gpu_count is set without gpu_sku; set both")
            gpu.setdefault("count", 1)
        return self
