"""The target registry: one row per target, and everything that names targets reads it.

A row says where the target's class is, which pip extra brings its SDKs, and
how the faces name it: the decorator's default pool, the Prefect work pool
types it runs (``toolkit pool import``) and the Prefect worker classes it
stands in for (``toolkit.prefect``). The decorators (``toolkit.process`` ...),
``toolkit.__all__``, ``toolkit.prefect``'s decorators and workers, the pool
import's type table and the CLI's list of types all come from here, so a new
target is one module or folder of ``toolkit.targets`` plus one row. A third
party adds its row through an entry point of the ``toolkit.targets`` group
naming a ``TargetRow``; duplicate names are an error.

Nothing here imports a target: the cloud SDKs are large, and a decorator whose
SDK is missing must fail with the ``pip install`` line, not an ImportError.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from toolkit.errors import ConfigError, TargetUnavailableError

if TYPE_CHECKING:
    from toolkit.infra.base import Target

ENTRY_POINT_GROUP = "toolkit.targets"


@dataclass(frozen=True)
class TargetRow:
    """One target, as everything that names it needs to know it without importing it."""

    path: str
    """``module:Class`` of the target."""
    extra: str | None = None
    """pip extra providing its SDKs, for the hint shown when they are missing (None: the core install)."""
    default_pool: str | None = None
    """The pool its decorator uses when none is named (a built-in pool)."""
    prefect_types: tuple[str, ...] = ()
    """Prefect work pool types whose templates ``toolkit pool import`` turns into pools of this target."""
    prefect_workers: tuple[str, ...] = ()
    """Names of Prefect's worker classes that ``toolkit.prefect`` offers for this target."""


TARGETS: dict[str, TargetRow] = {
    "process": TargetRow("toolkit.targets.process:ProcessTarget", None, "local-process", ("process",), ("ProcessWorker",)),
    "docker": TargetRow("toolkit.targets.docker.target:DockerTarget", None, "local-docker", ("docker",), ("DockerWorker",)),
    "kubernetes": TargetRow(
        "toolkit.targets.kubernetes.target:KubernetesTarget", "kubernetes", None, ("kubernetes",), ("KubernetesWorker",)
    ),
    "ecs": TargetRow("toolkit.targets.ecs.target:EcsTarget", "aws", None, ("ecs",), ("ECSWorker",)),
    "cloud_run": TargetRow(
        "toolkit.targets.cloud_run.target:CloudRunTarget",
        "gcp",
        None,
        ("cloud-run", "cloud-run-v2"),
        ("CloudRunWorker", "CloudRunWorkerV2"),
    ),
    "vertex_ai": TargetRow(
        "toolkit.targets.vertex_ai.target:VertexAiTarget", "gcp", None, ("vertex-ai",), ("VertexAIWorker",)
    ),
    "azure_container_instance": TargetRow(
        "toolkit.targets.azure_container_instance.target:AzureContainerInstanceTarget",
        "azure",
        None,
        ("azure-container-instance",),
        ("AzureContainerWorker",),
    ),
}
"""The built-in targets (a declarative table)."""


@functools.cache
def registry() -> dict[str, TargetRow]:
    """The built-in rows plus those of the ``toolkit.targets`` entry points."""
    table = dict(TARGETS)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in table:
            raise ConfigError(
                f"target {entry.name!r} from entry point {entry.value!r} clashes with an existing "
                "target of that name; rename it"
            )
        row = entry.load()
        if not isinstance(row, TargetRow):
            raise ConfigError(
                f"entry point {entry.name!r} = {entry.value!r} of group {ENTRY_POINT_GROUP!r} names a "
                f"{type(row).__name__}, not a toolkit.infra.registry.TargetRow; point it at the target's row"
            )
        table[entry.name] = row
    return table


def target_names() -> list[str]:
    return sorted(registry())


def prefect_types() -> dict[str, str]:
    """Prefect work pool type -> the target that runs the same kind of job."""
    return {prefect: name for name, row in registry().items() for prefect in row.prefect_types}


def prefect_workers() -> dict[str, str]:
    """A Prefect worker class's name -> the target it runs on."""
    return {worker: name for name, row in registry().items() for worker in row.prefect_workers}


@functools.cache
def get_target_class(name: str) -> type[Target]:
    """The target class for ``name``; clear errors for unknown names and missing SDKs."""
    row = registry().get(name)
    if row is None:
        raise ConfigError(f"unknown target type {name!r}. Known: {', '.join(target_names())}")
    module_name, _, class_name = row.path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("toolkit"):
            raise
        hint = f"pip install 'toolkit[{row.extra}]'" if row.extra else "pip install toolkit"
        raise TargetUnavailableError(
            f"target {name!r} needs the package {exc.name!r}, which is not installed. Run: {hint}"
        ) from exc
    return getattr(module, class_name)


def get_target(name: str) -> Target:
    return get_target_class(name)()
