"""The ``kubernetes`` target: the job is a ``batch/v1`` Job on a Kubernetes cluster.

Bucket = a prefix of the pool's object storage (``s3://``, ``gs://``, ``az://``):
``RunStorage`` uploads the bundle into ``<pool url>/<run-id>`` and removes the
prefix on destroy. IAM = a per-run ServiceAccount whose annotations carry the
cloud identity that may use that storage (IRSA's role ARN, GKE workload
identity ...), and a Role/RoleBinding that lets it read exactly the run's own
Secret and nothing else in the cluster (the pod mounts no API token at all; the
Role bounds the identity should a customization mount one). The run key and ``toolkit.secret`` env values live in that Secret
(written from ``pulumi.Output.secret``) and reach the container only through
``secretKeyRef``; storage credentials never travel at all: the pod gets the
requests the client signed for this run (``toolkit.presign``, in the same
Secret), or, where the client cannot sign, its identity's credentials. Job = the pool's Job manifest (placeholders filled, JSON-6902
``customizations`` applied) with the runner as its first container, created
with ``pulumi.com/skipAwait`` so ``up`` returns once the Job exists.

The watcher follows the Job and its pods through the Kubernetes API: the Job's
conditions decide success and failure, the newest pod explains it (exit code,
OOMKilled, an image that cannot be pulled, a missing Secret) and supplies logs.
A map's Job is ``max_parallel`` workers, each pod claiming items; each worker
(its completion index) has a watcher of its own, so a pod that dies fails only
its worker, whose items the client gives back to the others within their
``retries`` (``toolkit.fanout``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pulumi_kubernetes as k8s

from toolkit.errors import ConfigError
from toolkit.infra.base import Target, placeholders
from toolkit.infra.flow import JobParts, Platform
from toolkit.infra.run import RunContext
from toolkit.infra.synonyms import (
    PREFECT_COMMON,
    kubernetes_cpu,
    kubernetes_memory,
    no_counterpart,
    prefect_retries,
    renamed,
)
from toolkit.infra.watch import JobStatus, JobWatcher
from toolkit.targets.kubernetes.cluster import KubernetesPlatform, connect
from toolkit.targets.kubernetes.manifest import run_manifest
from toolkit.targets.kubernetes.models import KubernetesJob, KubernetesVariables
from toolkit.targets.kubernetes.status import (
    completion_index,
    failed_for,
    failure_of_pod,
    job_status,
    worker_status,
)

POD_LIST_REUSE_SECONDS = 0.5
"""A map's Job and pod list serve every read within this long (one read per poll, not one per worker)."""
STORAGE_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss")


