"""The ``docker`` target: the job is a container on the local Docker engine.

Bucket = a per-run directory on the host, bind-mounted into the container at
``/toolkit-run`` (bundle in, result out) and removed on destroy. IAM = the
container's privileges: a non-root user, every capability dropped,
``no-new-privileges``, a read-only root filesystem with only the run directory
and a size-capped ``/tmp`` tmpfs writable. The run's signing key and secret env
values never become container environment (``docker inspect`` would show them):
they travel as Pulumi secrets into a 0600 file in the run directory owned by
the container's user (``toolkit.targets.local``), which the runner reads and deletes.
Job = a ``pulumi_docker.Container``
created by the real docker provider, started without waiting for it
(``must_run=False``, ``attach=False``) so ``up`` returns at once; the watcher
follows it through the Engine API (docker-py).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Collection
from typing import Any

import pulumi_docker

from toolkit.errors import ConfigError, TargetUnavailableError
from toolkit.infra.base import Target, placeholders
from toolkit.infra.flow import JobParts, MapForm, Platform
from toolkit.infra.run import RUN_LABEL, JobConfiguration, RunContext
from toolkit.infra.synonyms import PREFECT_COMMON, docker_memory, no_counterpart, prefect_retries, renamed
from toolkit.infra.variables import ENVIRONMENT_VARIABLES, JobVariables
from toolkit.infra.watch import JobStatus, JobWatcher
from toolkit.providers.secrets_file import numeric_owner
from toolkit.targets.docker.models import (
    CONTAINER_RUN_DIR,
    VOLUME,
    DockerJob,
    DockerVariables,
    default_image,
    size_in_mb,
)
from toolkit.targets.local import LocalPlatform, plain_env, run_directory

ENGINE_GRACE_SECONDS = 30.0
"""How long the watcher waits for an unreachable Docker engine (a restart) before failing the run."""


def _docker_client() -> Any:
    import docker  # docker-py: the Engine API client

    return docker.from_env()


def _explain_exit(code: int, oom: bool, job: DockerJob, logs_tail: str) -> str:
    if oom:
        return (
            f"the container was killed for exceeding its memory limit (mem_limit={job.mem_limit!r}); "
            "raise mem_limit or use less memory"
        )
    if code == 127 or "python3: not found" in logs_tail or "executable file not found" in logs_tail:
        return (
            f"the image {job.image!r} has no python3. Use the toolkit runner image (`toolkit toolchain "
            "install` builds it) or build an image FROM it with your dependencies"
        )
    if "No module named toolkit" in logs_tail or "No module named 'toolkit'" in logs_tail:
        return (
            f"the image {job.image!r} lacks the toolkit. Build your image FROM {default_image()!r}, or "
            "`pip install toolkit cloudpickle fsspec` into it"
        )
    if "unrecognized arguments: --secrets" in logs_tail:
        return (
            f"the image {job.image!r} holds an older toolkit whose runner cannot read the job's secrets file. "
            f"Rebuild it FROM {default_image()!r}"
        )
    if code == 137:
        return (
            "the container was killed (SIGKILL, exit 137) from outside: `docker kill`, or a stop or "
            "restart of the Docker engine that outlasted the stop timeout"
        )
    if code == 143:
        return "the container was stopped (SIGTERM, exit 143): `docker stop`, or a stop of the Docker engine"
    if code == 139:
        return "the interpreter crashed (segmentation fault, exit 139)"
    return f"the container exited with status {code}"


class DockerWatcher(JobWatcher):
    """Follows the container's state and streams its output through the Engine API."""

    def __init__(self, container_id: str, job: DockerJob) -> None:
        self._job = job
        self._client = _docker_client()
        self._container_id = container_id
        self._buffer: list[bytes] = []
        self._tail = b""
        self._lock = threading.Lock()
        self._engine_lost_since: float | None = None
        self._engine_was_lost = False
        self._reader = threading.Thread(target=self._follow, daemon=True, name=f"logs-{container_id[:12]}")
        self._reader.start()

    def _follow(self) -> None:
        import docker.errors

        try:
            for chunk in self._client.api.logs(self._container_id, stream=True, follow=True):
                with self._lock:
                    self._buffer.append(chunk)
                    self._tail = (self._tail + chunk)[-4096:]
        except (docker.errors.NotFound, docker.errors.APIError):
            return  # the container is gone (teardown); nothing more to read

    def read_logs(self) -> str:
        with self._lock:
            data, self._buffer = b"".join(self._buffer), []
        return data.decode("utf-8", errors="replace")

    def status(self) -> JobStatus:
        import docker.errors
        import requests

        try:
            state = self._client.api.inspect_container(self._container_id)["State"]
        except docker.errors.NotFound:
            return JobStatus(state="failed", reason="the container disappeared (removed by auto_remove or by hand)")
        except (docker.errors.DockerException, requests.RequestException) as exc:
            return self._engine_unreachable(exc)
        self._engine_lost_since = None  # reachable (again)
        if state.get("Status") in ("created", "running", "restarting", "paused"):
            return JobStatus(state="running" if state.get("Status") != "created" else "pending")
        self._reader.join(timeout=2)  # the output ends with the container
        code = int(state.get("ExitCode", -1))
        if code == 0 and not state.get("OOMKilled"):
            return JobStatus(state="succeeded", exit_code=0)
        with self._lock:
            tail = self._tail.decode("utf-8", errors="replace")
        reason = _explain_exit(code, bool(state.get("OOMKilled")), self._job, tail)
        if self._engine_was_lost:
            reason += "; the Docker engine restarted while the job ran, which stops its containers"
        return JobStatus(state="failed", exit_code=code, reason=reason)

    def _engine_unreachable(self, error: Exception) -> JobStatus:
        """A restarting engine is waited for; one gone for longer than the grace is a failure."""
        now = time.monotonic()
        self._engine_was_lost = True
        if self._engine_lost_since is None:
            self._engine_lost_since = now
        if now - self._engine_lost_since < ENGINE_GRACE_SECONDS:
            return JobStatus(state="running")
        return JobStatus(
            state="failed",
            reason=f"the Docker engine stopped answering for {ENGINE_GRACE_SECONDS:.0f}s while the job ran "
            f"({type(error).__name__}); its stack is torn down when the engine is back (or by `toolkit gc`)",
        )


