"""A pool's image registry: where environment images go for jobs that do not run on the caller's engine.

``WorkPool.image_registry`` names a registry and a repository path
(``123456789012.dkr.ecr.us-east-1.amazonaws.com/ml``, ``us-docker.pkg.dev/proj/repo``,
``myacr.azurecr.io/ml``, ``127.0.0.1:5000/toolkit``). The environment stack
pushes ``<url>/toolkit-env:<hash>`` there and jobs pull it by digest
(``<url>/toolkit-env@sha256:...``), never by the mutable tag.

Credentials: a pool may name a ``username`` and the caller's environment
variable that holds the password or token (``password_env``); the pool
document never holds a secret, and the value enters Pulumi only as a secret.
Without them the standard Docker configuration is used (``docker login``
entries and credential helpers in ``$DOCKER_CONFIG/config.json`` or
``~/.docker/config.json``), or none for a registry that needs none. How a job
is allowed to pull is each target's business (``toolkit.infra``); this module
only tells them which cloud registry a URL names.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from toolkit.errors import ConfigError
from toolkit.infra.fields import unset

IMAGE_NAME = "toolkit-env"
"""The image name under the pool's repository path: ``<url>/toolkit-env:<hash>``."""
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")
_HOST = re.compile(r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::\d{1,5})?$")
_PATH = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
"""Repository path components as the OCI distribution spec allows them."""
_ECR = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
_ARTIFACT_REGISTRY = re.compile(r"^(?P<location>[a-z0-9-]+)-docker\.pkg\.dev$")
_ACR = re.compile(r"^(?P<name>[a-z0-9]{5,50})\.azurecr\.io$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class EcrRepository:
    account: str
    region: str
    name: str
    """The repository name inside the registry, e.g. ``ml/toolkit-env``."""

    @property
    def partition(self) -> str:
        return "aws-cn" if self.region.startswith("cn-") else "aws-us-gov" if self.region.startswith("us-gov-") else "aws"

    @property
    def arn(self) -> str:
        return f"arn:{self.partition}:ecr:{self.region}:{self.account}:repository/{self.name}"


@dataclass(frozen=True)
class ArtifactRegistryRepository:
    location: str
    project: str
    repository: str


class ImageRegistry(BaseModel):
    """Where a pool's environment images are pushed, and how the caller authenticates there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(
        description="Registry host and repository path, e.g. '123456789012.dkr.ecr.us-east-1.amazonaws.com/ml', "
        "'us-docker.pkg.dev/proj/repo', 'myacr.azurecr.io/ml' or '127.0.0.1:5000/toolkit'."
    )
    username: str | None = unset("User name for the registry (with password_env); default: the Docker configuration.")
    password_env: str | None = unset(
        "Name of the caller's environment variable holding the password or token. The value is read "
        "at push time and travels only as a Pulumi secret; pool documents never hold it.",
    )
    insecure: bool | None = unset(
        "Plain HTTP instead of HTTPS (default: only for a loopback registry, as Docker does).",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _valid_url(cls, url: str) -> str:
        url = url.strip().rstrip("/")
        if "://" in url:
            raise ValueError(
                f"image_registry {url!r} must not name a scheme: write 'host[:port]/path' (plain HTTP is "
                "'insecure': true, the default for a loopback registry)"
            )
        host, _, path = url.partition("/")
        if not _HOST.match(host) or not path:
            raise ValueError(
                f"image_registry {url!r} must be 'host[:port]/repository/path', e.g. 'us-docker.pkg.dev/proj/repo' "
                "or '127.0.0.1:5000/toolkit'"
            )
        if not _PATH.match(path):
            raise ValueError(
                f"image_registry {url!r}: the repository path {path!r} may hold only lowercase letters, digits "
                "and '.', '_', '-' between '/'-separated parts (no tag or digest)"
            )
        return url

    @field_validator("password_env")
    @classmethod
    def _valid_env_name(cls, name: str | None) -> str | None:
        if name is not None and not _ENV_NAME.match(name):
            raise ValueError(f"password_env {name!r} must be the name of an environment variable, not its value")
        return name

    @model_validator(mode="after")
    def _both_or_neither(self) -> ImageRegistry:
        if (self.username is None) != (self.password_env is None):
            raise ValueError("image_registry needs both username and password_env, or neither (Docker's own login)")
        return self

    # -- names --------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.url.partition("/")[0]

    @property
    def path(self) -> str:
        return self.url.partition("/")[2]

    @property
    def repository(self) -> str:
        """The image repository environments are pushed to: ``<url>/toolkit-env``."""
        return f"{self.url}/{IMAGE_NAME}"

    @property
    def loopback(self) -> bool:
        """On the caller's own loopback interface (reachable only from this machine)."""
        return self.host in LOOPBACK_HOSTS or self.host.rsplit(":", 1)[0] in LOOPBACK_HOSTS

    @property
    def plain_http(self) -> bool:
        return self.insecure if self.insecure is not None else self.loopback

    @property
    def address(self) -> str:
        """The registry with its scheme, as the Docker provider and the registry API want it."""
        return f"{'http' if self.plain_http else 'https'}://{self.host}"

    # -- credentials --------------------------------------------------------------------

    @property
    def has_credentials(self) -> bool:
        return self.username is not None

    def password(self) -> str:
        """The password or token, from the caller's environment (only when ``has_credentials``)."""
        assert self.password_env is not None
        value = os.environ.get(self.password_env)
        if not value:
            raise ConfigError(
                f"image_registry {self.url!r} takes its password from the environment variable "
                f"{self.password_env!r}, which is not set. Export it (e.g. `export {self.password_env}=...`) "
                "before the call"
            )
        return value

    def docker_config_entry(self) -> Path | None:
        """The Docker configuration file when it has a login or credential helper for this registry."""
        directory = os.environ.get("DOCKER_CONFIG")
        path = Path(directory) / "config.json" if directory else Path.home() / ".docker" / "config.json"
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        known = {*config.get("auths", {}), *config.get("credHelpers", {})}
        candidates = {self.host, f"https://{self.host}", f"http://{self.host}"}
        return path if known & candidates else None

    def dockerconfigjson(self) -> str:
        """A ``.dockerconfigjson`` document with the pool's credentials (for a job's pull secret)."""
        username, password = self.username or "", self.password()
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        return json.dumps({"auths": {self.host: {"username": username, "password": password, "auth": token}}})

    # -- clouds -------------------------------------------------------------------------

    def ecr(self) -> EcrRepository | None:
        match = _ECR.match(self.host)
        if not match:
            return None
        return EcrRepository(match["account"], match["region"], f"{self.path}/{IMAGE_NAME}")

    def artifact_registry(self) -> ArtifactRegistryRepository | None:
        match = _ARTIFACT_REGISTRY.match(self.host)
        parts = self.path.split("/")
        if not match or len(parts) < 2:
            return None
        return ArtifactRegistryRepository(match["location"], parts[0], parts[1])

    def acr_name(self) -> str | None:
        match = _ACR.match(self.host)
        return match["name"] if match else None


def digest_reference(repository: str, digest: str) -> str:
    """``repo@sha256:...``: what a job pulls, immutable."""
    return f"{repository}@{digest}"


def registry_of(image: str) -> str:
    """The registry host an image reference pulls from (Docker Hub when it names none)."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"
