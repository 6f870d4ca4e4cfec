"""Work pools and the pool registry.

A ``WorkPool`` is what a platform team publishes: a target type, a base job
template and where run data lives. The registry is a directory of JSON
documents at an fsspec URL (``$TOOLKIT_HOME/pools`` by default), so a team can
share it on S3/GCS as easily as on local disk. ``local-process`` and
``local-docker`` exist with no setup; a stored pool of the same name overrides them.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Literal

import fsspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from toolkit import settings
from toolkit.errors import ConfigError, PoolNotFoundError
from toolkit.infra.fields import unset
from toolkit.infra.image_registry import ImageRegistry
from toolkit.policy_packs import check_pack_reference
from toolkit.templating import check_template

CHANGES_DIR = "changes"
"""Where publications of pools managed as code are noted: ``<registry>/changes/<name>/``."""
POOL_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?$")


class StorageConfig(BaseModel):
    """Where bundles and results travel between the client and the job."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = unset(
        "fsspec URL of the storage root (s3://bucket/prefix, gs://..., az://..., /local/dir). "
        "None lets the target provision storage itself (per-run directory, volume or bucket).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options (endpoint, region...). Credentials come from the "
        "environment, never from here.",
    )
    mode: Literal["per-run-bucket", "shared-prefix"] = Field(
        default="per-run-bucket",
        description="'per-run-bucket': each run stack provisions its own bucket and destroys it; "
        "'shared-prefix': runs use url/<run-id>/ of an existing bucket.",
    )

    @field_validator("options")
    @classmethod
    def _no_credentials(cls, options: dict[str, Any]) -> dict[str, Any]:
        suspicious = sorted(k for k in options if re.search(r"secret|password|token|key$|credential", k, re.I))
        if suspicious:
            raise ValueError(
                f"storage options {suspicious} look like credentials; pool documents are not secret. "
                "Provide credentials through the environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, AZURE_*)"
            )
        return options

    @model_validator(mode="after")
    def _shared_needs_url(self) -> StorageConfig:
        if self.mode == "shared-prefix" and not self.url:
            raise ValueError("storage.mode 'shared-prefix' needs storage.url (the shared bucket)")
        return self


class WorkPool(BaseModel):
    """A named target type + base job template + storage + optional state backend."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: str = Field(description="Target type: process, docker, kubernetes, ecs, cloud_run, ...")
    base_job_template: dict[str, Any] = Field(default_factory=dict)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    backend_url: str | None = unset("Pulumi state backend for run stacks.")
    description: str = ""
    policy_packs: list[str] = Field(
        default_factory=list,
        description="Pulumi policy packs enforced at preview and up of every run stack: absolute directories, "
        "or 'registry:NAME' for a pack published with the pools project.",
    )
    max_concurrent_runs: int | None = unset(
        "Live run stacks the pool allows at once, counted in its state backend.",
        ge=1,
    )
    secrets_provider: str | None = unset(
        "Secrets provider of run stacks: 'passphrase' or awskms://, gcpkms://, azurekeyvault://, "
        "hashivault:// (default: TOOLKIT_SECRETS_PROVIDER, else passphrase).",
    )
    image_registry: ImageRegistry | None = unset(
        "Where environment images are pushed for targets whose jobs do not run on the caller's "
        "Docker engine (kubernetes, ecs, cloud_run, vertex_ai, azure_container_instance); jobs pull them by "
        "digest. 'host[:port]/path', or an object with url, username, password_env, insecure.",
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not POOL_NAME.match(name):
            raise ValueError(
                f"pool name {name!r} must be 1-50 lowercase letters, digits or '-', "
                "starting and ending with a letter or digit"
            )
        return name

    @field_validator("policy_packs")
    @classmethod
    def _packs_exist(cls, packs: list[str]) -> list[str]:
        return [check_pack_reference(pack) for pack in packs]

    @field_validator("secrets_provider")
    @classmethod
    def _known_provider(cls, provider: str | None) -> str | None:
        return settings.check_secrets_provider(provider) if provider is not None else None

    @model_validator(mode="after")
    def _complete_template(self) -> WorkPool:
        from toolkit.infra.registry import get_target_class  # late: targets import pools' models

        target = get_target_class(self.type)
        if not self.base_job_template:
            self.base_job_template = target.default_template()
        check_template(self.base_job_template, where=f"pool {self.name!r}")
        if self.storage.url and self.storage.mode == "shared-prefix":
            target.check_storage_url(self.storage.url)
        return self

    def to_document(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=True)


BUILTIN_POOLS = {
    "local-process": ("process", "Local subprocess (built in)"),
    "local-docker": ("docker", "Local Docker engine (built in)"),
}
"""Pools that exist with no setup: the local targets on their default templates."""


def builtin_pool(name: str) -> WorkPool | None:
    if name not in BUILTIN_POOLS:
        return None
    type_, description = BUILTIN_POOLS[name]
    return WorkPool(name=name, type=type_, description=description)


def parse_pool(text: str, source: str) -> WorkPool:
    """A pool from its JSON document; errors name the document and the field."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"pool document {source} is not valid JSON: {exc}. Fix or delete it") from None
    try:
        return WorkPool.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(document)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"pool document {source} is invalid: {problems}") from None


