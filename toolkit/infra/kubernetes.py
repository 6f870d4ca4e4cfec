"""The ``kubernetes`` target: the job is a ``batch/v1`` Job on a Kubernetes cluster.

Bucket = a prefix of the pool's object storage (``s3://``, ``gs://``, ``az://``):
``RunStorage`` uploads the bundle into ``<pool url>/<run-id>`` and removes the
prefix on destroy. IAM = a per-run ServiceAccount whose annotations carry the
cloud identity that may use that storage (IRSA's role ARN, GKE workload
identity ...), and a Role/RoleBinding that lets it read exactly the run's own
Secret and nothing else in the cluster (the pod mounts no API token at all; the
Role bounds the identity should a customization mount one). The run key and ``toolkit.secret`` env values live in that Secret
(written from ``pulumi.Output.secret``) and reach the container only through
``secretKeyRef``; storage credentials never travel at all, the pod gets them
from its identity. Job = the pool's Job manifest (placeholders filled, JSON-6902
``customizations`` applied) with the runner as its first container, created
with ``pulumi.com/skipAwait`` so ``up`` returns once the Job exists.

The watcher follows the Job and its pods through the Kubernetes API: the Job's
conditions decide success and failure, the newest pod explains it (exit code,
OOMKilled, an image that cannot be pulled, a missing Secret) and supplies logs.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from toolkit.environments.registry import registry_of
from toolkit.environments.variables import EnvironmentVariables
from toolkit.errors import ConfigError, TargetUnavailableError
from toolkit.infra.base import (
    JobConfiguration,
    JobStatus,
    JobWatcher,
    RunContext,
    Target,
    placeholders,
    runner_command,
)
from toolkit.infra.storage import RunStorage
from toolkit.infra.synonyms import (
    PREFECT_COMMON,
    kubernetes_cpu,
    kubernetes_memory,
    no_counterpart,
    prefect_retries,
    renamed,
)
from toolkit.runner import RUN_KEY_ENV, STORAGE_OPTIONS_ENV
from toolkit.secretvalues import Secret

SKIP_AWAIT = "pulumi.com/skipAwait"
DELETION_POLICY = "pulumi.com/deletionPropagationPolicy"
"""Foreground: destroying the Job deletes its pods first, so a cancelled run stops running."""
RUN_KEY_DATA = "run-key"
POD_LIST_REUSE_SECONDS = 0.5
"""A map's pod list serves every read within this long (one list per poll, not one per read)."""
INDEX_ENV = "JOB_COMPLETION_INDEX"
"""Where an Indexed Job's pod finds its completion index: the map item it runs."""
PULL_SECRET_SUFFIX = "-pull"
"""The per-run ``kubernetes.io/dockerconfigjson`` Secret holding the pool registry's credentials."""
RESERVED_ENV = (RUN_KEY_ENV, STORAGE_OPTIONS_ENV)
STORAGE_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss")
CPU_QUANTITY = r"^(\d+(\.\d{1,3})?|\d+m)$"
MEMORY_QUANTITY = r"^\d+(\.\d+)?(k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SECRET_REF = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-._a-zA-Z0-9]+$")

