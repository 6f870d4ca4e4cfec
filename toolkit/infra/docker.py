"""The ``docker`` target: the job is a container on the local Docker engine.

Bucket = a per-run directory on the host, bind-mounted into the container at
``/toolkit-run`` (bundle in, result out) and removed on destroy. IAM = the
container's privileges: a non-root user, every capability dropped,
``no-new-privileges``, a read-only root filesystem with only the run directory
and a size-capped ``/tmp`` tmpfs writable. The run's signing key and secret env
values never become container environment (``docker inspect`` would show them):
they travel as Pulumi secrets into a 0600 file in the run directory owned by
the container's user (``job_secrets``), which the runner reads and deletes.
Job = a ``pulumi_docker.Container``
created by the real docker provider, started without waiting for it
(``must_run=False``, ``attach=False``) so ``up`` returns at once; the watcher
follows it through the Engine API (docker-py).
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Any

import pulumi
import pulumi_docker
from pydantic import Field, field_validator

from toolkit import settings
from toolkit.environments.variables import ENVIRONMENT_VARIABLES, EnvironmentVariables
from toolkit.errors import ConfigError, TargetUnavailableError
from toolkit.fanout.watch import WorkersWatcher
from toolkit.infra import job_secrets
from toolkit.infra.base import (
    JobConfiguration,
    JobStatus,
    JobVariables,
    JobWatcher,
    RunContext,
    Target,
    placeholders,
    runner_command,
)
from toolkit.infra.storage import RunStorage
from toolkit.infra.synonyms import PREFECT_COMMON, docker_memory, no_counterpart, prefect_retries, renamed
from toolkit.secretvalues import Secret

CONTAINER_RUN_DIR = "/toolkit-run"
ENGINE_GRACE_SECONDS = 30.0
"""How long the watcher waits for an unreachable Docker engine (a restart) before failing the run."""
_USER = re.compile(r"^\d+(:\d+)?$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_VOLUME = re.compile(r"^(?P<host>[^:]+):(?P<container>/[^:]*)(?::(?P<mode>ro|rw))?$")


def default_user() -> str:
    """``1000:1000`` for a root client; a client that is not root runs jobs as itself, because
    only root can hand the job's secrets file to another uid."""
    uid = os.geteuid()
    return "1000:1000" if uid == 0 else f"{uid}:{os.getegid()}"


def default_image() -> str:
    """The runner image ``toolkit toolchain install`` builds for this toolkit version."""
    return settings.runner_image()


