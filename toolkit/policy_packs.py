"""Pulumi policy packs on run stacks: references, results, and the error a mandatory violation raises.

A pool names packs as absolute directories (a ``PulumiPolicy.yaml`` with
``runtime: python`` and a ``__main__.py`` using ``pulumi-policy``) or as
``registry:NAME``, a pack published next to the pools in the pool registry
(``<registry>/policy-packs/NAME/``, see ``pools_as_code.PolicyPackResource``).
The engine runs them itself (``--policy-pack``), starting each through the
Python language host's ``RunPlugin`` (see ``toolchain/language_host.py``); the
toolkit reads the verdicts from the engine's structured ``PolicyEvent``s.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
from pydantic import BaseModel

from toolkit import settings
from toolkit.errors import ConfigError, PolicyViolationError

if TYPE_CHECKING:
    from pulumi.automation import PolicyEvent

PUBLISHED = "registry:"
PUBLISHED_DIR = "policy-packs"
"""Where published packs live inside the pool registry: ``<registry>/policy-packs/<name>/``."""


def check_pack_reference(reference: str) -> str:
    """The form of a pool's pack reference (``ValueError`` says what to fix).

    Whether the directory holds a pack is checked where it is used (``resolve_packs``)
    and by ``toolkit pool create``: a pool document read on another machine must parse.
    """
    if reference.startswith(PUBLISHED):
        if not reference[len(PUBLISHED) :]:
            raise ValueError(f"policy pack {reference!r} names no pack; use 'registry:NAME'")
        return reference
    if not Path(reference).is_absolute():
        raise ValueError(
            f"policy pack {reference!r} must be an absolute directory or 'registry:NAME' (a pack published "
            "with the pools project); `toolkit pool create --policy-pack DIR` resolves relative paths"
        )
    return reference


def check_pack_directory(directory: Path) -> None:
    """A directory the engine can run as a Python policy pack."""
    import yaml  # late: only pools with packs need it

    manifest = directory / "PulumiPolicy.yaml"
    if not manifest.is_file():
        raise ValueError(f"policy pack directory {str(directory)!r} has no PulumiPolicy.yaml")
    try:
        runtime = (yaml.safe_load(manifest.read_text()) or {}).get("runtime")
    except yaml.YAMLError as exc:
        raise ValueError(f"{manifest} is not valid YAML: {exc}") from None
    name = runtime.get("name") if isinstance(runtime, dict) else runtime
    if name != "python":
        raise ValueError(f"{manifest} declares runtime {name!r}; the toolkit runs Python policy packs (runtime: python)")
    if not (directory / "__main__.py").is_file():
        raise ValueError(f"policy pack directory {str(directory)!r} has no __main__.py declaring the PolicyPack")


def _fetch_published(name: str, registry_url: str) -> Path:
    """A local copy of a published pack, named by its content hash so runs share unchanged copies."""
    fs, root = fsspec.core.url_to_fs(registry_url)
    source = f"{root.rstrip('/')}/{PUBLISHED_DIR}/{name}"
    if not fs.isdir(source):
        raise ConfigError(
            f"policy pack 'registry:{name}' is not published in {registry_url}. Publish it with the pools "
            "project (PolicyPackResource) or name a local directory instead"
        )
    cache = settings.cache_dir() / PUBLISHED_DIR
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache))
    try:
        fs.get(f"{source}/", str(staging), recursive=True)
        digest = hashlib.sha256()
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(staging)).encode() + b"\0" + path.read_bytes())
        final = cache / f"{name}-{digest.hexdigest()[:16]}"
        if not final.exists():
            os.replace(staging, final)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_pack_environment(directory: Path, reference: str, pool_name: str) -> None:
    """The interpreter the pack will run on can import pulumi-policy (see ``language_host.plugin_interpreter``)."""
    from toolkit.toolchain.language_host import pulumis_own_language_host  # late: gRPC and protos

    if (directory / "venv").is_dir():
        return
    if pulumis_own_language_host() is not None:
        raise ConfigError(
            f"pool {pool_name!r} enforces the policy pack {reference!r}, and Pulumi's own Python language host "
            f"runs packs from their venv: python3 -m venv {directory}/venv && {directory}/venv/bin/pip install "
            f"-r {directory}/requirements.txt"
        )
    if importlib.util.find_spec("pulumi_policy") is None:
        raise ConfigError(
            f"pool {pool_name!r} enforces the policy pack {reference!r}, which needs pulumi-policy: "
            "pip install 'toolkit[policy]' (or give the pack its own venv with its requirements)"
        )


def resolve_packs(references: list[str], registry_url: str, pool_name: str) -> list[str]:
    """Local directories for the engine's ``--policy-pack``, checked before anything is provisioned."""
    directories = []
    for reference in references:
        if reference.startswith(PUBLISHED):
            directory = _fetch_published(reference[len(PUBLISHED) :], registry_url)
        else:
            directory = Path(reference)
        try:
            check_pack_directory(directory)
        except ValueError as exc:
            raise ConfigError(f"pool {pool_name!r}: {exc}. Fix the pack or the pool's policy_packs") from None
        _check_pack_environment(directory, reference, pool_name)
        directories.append(str(directory))
    return directories


class PolicyResult(BaseModel):
    """One verdict of a policy on a resource (or on the whole stack)."""

    pack: str
    policy: str
    enforcement: str
    """``advisory``, ``mandatory`` or ``remediate``, as the engine reports it."""
    resource: str | None = None
    resource_type: str | None = None
    message: str
    """What the policy reported about this resource."""
    description: str = ""
    """What the policy is for (the pack's description of it)."""

    @classmethod
    def from_event(cls, event: PolicyEvent) -> PolicyResult:
        resource = resource_type = None
        if event.resource_urn:
            # urn:pulumi:<stack>::<project>::<parent$...$type>::<name>
            parts = event.resource_urn.split("::")
            resource_type, resource = parts[-2].rsplit("$", 1)[-1], parts[-1]
        # pulumi-policy reports "<policy description>\n<violation message>"
        description, _, detail = event.message.strip().partition("\n")
        return cls(
            pack=event.policy_pack_name,
            policy=event.policy_name,
            enforcement=event.enforcement_level,
            resource=resource,
            resource_type=resource_type,
            message=detail.strip() or description.strip(),
            description=description.strip() if detail.strip() else "",
        )

    @property
    def mandatory(self) -> bool:
        return self.enforcement == "mandatory"

    def __str__(self) -> str:
        subject = f"{self.resource_type} {self.resource!r}" if self.resource else "the run stack"
        return f"[{self.enforcement}] {self.pack}/{self.policy} on {subject}: {self.message}"


def violation_error(
    results: list[PolicyResult], run_id: str, changes: list[Any] | None = None, during_up: bool = False
) -> PolicyViolationError:
    """The error of a call that mandatory policies stopped, naming each policy, resource and message.

    Runs are checked by a preview before ``up`` (nothing exists yet); ``during_up``
    covers a verdict only ``up`` could reach (a value unknown at preview).
    """
    when = "while its stack went up (what was created is torn down)" if during_up else "before anything was created"
    mandatory = [result for result in results if result.mandatory]
    lines = "\n".join(f"  - {result}" for result in mandatory)
    return PolicyViolationError(
        f"run {run_id} was stopped by {len(mandatory)} mandatory policy violation(s) of its pool's policy packs "
        f"{when}:\n{lines}\nChange the call's job variables to comply, or ask the pool's owners",
        results=list(results),
        changes=changes,
    )