_IMAGE_WAITING_REASONS = ("ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName")
_CONFIG_WAITING_REASONS = ("CreateContainerConfigError", "CreateContainerError")
"""Waiting reasons the kubelet never recovers from by itself: the run fails at once."""
_TRANSIENT_CONFIG_MESSAGES = ("failed to sync", "timed out waiting for the condition")
"""A config error with these words is the kubelet's secret/config-map cache lagging (a loaded node):
it retries by itself, and the Secret does exist, so the run keeps waiting."""
_UNAUTHORIZED_PULL_MESSAGES = ("401 Unauthorized", "unauthorized", "authorization failed", "no basic auth credentials")
PULL_SECRET_GRACE_SECONDS = 45.0
"""A pod that names pull Secrets yet was refused its image for want of credentials may have met the
same lag: the kubelet then pulls without the Secret it could not read yet. It pulls again after its
back-off (10 s, then 20 s), so such a refusal is final only this long after the pod was created."""


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

    image: str | None = Field(
        default=None,
        description="Container image with the job's Python, the toolkit, cloudpickle and the fsspec "
        "driver of the pool's storage (s3fs, gcsfs or adlfs) installed (required).",
    )
    namespace: str = Field(
        default="default",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="Namespace of the Job and its ServiceAccount, Role and Secret.",
    )
    context: str | None = Field(
        default=None, description="kubeconfig context of the cluster (default: the current context, or in-cluster)."
    )
    service_account_name: str | None = Field(
        default=None,
        description="An existing ServiceAccount to run as, which must be able to use the pool's storage "
        "(default: a per-run one carrying service_account_annotations).",
    )
    service_account_annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations of the per-run ServiceAccount that give the pod access to the pool's storage, "
        "e.g. {'eks.amazonaws.com/role-arn': 'arn:aws:iam::123456789012:role/toolkit-runs'} (IRSA) or "
        "{'iam.gke.io/gcp-service-account': 'runs@project.iam.gserviceaccount.com'} (GKE workload identity).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Image pull policy of the container (default: Kubernetes' own rule)."
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Names of Secrets in the namespace holding private registry credentials."
    )
    cpu: str | None = Field(
        default=None,
        pattern=CPU_QUANTITY,
        description="CPU limit of the container, e.g. '8' or '500m'; also its request unless cpu_request is set.",
    )
    memory: str | None = Field(
        default=None,
        pattern=MEMORY_QUANTITY,
        description="Memory limit of the container, e.g. '64Gi'; also its request unless memory_request is set.",
    )
    cpu_request: str | None = Field(
        default=None, pattern=CPU_QUANTITY, description="CPU request of the container when it differs from cpu."
    )
    memory_request: str | None = Field(
        default=None,
        pattern=MEMORY_QUANTITY,
        description="Memory request of the container when it differs from memory.",
    )
    gpu: int | None = Field(default=None, ge=1, description="NVIDIA GPUs for the container (nvidia.com/gpu).")
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
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Seconds after which Kubernetes itself stops the Job."
    )
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
    customizations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="JSON-6902 patches applied to the Job manifest, e.g. [{'op': 'add', "
        "'path': '/spec/template/spec/priorityClassName', 'value': 'batch-low'}].",
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

    @model_validator(mode="after")
    def _check(self) -> KubernetesJob:
        manifest = self.job_manifest
        if manifest.get("apiVersion") != "batch/v1" or manifest.get("kind") != "Job":
            raise ValueError("job_manifest must be a batch/v1 Job")
        containers = manifest.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
        if not isinstance(containers, list) or not containers or not isinstance(containers[0], dict):
            raise ValueError("job_manifest.spec.template.spec.containers must list the runner container first")
        for name in [*self.env, *self.secret_env]:
            if name in RESERVED_ENV:
                raise ValueError(f"environment variable {name!r} is set by the toolkit; use another name")
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
        both = sorted(set(self.env) & set(self.secret_env))
        if both:
            raise ValueError(f"{both} are set in both env and secret_env; keep one")
        for name, ref in self.secret_env.items():
            if not _SECRET_REF.match(ref):
                raise ValueError(f"secret_env[{name!r}] = {ref!r} must be 'secret-name/key'")
        if self.service_account_annotations and self.pod_spec.get("serviceAccountName"):
            raise ValueError(
                "service_account_annotations apply to the per-run ServiceAccount only; annotate your "
                f"existing ServiceAccount {self.pod_spec['serviceAccountName']!r} instead"
            )
        return self


def _run_name(run_id: str) -> str:
    return f"toolkit-{run_id}"