class DockerTarget(Target):
    """Run the function in a container on the local Docker engine."""

    name = "docker"
    plugin_packages = ("pulumi_docker",)
    synonyms = {
        **PREFECT_COMMON,
        **prefect_retries(),
        "memory": renamed(
            "mem_limit", "memory limit with a unit, e.g. '512m' or '2g'; an integer is MiB", docker_memory
        ),
        "memory_limit": renamed("mem_limit", "memory limit with a unit, e.g. '512m' or '2g'"),
        "cpu": renamed("cpus", "CPUs as a number, e.g. 1.5"),
        "cpu_limit": renamed("cpus", "CPUs as a number, e.g. 1.5"),
        "gpu": renamed("gpus", "as `docker run --gpus`: 'all' or 'device=0'"),
        "registry_credentials": no_counterpart(
            "images come from the caller's Docker engine, which uses its own `docker login` credentials"
        ),
        "image_pull_policy": no_counterpart("the image must be on the local engine: build or `docker pull` it first"),
        "container_create_kwargs": no_counterpart(
            "the toolkit creates the container from its variables (mem_limit, cpus, gpus, cap_add, user, tmp_size, "
            "networks, volumes ...); ask for a missing one"
        ),
    }
    variables_model = DockerVariables
    job_model = DockerJob

    @classmethod
    def default_job_configuration(cls) -> dict[str, Any]:
        skip = {*JobVariables.model_fields, *ENVIRONMENT_VARIABLES}  # the engine's, and the environment's
        return placeholders(*(name for name in DockerVariables.model_fields if name not in skip))

    environment = "image"

    def preflight(self, job: JobConfiguration, pool_name: str) -> None:
        """The engine must answer and the image must be local: nothing is ever pulled."""
        import docker.errors

        assert isinstance(job, DockerJob)
        try:
            client = _docker_client()
            client.ping()
        except docker.errors.DockerException as exc:
            raise TargetUnavailableError(
                f"the Docker engine is not reachable ({exc}). Start it (`toolkit toolchain install` starts "
                "dockerd) or set DOCKER_HOST; `toolkit doctor` shows what is missing"
            ) from None
        try:
            client.images.get(job.image)
        except docker.errors.ImageNotFound:
            hint = (
                "`toolkit toolchain install` builds it"
                if job.image == default_image()
                else f"build it with `docker build -t {job.image} .` FROM {default_image()!r} (no registry is used)"
            )
            raise ConfigError(
                f"image {job.image!r} of pool {pool_name!r} is not in the local Docker engine; {hint}"
            ) from None
        uid = os.geteuid()
        if uid != 0 and numeric_owner(job.user)[0] != uid:
            raise ConfigError(
                f"pool {pool_name!r} runs docker jobs as user {job.user!r}, but this client runs as uid {uid} "
                "and cannot hand the job's secrets file to another uid. Pass "
                f"user='{uid}:{os.getegid()}' (or leave 'user' unset), or run the client as root"
            )

    def per_run_storage_url(self, run_id: str) -> str:
        return run_directory(run_id)

    def default_map_parallelism(self, count: int) -> int:
        """Worker containers on this machine's engine: one per CPU unless max_parallel says otherwise."""
        return os.cpu_count() or 1

    def platform(self, run: RunContext) -> Platform:
        job = run.job
        assert isinstance(job, DockerJob)
        # the run directory is writable by the container's unprivileged user, whatever its uid
        return LocalPlatform(run, MapForm(run.fanout, indexed=False), mode="777", owner=job.user)

    def job(self, run: RunContext, parts: JobParts) -> dict[str, Any]:
        """One container; for a map, ``fanout.parallelism`` worker containers that claim items.

        Workers, not a container per item: a container's create, start and the
        function's load are paid once per worker, and the stack holds P containers, not N.
        """
        containers = []
        for worker, secrets_name in parts.secrets.items():
            command = parts.form.command(CONTAINER_RUN_DIR, secrets_file=f"{CONTAINER_RUN_DIR}/{secrets_name}",
                                         worker=int(worker))
            suffix = "" if run.fanout is None else f"-{worker}"
            containers.append(_container(f"job{suffix}", f"toolkit-{run.run_id}{suffix}", command, run, parts))
        if run.fanout is None:
            return {"container_id": containers[0].id, "run_dir": run.storage_url}
        return {"container_ids": [container.id for container in containers], "run_dir": run.storage_url}

    def watch(self, run: RunContext, outputs: dict[str, Any]) -> JobWatcher | list[JobWatcher]:
        assert isinstance(run.job, DockerJob)
        if run.fanout is None:
            return DockerWatcher(outputs["container_id"], run.job)
        return [DockerWatcher(container_id, run.job) for container_id in outputs["container_ids"]]

    def stray_jobs(self, run_ids: Collection[str], remove: bool) -> dict[str, list[str]]:
        """The runs' containers (running or not) on the local engine, by their ``toolkit-run`` label."""
        import docker.errors

        found: dict[str, list[str]] = {}
        for container in _docker_client().containers.list(all=True, filters={"label": RUN_LABEL}):
            run_id = container.labels.get(RUN_LABEL)
            if run_id not in run_ids:
                continue
            if remove:
                try:
                    container.remove(force=True)
                except docker.errors.NotFound:
                    pass  # gone meanwhile (auto_remove)
            found.setdefault(run_id, []).append(container.name)
        return found


