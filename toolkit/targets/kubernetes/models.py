"""The kubernetes target's models: its job variables and its job (a ``batch/v1`` Job manifest)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from toolkit.infra.fields import customizations_field, unset
from toolkit.infra.run import JobConfiguration
from toolkit.infra.variables import EnvironmentVariables
from toolkit.secretvalues import Secret

CPU_QUANTITY = r"^(\d+(\.\d{1,3})?|\d+m)$"
MEMORY_QUANTITY = r"^\d+(\.\d+)?(k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SECRET_REF = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-._a-zA-Z0-9]+$")


class Toleration(BaseModel):
    """One pod toleration, in the Kubernetes API's own field names."""

    model_config = ConfigDict(extra="forbid")

    key: str | SkipJsonSchema[None] = None
    operator: Literal["Exists", "Equal"] | SkipJsonSchema[None] = None
    value: str | SkipJsonSchema[None] = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | SkipJsonSchema[None] = None
    tolerationSeconds: int | SkipJsonSchema[None] = None


class KubernetesVariables(EnvironmentVariables):
    """Job variables of the Kubernetes target."""

    image: str | None = unset(
        "Container image with the job's Python, the toolkit, cloudpickle and the fsspec "
        "driver of the pool's storage (s3fs, gcsfs or adlfs) installed (required).",
    )
    namespace: str = Field(
        default="default",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="Namespace of the Job and its ServiceAccount, Role and Secret.",
    )
    context: str | None = unset("kubeconfig context of the cluster (default: the current context, or in-cluster).")
    service_account_name: str | None = unset(
        "An existing ServiceAccount to run as, which must be able to use the pool's storage "
        "(default: a per-run one carrying service_account_annotations).",
    )
    service_account_annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations of the per-run ServiceAccount that give the pod access to the pool's storage, "
        "e.g. {'eks.amazonaws.com/role-arn': 'arn:aws:iam::123456789012:role/toolkit-runs'} (IRSA) or "
        "{'iam.gke.io/gcp-service-account': 'runs@project.iam.gserviceaccount.com'} (GKE workload identity).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = unset(
        "Image pull policy of the container (default: Kubernetes' own rule).",
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Names of Secrets in the namespace holding private registry credentials."
    )
    cpu: str | None = unset(
        "CPU limit of the container, e.g. '8' or '500m'; also its request unless cpu_request is set.",
        pattern=CPU_QUANTITY,
    )
    memory: str | None = unset(
        "Memory limit of the container, e.g. '64Gi'; also its request unless memory_request is set.",
        pattern=MEMORY_QUANTITY,
    )
    cpu_request: str | None = unset("CPU request of the container when it differs from cpu.", pattern=CPU_QUANTITY)
    memory_request: str | None = unset(
        "Memory request of the container when it differs from memory.",
        pattern=MEMORY_QUANTITY,
    )
    gpu: int | None = unset("NVIDIA GPUs for the container (nvidia.com/gpu).", ge=1)
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels the pod must run on, e.g. {'cloud.google.com/gke-nodepool': 'gpu'}.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        description="Pod tolerations, e.g. [{'key': 'nvidia.com/gpu', 'operator': 'Exists', 'effect': 'NoSchedule'}].",
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Labels of the Job and its pod.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations of the Job and its pod.")
    backoff_limit: int = Field(
        default=0,
        ge=0,
        description="The Job's backoffLimit: pods started again after one ended without a result (deleted, evicted, "
        "node lost); a Python exception is a result, never retried. This target's own name for 'retries'.",
    )
    active_deadline_seconds: int | None = unset("Seconds after which Kubernetes itself stops the Job.", ge=1)
    ttl_seconds_after_finished: int | None = Field(
        default=3600,
        ge=0,
        description="Seconds Kubernetes keeps a finished Job before deleting it, should the run's client die.",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables of the container; toolkit.secret() values go through a Kubernetes Secret.",
    )
    secret_env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables read from existing Kubernetes Secrets: NAME -> 'secret-name/key'.",
    )
    python: str = Field(default="python3", description="The Python interpreter in the image.")
    customizations: list[dict[str, Any]] = customizations_field(
        "the Job manifest",
        "[{'op': 'add', 'path': '/spec/template/spec/priorityClassName', 'value': 'batch-low'}]",
    )


class KubernetesJob(JobConfiguration):
    context: str | None = None
    service_account_annotations: dict[str, str] = {}
    image_pull_secrets: list[str] = []
    env: dict[str, str | Secret] = {}
    secret_env: dict[str, str] = {}
    python: str = "python3"
    job_manifest: dict[str, Any]
    """A ``batch/v1`` Job; its first container runs the runner."""

    @property
    def namespace(self) -> str:
        return str(self.job_manifest.get("metadata", {}).get("namespace") or "default")

    @property
    def pod_spec(self) -> dict[str, Any]:
        return self.job_manifest["spec"]["template"]["spec"]

    env_fields = ("env", "secret_env")
    runner_path = ("job_manifest", "spec", "template", "spec", "containers")

    @model_validator(mode="after")
    def _check(self) -> KubernetesJob:
        manifest = self.job_manifest
        if manifest.get("apiVersion") != "batch/v1" or manifest.get("kind") != "Job":
            raise ValueError("job_manifest must be a batch/v1 Job")
        for name in [*self.env, *self.secret_env]:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
        for name, ref in self.secret_env.items():
            if not _SECRET_REF.match(ref):
                raise ValueError(f"secret_env[{name!r}] = {ref!r} must be 'secret-name/key'")
        if self.service_account_annotations and self.pod_spec.get("serviceAccountName"):
            raise ValueError(
                "service_account_annotations apply to the per-run ServiceAccount only; annotate your "
                f"existing ServiceAccount {self.pod_spec['serviceAccountName']!r} instead"
            )
        return self