def _container_env(job: KubernetesJob, run: RunContext, secret_name: str) -> list[dict[str, Any]]:
    """The runner's environment: plain values inline, secrets only as ``secretKeyRef``."""

    def from_secret(name: str, secret: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}

    env: list[dict[str, Any]] = []
    for name, value in job.env.items():
        env.append(
            from_secret(name, secret_name, f"env.{name}")
            if isinstance(value, Secret)
            else {"name": name, "value": value}
        )
    for name, ref in job.secret_env.items():
        secret, _, key = ref.partition("/")
        env.append(from_secret(name, secret, key))
    env.append({"name": STORAGE_OPTIONS_ENV, "value": json.dumps(run.storage_options, sort_keys=True)})
    env.append(from_secret(RUN_KEY_ENV, secret_name, RUN_KEY_DATA))
    return env


def run_manifest(job: KubernetesJob, run: RunContext, service_account: str) -> dict[str, Any]:
    """The pool's Job manifest completed for this run: names, labels, identity, runner command, env."""
    manifest = copy.deepcopy(job.job_manifest)
    metadata = manifest.setdefault("metadata", {})
    metadata.setdefault("name", _run_name(run.run_id))
    metadata["namespace"] = job.namespace
    metadata["labels"] = {**metadata.get("labels", {}), **run.labels}
    metadata["annotations"] = {**metadata.get("annotations", {}), SKIP_AWAIT: "true", DELETION_POLICY: "foreground"}
    template = manifest["spec"]["template"]
    template_metadata = template.setdefault("metadata", {})
    template_metadata["labels"] = {**template_metadata.get("labels", {}), **run.labels}
    pod = template["spec"]
    pod["serviceAccountName"] = service_account
    pull_secrets = [*job.image_pull_secrets]
    if run.image_registry is not None and run.image_registry.has_credentials:
        pull_secrets.append(_run_name(run.run_id) + PULL_SECRET_SUFFIX)
    if pull_secrets:
        pod["imagePullSecrets"] = [*pod.get("imagePullSecrets", []), *({"name": n} for n in pull_secrets)]
    runner = pod["containers"][0]
    if run.image:  # the call's environment, pushed to the pool's registry: pulled by digest
        runner["image"] = run.image
    runner["command"] = runner_command(run.storage_url, job.python, fanout=run.fanout, index_env=INDEX_ENV)
    runner["env"] = [*runner.get("env", []), *_container_env(job, run, _run_name(run.run_id))]
    if run.fanout is not None:
        _index(manifest["spec"], run.fanout.count, run.fanout.parallelism)
    return manifest


def _index(spec: dict[str, Any], count: int, parallelism: int) -> None:
    """A map's Job: Indexed, one completion per item, ``parallelism`` pods at once.

    The Job's ``backoffLimit`` becomes ``backoffLimitPerIndex``: an item whose pod
    died of an infrastructure failure is retried on its own, and a failed item
    does not stop the others (the Job ends once every index succeeded or failed).
    """
    spec["completionMode"] = "Indexed"
    spec["completions"] = count
    spec["parallelism"] = parallelism
    spec["backoffLimitPerIndex"] = int(spec.pop("backoffLimit", 0) or 0)


# -- watching ---------------------------------------------------------------------------


