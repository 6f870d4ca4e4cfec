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


def _names() -> list[str]:
    """The decorators and workers of every registered target (``toolkit.infra.registry``), and the bases."""
    from toolkit.infra.registry import prefect_workers, target_names

    return sorted([*target_names(), *prefect_workers(), "PrefectBoundFlow", "PrefectWorker"])


def __getattr__(name: str) -> Any:
    if name == "__all__":
        return _names()
    if name.startswith("_") or name not in _names():
        raise AttributeError(f"module 'toolkit.prefect' has no attribute {name!r}")
    value = getattr(importlib.import_module(_INFRASTRUCTURE), name)
    globals()[name] = value
    return value
