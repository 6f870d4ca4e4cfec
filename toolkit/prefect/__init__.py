"""Coming from Prefect: its infrastructure decorators, workers and work pool templates on the toolkit.

``from toolkit.prefect import kubernetes, KubernetesWorker`` in place of
``from prefect_kubernetes import ...`` (see ``toolkit.prefect.infrastructure``);
``toolkit pool import`` takes a Prefect work pool's base job template
(``toolkit.prefect.pool_import``). Prefect itself is needed only where a flow
is defined and run, never to import this package: names load lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

_INFRASTRUCTURE = "toolkit.prefect.infrastructure"
_EXPORTS = {
    name: _INFRASTRUCTURE
    for name in (
        "process",
        "docker",
        "kubernetes",
        "ecs",
        "cloud_run",
        "vertex_ai",
        "azure_container_instance",
        "ProcessWorker",
        "DockerWorker",
        "KubernetesWorker",
        "ECSWorker",
        "CloudRunWorker",
        "CloudRunWorkerV2",
        "VertexAIWorker",
        "AzureContainerWorker",
        "PrefectBoundFlow",
        "PrefectWorker",
    )
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'toolkit.prefect' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