def _failure_of_pod(pod: Any, container: str) -> tuple[int | None, str] | None:
    """``(exit code, reason)`` if the pod's runner container ended badly or can never start."""
    status = pod.status
    for state in [*(status.init_container_statuses or []), *(status.container_statuses or [])]:
        waiting = state.state.waiting if state.state else None
        if waiting and waiting.reason in _IMAGE_WAITING_REASONS and not _pull_may_recover(pod, waiting.message):
            registry = registry_of(state.image)
            return None, (
                f"the pod could not pull its image {state.image!r} from registry {registry!r} ({waiting.reason}: "
                f"{waiting.message}). To fix: check that the image exists there (an environment image deleted "
                f"from the registry behind its stack: `toolkit env prune`, then call again to push it anew), that "
                f"the cluster's nodes can reach {registry!r}, and that they may pull from it (image_pull_secrets, "
                "or username and password_env in the pool's image_registry)"
            )
        if (
            waiting
            and waiting.reason in _CONFIG_WAITING_REASONS
            and not any(words in (waiting.message or "") for words in _TRANSIENT_CONFIG_MESSAGES)
        ):
            return None, (
                f"the container {state.name!r} could not be created ({waiting.reason}: {waiting.message}). "
                f"A Secret or key named in secret_env is probably missing from namespace {pod.metadata.namespace!r}"
            )
    runner = next((c for c in status.container_statuses or [] if c.name == container), None)
    terminated = runner.state.terminated if runner and runner.state else None
    code = terminated.exit_code if terminated else None
    if status.phase == "Failed" and status.reason:  # the kubelet's verdict (Evicted, DeadlineExceeded ...)
        return code, f"the pod failed ({status.reason}: {status.message})"
    if terminated and code != 0:
        if terminated.reason == "OOMKilled":
            return (
                code,
                "the container was killed for exceeding its memory limit (OOMKilled); raise the 'memory' job variable",
            )
        detail = f"{terminated.reason}: {terminated.message}" if terminated.message else terminated.reason
        return code, f"the container exited with code {code} ({detail})"
    if status.phase == "Failed":
        return code, "the pod failed without a reason from the kubelet"
    return None


def _pull_may_recover(pod: Any, message: str | None) -> bool:
    """True while an image pull refused for want of credentials may still succeed: the pod names pull
    Secrets and is younger than ``PULL_SECRET_GRACE_SECONDS`` (see there)."""
    if not pod.spec.image_pull_secrets or not any(words in (message or "") for words in _UNAUTHORIZED_PULL_MESSAGES):
        return False
    created = pod.metadata.creation_timestamp
    return created is not None and time.time() - created.timestamp() < PULL_SECRET_GRACE_SECONDS


def _pending_reason(pod: Any) -> str | None:
    for condition in pod.status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False":
            return f"{condition.reason}: {condition.message}"
    return None


def job_status(job: Any, pods: list[Any], container: str) -> JobStatus:
    """The run's state from the Job and its pods as the API returns them (``V1Job``, ``V1Pod``).

    ``container`` names the runner container: only its exit decides the outcome.
    """
    status = _job_status(job, pods, container)
    # The Job controller retries by itself (backoffLimit = `retries`): each failed pod is one attempt.
    status.attempt = min((job.status.failed or 0) + 1, (job.spec.backoff_limit or 0) + 1)
    return status


def _failed_for(job: Any) -> str | None:
    """The reason of the Job's Failed condition (BackoffLimitExceeded, DeadlineExceeded ...), if it failed."""
    failed = next((c for c in job.status.conditions or [] if c.type == "Failed" and c.status == "True"), None)
    return failed.reason if failed else None


def _job_status(job: Any, pods: list[Any], container: str) -> JobStatus:
    pods = sorted(pods, key=lambda pod: pod.metadata.creation_timestamp)
    latest = pods[-1] if pods else None
    failure = _failure_of_pod(latest, container) if latest is not None else None
    conditions = {c.type: c for c in job.status.conditions or [] if c.status == "True"}
    if "Complete" in conditions:
        return JobStatus(state="succeeded", exit_code=0)
    if "Failed" in conditions:
        if failure:
            return JobStatus(state="failed", exit_code=failure[0], reason=failure[1])
        condition = conditions["Failed"]
        hint = "; raise active_deadline_seconds" if condition.reason == "DeadlineExceeded" else ""
        return JobStatus(state="failed", reason=f"the Job failed ({condition.reason}: {condition.message}){hint}")
    if latest is None:
        return JobStatus(state="pending")
    if failure and latest.status.phase != "Failed":
        return JobStatus(state="failed", exit_code=failure[0], reason=failure[1])  # never recovers by itself
    phase = latest.status.phase
    if phase == "Succeeded":
        return JobStatus(state="succeeded", exit_code=0)
    if phase == "Failed":
        if (job.status.failed or 0) > (job.spec.backoff_limit or 0):
            assert failure is not None
            return JobStatus(state="failed", exit_code=failure[0], reason=failure[1])
        return JobStatus(state="pending", reason=f"retrying after: {failure[1] if failure else phase}")
    if phase == "Running":
        return JobStatus(state="running")
    return JobStatus(state="pending", reason=_pending_reason(latest))


