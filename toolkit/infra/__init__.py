"""The target registry: one table maps a target name to its class and install hint.

A new target is one module in this package plus one row here (or, for a third
party, an entry point in the ``toolkit.targets`` group). Modules load lazily:
the cloud SDKs are large, and a decorator whose SDK is missing must fail with
the ``pip install`` line, not an ImportError.
"""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import entry_points
from typing import NamedTuple

from toolkit.errors import ConfigError, TargetUnavailableError
from toolkit.infra.base import Target


class TargetEntry(NamedTuple):
    path: str
    """``module:Class`` of the target."""
    extra: str | None
    """pip extra providing its SDKs, for the hint shown when they are missing."""


KNOWN_TARGETS: dict[str, TargetEntry] = {
    "process": TargetEntry("toolkit.infra.process:ProcessTarget", None),
    "docker": TargetEntry("toolkit.infra.docker:DockerTarget", None),
    "kubernetes": TargetEntry("toolkit.infra.kubernetes:KubernetesTarget", "kubernetes"),
    "ecs": TargetEntry("toolkit.infra.ecs:EcsTarget", "aws"),
    "cloud_run": TargetEntry("toolkit.infra.cloud_run:CloudRunTarget", "gcp"),
    "vertex_ai": TargetEntry("toolkit.infra.vertex_ai:VertexAiTarget", "gcp"),
    "azure_container_instance": TargetEntry(
        "toolkit.infra.azure_container_instance:AzureContainerInstanceTarget", "azure"
    ),
}


@functools.cache
def registry() -> dict[str, TargetEntry]:
    """Built-in targets plus those registered through the ``toolkit.targets`` entry points."""
    table = dict(KNOWN_TARGETS)
    for entry in entry_points(group="toolkit.targets"):
        if entry.name in table:
            raise ConfigError(
                f"target {entry.name!r} from entry point {entry.value!r} clashes with an existing "
                "target of that name; rename it"
            )
        table[entry.name] = TargetEntry(entry.value, None)
    return table


def target_names() -> list[str]:
    return sorted(registry())


@functools.cache
def get_target_class(name: str) -> type[Target]:
    """The target class for ``name``; clear errors for unknown names and missing SDKs."""
    entry = registry().get(name)
    if entry is None:
        raise ConfigError(f"unknown target type {name!r}. Known: {', '.join(target_names())}")
    module_name, _, class_name = entry.path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("toolkit"):
            raise
        hint = f"pip install 'toolkit[{entry.extra}]'" if entry.extra else "pip install toolkit"
        raise TargetUnavailableError(
            f"target {name!r} needs the package {exc.name!r}, which is not installed. Run: {hint}"
        ) from exc
    return getattr(module, class_name)


def get_target(name: str) -> Target:
    return get_target_class(name)()