def size_in_mb(value: str, variable: str) -> int:
    """'512m', '2g', '1.5G', '256Mi' -> MB, as the docker provider's ``memory`` expects."""
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"{variable} {value!r} is not a size like '512m' or '2g'")
    number, unit = float(match.group(1)), match.group(2).lower()
    factor = {"": 1 / (1024 * 1024), "k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}[unit]
    megabytes = int(number * factor)
    if megabytes < 6:
        raise ValueError(f"{variable} {value!r} is below Docker's minimum of 6m")
    return megabytes


class DockerVariables(EnvironmentVariables):
    """Job variables of the docker target, named as ``docker run`` users know them."""

    image: str = Field(default=default_image(), description="Image to run; must contain python3 and the toolkit.")
    command: list[str] = Field(
        default_factory=list,
        description="Command prefix run before the runner inside the container, e.g. ['nice', '-n', '5'].",
    )
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables of the container.")
    volumes: list[str] = Field(
        default_factory=list, description="Bind mounts 'host_path:container_path[:ro|rw]'."
    )
    networks: list[str] = Field(default_factory=list, description="Existing Docker networks to attach.")
    network_mode: str | None = Field(default=None, description="Network mode (bridge, host, none, container:NAME).")
    mem_limit: str | None = Field(default=None, description="Memory limit, e.g. '512m' or '2g' (the OOM killer acts above it).")
    memswap_limit: str | None = Field(default=None, description="Memory + swap limit, e.g. '1g'.")
    cpus: float | None = Field(default=None, gt=0, description="CPUs the container may use, e.g. 1.5.")
    gpus: str | None = Field(default=None, description="GPUs to pass through, as `docker run --gpus`: 'all' or 'device=0'.")
    user: str = Field(
        default=default_user(),
        description="User 'uid:gid' the job runs as (never root); default 1000:1000, or the client's own "
        "ids when the client is not root.",
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Container labels.")
    privileged: bool = Field(default=False, description="Run privileged (disables the hardening; avoid).")
    cap_add: list[str] = Field(default_factory=list, description="Capabilities to add back after dropping all.")
    tmp_size: str = Field(default="256m", description="Size of the writable /tmp tmpfs.")
    auto_remove: bool = Field(
        default=False,
        description="Let Docker delete the container the moment it exits (`--rm`). Teardown removes it "
        "anyway; with this on, an OOM kill can no longer be told apart from other failures.",
    )
    stream_output: bool = Field(default=True, description="Stream the container's output to the caller.")

    @field_validator("volumes")
    @classmethod
    def _volumes_have_two_paths(cls, volumes: list[str]) -> list[str]:
        for volume in volumes:
            if not _VOLUME.match(volume):
                raise ValueError(f"volume {volume!r} must be 'host_path:/container/path[:ro|rw]'")
        return volumes


class DockerJob(JobConfiguration):
    image: str
    command: list[str] = []
    env: dict[str, str | Secret] = {}
    volumes: list[str] = []
    networks: list[str] = []
    network_mode: str | None = None
    mem_limit: str | None = None
    memswap_limit: str | None = None
    cpus: float | None = None
    gpus: str | None = None
    user: str = default_user()
    labels: dict[str, str] = {}
    privileged: bool = False
    cap_add: list[str] = []
    tmp_size: str = "256m"
    auto_remove: bool = False
    stream_output: bool = True

    @field_validator("mem_limit", "memswap_limit")
    @classmethod
    def _sizes_parse(cls, value: str | None) -> str | None:
        if value is not None:
            size_in_mb(value, "mem_limit")
        return value

    @field_validator("user")
    @classmethod
    def _numeric_not_root(cls, user: str) -> str:
        if user.split(":")[0] in ("0", "root"):
            raise ValueError("user must not be root (uid 0); jobs run unprivileged. Use e.g. '1000:1000'")
        if not _USER.match(user):
            raise ValueError(
                f"user {user!r} must be numeric 'uid:gid' (e.g. '1000:1000'): the job's secrets file is "
                "handed to that uid on this machine, where the image's user names mean nothing"
            )
        return user


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

    def environment_base(self, job: JobConfiguration) -> str | None:
        assert isinstance(job, DockerJob)
        return job.image

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
        if uid != 0 and job_secrets.numeric_owner(job.user)[0] != uid:
            raise ConfigError(
                f"pool {pool_name!r} runs docker jobs as user {job.user!r}, but this client runs as uid {uid} "
                "and cannot hand the job's secrets file to another uid. Pass "
                f"user='{uid}:{os.getegid()}' (or leave 'user' unset), or run the client as root"
            )

    def per_run_storage_url(self, run_id: str) -> str:
        return str(settings.home() / "work" / run_id)

    def default_map_parallelism(self, count: int) -> int:
        """Worker containers on this machine's engine: one per CPU unless max_parallel says otherwise."""
        return os.cpu_count() or 1

    def program(self, run: RunContext) -> None:
        """One container; for a map, ``fanout.parallelism`` worker containers that claim items.

        Workers, not a container per item: a container's create, start and the
        function's load are paid once per worker, and the stack holds P containers, not N.
        """
        job = run.job
        assert isinstance(job, DockerJob)
        work = settings.home() / "work"
        work.mkdir(parents=True, exist_ok=True)
        os.chmod(work, 0o700)  # the private parent is what keeps the 0777 run directory private
        workers = run.fanout.parallelism if run.fanout else 1
        secrets_names = (
            [job_secrets.worker_secrets_name(k) for k in range(workers)] if run.fanout else [job_secrets.SECRETS_NAME]
        )
        storage = RunStorage.of_run(
            "run-directory",
            run,
            mode="777",  # writable by the container's unprivileged user, whatever its uid
            secrets=job_secrets.secret_inputs(run.run_key, job.env),
            secrets_owner=job.user,
            secrets_names=secrets_names if run.fanout else None,
            attempt=run.attempt,
        )
        containers = []
        for number, secrets_name in enumerate(secrets_names):
            command = runner_command(
                CONTAINER_RUN_DIR,
                secrets_file=f"{CONTAINER_RUN_DIR}/{secrets_name}",
                fanout=run.fanout,
                worker=str(number) if run.fanout else None,
            )
            suffix = f"-{number}" if run.fanout else ""
            containers.append(self._container(f"job{suffix}", f"toolkit-{run.run_id}{suffix}", command, run, storage))
        if run.fanout is None:
            pulumi.export("container_id", containers[0].id)
        else:
            pulumi.export("container_ids", [container.id for container in containers])
        pulumi.export("run_dir", run.storage_url)

    @staticmethod
    def _container(
        logical: str, name: str, command: list[str], run: RunContext, storage: pulumi.Resource
    ) -> pulumi_docker.Container:
        job = run.job
        assert isinstance(job, DockerJob)
        envs = [f"{key}={value}" for key, value in job_secrets.plain_env(job.env).items()]
        volumes = [pulumi_docker.ContainerVolumeArgs(host_path=run.storage_url, container_path=CONTAINER_RUN_DIR)]
        for spec in job.volumes:
            parts = _VOLUME.match(spec)
            assert parts is not None
            volumes.append(
                pulumi_docker.ContainerVolumeArgs(
                    host_path=parts["host"], container_path=parts["container"], read_only=parts["mode"] == "ro"
                )
            )
        labels = {**job.labels, **run.labels}
        return pulumi_docker.Container(
            logical,
            name=name,
            image=run.image or job.image,
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
            opts=pulumi.ResourceOptions(
                depends_on=[storage], delete_before_replace=True, replacement_trigger=run.attempt
            ),
        )

    def watcher(self, run: RunContext, outputs: dict[str, Any]) -> JobWatcher:
        assert isinstance(run.job, DockerJob)
        if run.fanout is None:
            return DockerWatcher(outputs["container_id"], run.job)
        return WorkersWatcher([DockerWatcher(container_id, run.job) for container_id in outputs["container_ids"]])