def indexed_job_status(job: Any, pods: list[Any], container: str) -> JobStatus:
    """A map's Indexed Job: decided by the Job's conditions alone, since one pod's failure fails
    only its item (retried up to ``backoffLimitPerIndex``); a pod that can never start fails it all."""
    conditions = {c.type: c for c in job.status.conditions or [] if c.status == "True"}
    failures = [(pod, _failure_of_pod(pod, container)) for pod in pods]
    if "Complete" in conditions:
        return JobStatus(state="succeeded", exit_code=0)
    if "Failed" in conditions:
        condition = conditions["Failed"]
        reason = f"the Job failed ({condition.reason}: {condition.message})"
        failed = next((failure for pod, failure in failures if failure and pod.status.phase == "Failed"), None)
        if failed:
            reason += f"; a failed item's pod: {failed[1]}"
        return JobStatus(state="failed", exit_code=failed[0] if failed else None, reason=reason)
    for pod, failure in failures:
        if failure and failure[0] is None and pod.status.phase not in ("Failed", "Succeeded"):
            return JobStatus(state="failed", reason=failure[1])  # an image or a Secret that never comes
    return JobStatus(state="running" if job.status.active else "pending")


class KubernetesWatcher(JobWatcher):
    """Follows one Job and its pods; ``connect`` builds the API clients on first use."""

    def __init__(
        self,
        namespace: str,
        job_name: str,
        container: str,
        connect: Callable[[], tuple[Any, Any]],
        indexed: bool = False,
    ) -> None:
        self._indexed = indexed
        self._namespace = namespace
        self._job_name = job_name
        self._container = container
        self._connect = connect
        self._apis: tuple[Any, Any] | None = None
        self._log_offsets: dict[str, int] = {}
        self._logs_complete: set[str] = set()
        self._pod_failures: dict[str, str | None] = {}
        """Every pod seen, with why it failed (None: not failed, as far as seen); explains retries."""
        self._removed_pods: set[str] = set()
        """Pods deleted (or gone) before they finished: their removal is why they failed."""
        self._listed: tuple[float, list[Any]] | None = None

    def _clients(self) -> tuple[Any, Any]:
        if self._apis is None:
            self._apis = self._connect()
        return self._apis

    def _pods(self) -> list[Any]:
        """The Job's pods. A map's Indexed Job has one per item: the list (slow to decode for hundreds
        of pods, on the client's CPU) is reused by the log read and the status of the same poll."""
        if self._indexed and self._listed is not None and time.monotonic() - self._listed[0] < POD_LIST_REUSE_SECONDS:
            return self._listed[1]
        core, _ = self._clients()
        pods = core.list_namespaced_pod(self._namespace, label_selector=f"job-name={self._job_name}").items
        pods = sorted(pods, key=lambda pod: pod.metadata.creation_timestamp)
        self._listed = (time.monotonic(), pods)
        return pods

    def status(self) -> JobStatus:
        from kubernetes.client.exceptions import ApiException

        _, batch = self._clients()
        try:
            job = batch.read_namespaced_job_status(self._job_name, self._namespace)
        except ApiException as exc:
            if exc.status == 404:
                return JobStatus(
                    state="failed",
                    reason=f"the Job {self._namespace}/{self._job_name} was deleted before it finished",
                )
            raise
        pods = self._pods()
        if self._indexed:  # a map: one item's pod failing is that item's (retried per index), not the Job's
            return indexed_job_status(job, pods, self._container)
        last_failure = self._note_failures(pods)
        status = job_status(job, pods, self._container)
        status.previous_failure = last_failure
        if status.state != "failed" or _failed_for(job) == "DeadlineExceeded":
            return status  # (the Job controller deletes the pods of a Job past its deadline itself)
        newest = next(reversed(self._pod_failures), None)
        if newest in self._removed_pods:  # "exited with code 143" or BackoffLimitExceeded alone say less
            detail = f"; {status.reason}" if pods and status.reason else ""
            status.reason = f"{self._pod_failures[newest]}{detail}"
        elif not pods and last_failure:
            status.reason = last_failure
        return status

    def _note_failures(self, pods: list[Any]) -> str | None:
        """Record why pods failed -- a pod deleted, evicted or lost with its node vanishes from the
        API soon after -- and return the latest such reason."""
        present = {pod.metadata.name for pod in pods}
        for name, failure in list(self._pod_failures.items()):
            if name not in present and failure is None:
                self._removed_pods.add(name)
                self._pod_failures[name] = (
                    f"its pod {name} vanished before it finished (deleted, evicted or its node lost)"
                )
        for pod in pods:
            name = pod.metadata.name
            if pod.status.phase == "Succeeded":
                self._pod_failures[name] = None
            elif self._pod_failures.get(name):
                continue  # the first cause seen is the one that explains it (deleted, then exit 143)
            elif pod.metadata.deletion_timestamp is not None:
                self._removed_pods.add(name)
                self._pod_failures[name] = f"its pod {name} was deleted while it ran (by hand, a drain or node loss)"
            elif pod.status.phase == "Failed":
                failure = _failure_of_pod(pod, self._container)
                self._pod_failures[name] = failure[1] if failure else "its pod failed"
            else:
                self._pod_failures.setdefault(name, None)
        failures = [failure for failure in self._pod_failures.values() if failure]
        return failures[-1] if failures else None

    def read_logs(self) -> str:
        from kubernetes.client.exceptions import ApiException

        core, _ = self._clients()
        chunks = []
        for pod in self._pods():
            name = pod.metadata.name
            if name in self._logs_complete:
                continue
            finished = pod.status.phase in ("Succeeded", "Failed")
            try:
                text = core.read_namespaced_pod_log(name, self._namespace, container=self._container)
            except ApiException as exc:
                if exc.status in (400, 404):  # container not started yet, or pod gone
                    continue
                raise
            offset = self._log_offsets.get(name, 0)
            chunks.append(text[offset:])
            self._log_offsets[name] = len(text)
            if finished:
                self._logs_complete.add(name)
        return "".join(chunks)