class PoolRegistry:
    """JSON pool documents under an fsspec URL: ``<url>/<name>.json``."""

    def __init__(self, url: str | None = None, **storage_options: Any) -> None:
        self.url = (url or settings.pools_url()).rstrip("/")
        self._fs, self._root = fsspec.core.url_to_fs(self.url, **storage_options)

    def _path(self, name: str) -> str:
        return f"{self._root}/{name}.json"

    def _stored_names(self) -> list[str]:
        if not self._fs.exists(self._root):
            return []
        return sorted(
            path.rsplit("/", 1)[-1][: -len(".json")]
            for path in self._fs.ls(self._root, detail=False)
            if path.endswith(".json")
        )

    def names(self) -> list[str]:
        return sorted(set(self._stored_names()) | set(BUILTIN_POOLS))

    def list(self) -> list[WorkPool]:
        return [self.get(name) for name in self.names()]

    def exists(self, name: str) -> bool:
        return name in BUILTIN_POOLS or self._fs.exists(self._path(name))

    def get(self, name: str) -> WorkPool:
        path = self._path(name)
        if self._fs.exists(path):
            with self._fs.open(path, "r") as handle:
                return parse_pool(handle.read(), source=f"{self.url}/{name}.json")
        builtin = builtin_pool(name)
        if builtin is not None:
            return builtin
        raise PoolNotFoundError(
            f"work pool {name!r} not found in {self.url}. Known pools: {', '.join(self.names())}. "
            f"Create it with `toolkit pool create {name} --type TYPE`"
        )

    def save(self, pool: WorkPool, overwrite: bool = False) -> None:
        path = self._path(pool.name)
        if not overwrite and self._fs.exists(path):
            raise ConfigError(f"work pool {pool.name!r} already exists in {self.url}; delete it first or update it")
        self._fs.makedirs(self._root, exist_ok=True)
        # Write then move, so a reader never sees half a document.
        temporary = f"{path}.tmp"
        with self._fs.open(temporary, "w") as handle:
            handle.write(pool.to_document())
        self._fs.mv(temporary, path)

    def record_change(self, name: str, op: str, document: dict[str, Any] | None, user: str) -> None:
        """Note a publication of pool ``name`` (create, update, delete) by its pools-as-code program:
        ``<registry>/changes/<name>/<ns>.json``, what the dashboard shows as the pool's history."""
        at = time.time()
        path = f"{self._root}/{CHANGES_DIR}/{name}/{int(at * 1e9)}.json"
        self._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self._fs.pipe_file(path, json.dumps({"op": op, "at": at, "user": user, "document": document}).encode())

    def changes(self, name: str) -> list[dict[str, Any]]:
        """The recorded publications of pool ``name``, oldest first ([] for a pool not managed as code)."""
        directory = f"{self._root}/{CHANGES_DIR}/{name}"
        try:
            paths = sorted(self._fs.ls(directory, detail=False))
        except FileNotFoundError:
            return []
        found = []
        for path in paths:
            try:
                found.append(json.loads(self._fs.cat_file(path)))
            except (FileNotFoundError, ValueError):
                continue
        return found

    def delete(self, name: str) -> None:
        path = self._path(name)
        if not self._fs.exists(path):
            if name in BUILTIN_POOLS:
                raise ConfigError(f"work pool {name!r} is built in and cannot be deleted")
            raise PoolNotFoundError(f"work pool {name!r} not found in {self.url}")
        self._fs.rm(path)
