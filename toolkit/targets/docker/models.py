"""The docker target's models: its job variables (named as ``docker run`` users know them) and its job."""

from __future__ import annotations

import os
import re

from pydantic import Field, field_validator

from toolkit import settings
from toolkit.infra.fields import unset
from toolkit.infra.run import JobConfiguration
from toolkit.infra.variables import EnvironmentVariables
from toolkit.secretvalues import Secret

CONTAINER_RUN_DIR = "/toolkit-run"
_USER = re.compile(r"^\d+(:\d+)?$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
VOLUME = re.compile(r"^(?P<host>[^:]+):(?P<container>/[^:]*)(?::(?P<mode>ro|rw))?$")


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
    network_mode: str | None = unset("Network mode (bridge, host, none, container:NAME).")
    mem_limit: str | None = unset("Memory limit, e.g. '512m' or '2g' (the OOM killer acts above it).")
    memswap_limit: str | None = unset("Memory + swap limit, e.g. '1g'.")
    cpus: float | None = unset("CPUs the container may use, e.g. 1.5.", gt=0)
    gpus: str | None = unset("GPUs to pass through, as `docker run --gpus`: 'all' or 'device=0'.")
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
            if not VOLUME.match(volume):
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