def connect(context: str | None) -> tuple[Any, Any]:
    """CoreV1Api and BatchV1Api for ``context`` of the kubeconfig, or the in-cluster config."""
    from kubernetes import client, config

    configuration = _configuration()
    try:  # KUBECONFIG is read now, not when the kubernetes package was imported
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), context=context,
                                client_configuration=configuration)
    except config.ConfigException as exc:
        if context:
            raise TargetUnavailableError(
                f"kubeconfig context {context!r} cannot be loaded ({exc}). Check KUBECONFIG and "
                "`kubectl config get-contexts`"
            ) from None
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            raise TargetUnavailableError(
                f"no Kubernetes cluster is configured ({exc}). Set KUBECONFIG or the 'context' job variable"
            ) from None
    api = client.ApiClient(configuration)
    return client.CoreV1Api(api), client.BatchV1Api(api)


def _configuration() -> Any:
    """A client configuration that bypasses ``HTTPS_PROXY`` for the hosts in ``NO_PROXY``.

    The kubernetes package (35.0.0) reads NO_PROXY in ``Configuration()`` and
    then resets it to None, so a cluster listed there was still dialled
    through the proxy; set it again, before the client's connection pool is made.
    """
    from kubernetes import client

    configuration = client.Configuration()
    if configuration.no_proxy is None:
        configuration.no_proxy = os.environ.get("no_proxy") or os.environ.get("NO_PROXY")
    return configuration