class JobReader:
    """One Job and its pods through the API (``connect`` builds the clients on first use), with why
    each pod seen failed: shared by the watcher of a call and by those of a map's workers."""

    def __init__(self, namespace: str, job_name: str, container: str, connect: Callable[[], tuple[Any, Any]]) -> None:
        self.namespace = namespace
        self.job_name = job_name
        self.container = container
        self._connect = connect
        self._apis: tuple[Any, Any] | None = None
        self._log_offsets: dict[str, int] = {}
        self._logs_complete: set[str] = set()
        self.pod_failures: dict[str, str | None] = {}
        """Every pod seen, with why it failed (None: not failed, as far as seen); explains retries."""
        self.removed_pods: set[str] = set()
        """Pods deleted (or gone) before they finished: their removal is why they failed."""
        self.pod_index: dict[str, int | None] = {}
        """Every pod seen, with its completion index (a map's worker), also once it is gone."""
        self._read: tuple[float, Any, list[Any]] | None = None

    def _clients(self) -> tuple[Any, Any]:
        if self._apis is None:
            self._apis = self._connect()
        return self._apis

    def job(self) -> Any:
        """The Job (``V1Job``); None once it is gone. Reused within ``POD_LIST_REUSE_SECONDS``, with ``pods``."""
        return self._fresh()[0]

    def pods(self) -> list[Any]:
        """The Job's pods, oldest first (read with the Job, and reused as it is)."""
        return self._fresh()[1]

    def _fresh(self) -> tuple[Any, list[Any]]:
        if self._read is not None and time.monotonic() - self._read[0] < POD_LIST_REUSE_SECONDS:
            return self._read[1], self._read[2]
        from kubernetes.client.exceptions import ApiException

        core, batch = self._clients()
        try:
            job = batch.read_namespaced_job_status(self.job_name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            job = None
        pods = core.list_namespaced_pod(self.namespace, label_selector=f"job-name={self.job_name}").items
        pods = sorted(pods, key=lambda pod: pod.metadata.creation_timestamp)
        self._note_failures(pods)
        self._read = (time.monotonic(), job, pods)
        return job, pods

    def forget(self) -> None:
        """Read the Job and its pods afresh at the next call (a call's watcher: at every read)."""
        self._read = None

    def gone(self) -> JobStatus:
        return JobStatus(
            state="failed", reason=f"the Job {self.namespace}/{self.job_name} was deleted before it finished"
        )

    def _note_failures(self, pods: list[Any]) -> None:
        """Record why pods failed -- a pod deleted, evicted or lost with its node vanishes from the
        API soon after."""
        present = {pod.metadata.name for pod in pods}
        for name, failure in list(self.pod_failures.items()):
            if name not in present and failure is None:
                self.removed_pods.add(name)
                self.pod_failures[name] = (
                    f"its pod {name} vanished before it finished (deleted, evicted or its node lost)"
                )
        for pod in pods:
            name = pod.metadata.name
            self.pod_index.setdefault(name, completion_index(pod))
            if pod.status.phase == "Succeeded":
                self.pod_failures[name] = None
            elif self.pod_failures.get(name):
                continue  # the first cause seen is the one that explains it (deleted, then exit 143)
            elif pod.metadata.deletion_timestamp is not None:
                self.removed_pods.add(name)
                self.pod_failures[name] = f"its pod {name} was deleted while it ran (by hand, a drain or node loss)"
            elif pod.status.phase == "Failed":
                failure = failure_of_pod(pod, self.container)
                self.pod_failures[name] = failure[1] if failure else "its pod failed"
            else:
                self.pod_failures.setdefault(name, None)

    def last_failure(self) -> str | None:
        """Why the latest failed pod failed."""
        failures = [failure for failure in self.pod_failures.values() if failure]
        return failures[-1] if failures else None

    def read_logs(self, pods: list[Any]) -> str:
        """Log text of ``pods`` produced since the previous read."""
        from kubernetes.client.exceptions import ApiException

        core, _ = self._clients()
        chunks = []
        for pod in pods:
            name = pod.metadata.name
            if name in self._logs_complete:
                continue
            finished = pod.status.phase in ("Succeeded", "Failed")
            try:
                text = core.read_namespaced_pod_log(name, self.namespace, container=self.container)
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


class KubernetesWatcher(JobWatcher):
    """Follows a call's Job: its conditions, and its newest pod to explain them."""

    def __init__(self, reader: JobReader) -> None:
        self._reader = reader

    def status(self) -> JobStatus:
        reader = self._reader
        reader.forget()
        job = reader.job()
        if job is None:
            return reader.gone()
        pods = reader.pods()
        last_failure = reader.last_failure()
        status = job_status(job, pods, reader.container)
        status.previous_failure = last_failure
        if status.state != "failed" or failed_for(job) == "DeadlineExceeded":
            return status  # (the Job controller deletes the pods of a Job past its deadline itself)
        newest = next(reversed(reader.pod_failures), None)
        if newest in reader.removed_pods:  # "exited with code 143" or BackoffLimitExceeded alone say less
            detail = f"; {status.reason}" if pods and status.reason else ""
            status.reason = f"{reader.pod_failures[newest]}{detail}"
        elif not pods and last_failure:
            status.reason = last_failure
        return status

    def read_logs(self) -> str:
        self._reader.forget()
        return self._reader.read_logs(self._reader.pods())


class WorkerWatcher(JobWatcher):
    """Follows worker ``index`` of a map's Job (its completion index); the workers share one reader."""

    def __init__(self, reader: JobReader, index: int) -> None:
        self._reader = reader
        self._index = index

    def _pods(self) -> list[Any]:
        return [pod for pod in self._reader.pods() if completion_index(pod) == self._index]

    def status(self) -> JobStatus:
        reader = self._reader
        job = reader.job()
        if job is None:
            return reader.gone()
        failure = next(
            (why for name, why in reader.pod_failures.items() if why and reader.pod_index.get(name) == self._index),
            None,
        )  # also a pod gone from the API by now
        return worker_status(job, self._pods(), self._index, reader.container, failure)

    def read_logs(self) -> str:
        return self._reader.read_logs(self._pods())


class KubernetesTarget(Target):
    """Run the function as a Kubernetes Job."""

    name = "kubernetes"
    native_retries = "backoff_limit"  # a call's: the Job controller starts a new pod; one with a result exits 0
    map_form = "workers"  # an Indexed Job of max_parallel pods, each claiming items (its index: its number)
    signed_storage = True  # pods reach the run's storage through signed requests: no s3fs/gcsfs/adlfs to import
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
    environment = "image"
    images_from_registry = True

    @classmethod
    def default_job_configuration(cls) -> dict[str, Any]:
        return {
            **placeholders(
                "context", "service_account_annotations", "image_pull_secrets",
                "env", "secret_env", "python",
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

    def platform(self, run: RunContext) -> Platform:
        return KubernetesPlatform(run)

    def job(self, run: RunContext, parts: JobParts) -> dict[str, Any]:
        job = run.job
        platform = parts.platform
        assert isinstance(job, KubernetesJob) and isinstance(platform, KubernetesPlatform)
        manifest = run_manifest(job, run, parts, platform.name)
        k8s.batch.v1.Job(
            "job", metadata=manifest["metadata"], spec=manifest["spec"], opts=parts.options(provider=platform.provider)
        )
        return {
            "namespace": job.namespace,
            "job_name": manifest["metadata"]["name"],
            "container": manifest["spec"]["template"]["spec"]["containers"][0]["name"],
        }

    def watch(self, run: RunContext, outputs: dict[str, Any]) -> JobWatcher | list[JobWatcher]:
        """The call's Job; for a map, each worker (completion index) of it, over one reader."""
        job = run.job
        assert isinstance(job, KubernetesJob)
        reader = JobReader(outputs["namespace"], outputs["job_name"], outputs["container"], lambda: connect(job.context))
        if run.fanout is None:
            return KubernetesWatcher(reader)
        return [WorkerWatcher(reader, index) for index in range(run.fanout.parallelism)]