def _container(logical: str, name: str, command: list[str], run: RunContext, parts: JobParts) -> pulumi_docker.Container:
    """One container of the run: the hardening of the module docstring, the job's variables, the run directory."""
    job = run.job
    assert isinstance(job, DockerJob)
    envs = [f"{key}={value}" for key, value in plain_env(job.env).items()]
    volumes = [pulumi_docker.ContainerVolumeArgs(host_path=run.storage_url, container_path=CONTAINER_RUN_DIR)]
    for spec in job.volumes:
        volume = VOLUME.match(spec)
        assert volume is not None
        volumes.append(
            pulumi_docker.ContainerVolumeArgs(
                host_path=volume["host"], container_path=volume["container"], read_only=volume["mode"] == "ro"
            )
        )
    labels = {**job.labels, **run.labels}
    return pulumi_docker.Container(
        logical,
        name=name,
        image=parts.image or job.image,
        command=[*job.command, *command],
        envs=envs,
        volumes=volumes,
        user=job.user,
        read_only=not job.privileged,
        privileged=job.privileged,
        capabilities=None if job.privileged else pulumi_docker.ContainerCapabilitiesArgs(drops=["ALL"], adds=job.cap_add or None),
        security_opts=None if job.privileged else ["no-new-privileges"],
        tmpfs={"/tmp": f"rw,nosuid,nodev,size={job.tmp_size}"},
        memory=size_in_mb(job.mem_limit, "mem_limit") if job.mem_limit else None,
        memory_swap=size_in_mb(job.memswap_limit, "memswap_limit") if job.memswap_limit else None,
        cpus=str(job.cpus) if job.cpus else None,
        gpus=job.gpus,
        network_mode=job.network_mode,
        networks_advanced=[pulumi_docker.ContainerNetworksAdvancedArgs(name=n) for n in job.networks] or None,
        labels=[pulumi_docker.ContainerLabelArgs(label=k, value=v) for k, v in sorted(labels.items())],
        rm=job.auto_remove,
        must_run=False,  # a quick job may already have exited when the provider checks
        attach=False,
        logs=False,
        destroy_grace_seconds=2,
        opts=parts.options(delete_before_replace=True),
    )