# -- the target ---------------------------------------------------------------------------


class KubernetesTarget(Target):
    """Run the function as a Kubernetes Job."""

    name = "kubernetes"
    native_retries = "backoff_limit"  # the Job controller starts a new pod; a pod that wrote a result exits 0
    plugin_packages = ("pulumi_kubernetes",)
    synonyms = {
        **PREFECT_COMMON,
        **prefect_retries("backoff_limit"),
        "memory": renamed(
            "memory", "an integer is MiB, as Prefect's examples write it: 64000 -> '64000Mi'", kubernetes_memory
        ),
        "memory_limit": renamed("memory", "Prefect's name; an integer is MiB", kubernetes_memory),
        "memory_request": renamed("memory_request", "an integer is MiB", kubernetes_memory),
        "cpu": renamed("cpu", "a number of cores becomes a quantity: 2 -> '2'", kubernetes_cpu),
        "cpu_limit": renamed("cpu", "Prefect's name; a number of cores becomes a quantity", kubernetes_cpu),
        "cpu_request": renamed("cpu_request", "a number of cores becomes a quantity", kubernetes_cpu),
        "finished_job_ttl": renamed("ttl_seconds_after_finished"),
        "gpus": renamed("gpu", "a number of NVIDIA GPUs"),
        "job_watch_timeout_seconds": no_counterpart(
            "the toolkit follows the Job until it ends; bound a run with timeout (seconds)"
        ),
        "pod_watch_timeout_seconds": no_counterpart(
            "a pod that cannot start (image, Secret, scheduling) fails the run with the reason; "
            "bound a run with timeout"
        ),
        "stream_output": no_counterpart("pod logs always stream to the caller (`toolkit runs logs` replays them)"),
        "cluster_config": no_counterpart(
            "a Prefect block holding a kubeconfig; the toolkit uses your kubeconfig: pick a context with context"
        ),
    }
    extra = "kubernetes"
    variables_model = KubernetesVariables
    job_model = KubernetesJob
    customization_root = "/job_manifest"
    required = ("image",)
    storage_schemes = STORAGE_SCHEMES
    unsupported = {}
    environment = "image"
    images_from_registry = True

    def environment_base(self, job: JobConfiguration) -> str | None:
        assert isinstance(job, KubernetesJob)
        return job.pod_spec["containers"][0].get("image")

    @classmethod
    def default_job_configuration(cls) -> dict[str, Any]:
        return {
            **placeholders(
                "context",
                "service_account_annotations",
                "image_pull_secrets",
                "env",
                "secret_env",
                "python",
            ),
            "job_manifest": {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {
                    "name": "toolkit-{{ run_id }}",
                    "namespace": "{{ namespace }}",
                    "labels": "{{ labels }}",
                    "annotations": "{{ annotations }}",
                },
                "spec": {
                    "backoffLimit": "{{ backoff_limit }}",
                    "activeDeadlineSeconds": "{{ active_deadline_seconds }}",
                    "ttlSecondsAfterFinished": "{{ ttl_seconds_after_finished }}",
                    "template": {
                        "metadata": {"labels": "{{ labels }}", "annotations": "{{ annotations }}"},
                        "spec": {
                            "restartPolicy": "Never",
                            "serviceAccountName": "{{ service_account_name }}",
                            "automountServiceAccountToken": False,
                            "nodeSelector": "{{ node_selector }}",
                            "tolerations": "{{ tolerations }}",
                            "containers": [
                                {
                                    "name": "runner",
                                    "image": "{{ image }}",
                                    "imagePullPolicy": "{{ image_pull_policy }}",
                                    "resources": {
                                        "requests": {"cpu": "{{ cpu_request }}", "memory": "{{ memory_request }}"},
                                        "limits": {
                                            "cpu": "{{ cpu }}",
                                            "memory": "{{ memory }}",
                                            "nvidia.com/gpu": "{{ gpu }}",
                                        },
                                    },
                                    "securityContext": {
                                        "allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]},
                                    },
                                }
                            ],
                        },
                    },
                },
            },
        }

    def per_run_storage_url(self, run_id: str) -> str:
        raise ConfigError(
            "the kubernetes target provisions no storage of its own: its pool needs storage.url with "
            "mode 'shared-prefix', an object-storage prefix the pods can read and write (s3://, gs:// "
            "or az://). Recreate the pool with it, e.g. `toolkit pool create gpu --type kubernetes "
            "--storage s3://bucket/prefix`"
        )

    def program(self, run: RunContext) -> None:
        job = run.job
        assert isinstance(job, KubernetesJob)
        name = _run_name(run.run_id)
        namespace = job.namespace
        provider = k8s.Provider("cluster", context=job.context)
        in_cluster = pulumi.ResourceOptions(provider=provider)

        def metadata(**extra: Any) -> dict[str, Any]:
            return {"name": name, "namespace": namespace, "labels": run.labels, **extra}

        storage = RunStorage.of_run("run-storage", run)
        secret_data = {RUN_KEY_DATA: pulumi.Output.secret(run.run_key)}
        for env_name, value in job.env.items():
            if isinstance(value, Secret):
                secret_data[f"env.{env_name}"] = pulumi.Output.secret(value.reveal())
        secret = k8s.core.v1.Secret(
            "run-secret", metadata=metadata(), type="Opaque", string_data=secret_data, opts=in_cluster
        )

        needs: list[pulumi.Resource] = [storage, secret]
        if run.image_registry is not None and run.image_registry.has_credentials:
            needs.append(
                k8s.core.v1.Secret(
                    "pull-secret",
                    metadata=metadata(name=name + PULL_SECRET_SUFFIX),
                    type="kubernetes.io/dockerconfigjson",
                    string_data={".dockerconfigjson": pulumi.Output.secret(run.image_registry.dockerconfigjson())},
                    opts=in_cluster,
                )
            )
        account = job.pod_spec.get("serviceAccountName")
        if not account:
            account = name
            needs.append(
                k8s.core.v1.ServiceAccount(
                    "service-account",
                    metadata=metadata(annotations=job.service_account_annotations),
                    automount_service_account_token=False,
                    opts=in_cluster,
                )
            )
        role = k8s.rbac.v1.Role(
            "run-role",
            metadata=metadata(),
            rules=[{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [name], "verbs": ["get"]}],
            opts=in_cluster,
        )
        needs.append(
            k8s.rbac.v1.RoleBinding(
                "run-role-binding",
                metadata=metadata(),
                role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                subjects=[{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
                opts=pulumi.ResourceOptions(provider=provider, depends_on=[role]),
            )
        )
        manifest = run_manifest(job, run, account)
        k8s.batch.v1.Job(
            "job",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(provider=provider, depends_on=needs),
        )
        pulumi.export("namespace", namespace)
        pulumi.export("job_name", manifest["metadata"]["name"])
        pulumi.export("container", manifest["spec"]["template"]["spec"]["containers"][0]["name"])

    def watcher(self, run: RunContext, outputs: dict[str, Any]) -> JobWatcher:
        job = run.job
        assert isinstance(job, KubernetesJob)
        return KubernetesWatcher(
            outputs["namespace"],
            outputs["job_name"],
            outputs["container"],
            lambda: connect(job.context),
            indexed=run.fanout is not None,
        )
