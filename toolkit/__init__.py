"""toolkit: run a Python function on real infrastructure through an ephemeral Pulumi stack per call.

Public names load lazily (PEP 562): jobs run ``python -m toolkit.runner``,
which imports this package, and must not pay for Pulumi or the cloud SDKs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from toolkit._version import __version__

_EXPORTS = {
    "process": "toolkit.decorators",
    "docker": "toolkit.decorators",
    "kubernetes": "toolkit.decorators",
    "ecs": "toolkit.decorators",
    "cloud_run": "toolkit.decorators",
    "vertex_ai": "toolkit.decorators",
    "azure_container_instance": "toolkit.decorators",
    "InfraFunction": "toolkit.decorators",
    "Submitter": "toolkit.submitter",
    "RunFuture": "toolkit.futures",
    "MapFuture": "toolkit.fanout.future",
    "MapItem": "toolkit.fanout.future",
    "Plan": "toolkit.plan",
    "ResourceChange": "toolkit.plan",
    "WorkPool": "toolkit.pools",
    "PoolRegistry": "toolkit.pools",
    "WorkPoolResource": "toolkit.pools_as_code",
    "PolicyPackResource": "toolkit.pools_as_code",
    "PolicyResult": "toolkit.guardrails.policy",
    "secret": "toolkit.secretvalues",
}

__all__ = [
    "process",
    "docker",
    "kubernetes",
    "ecs",
    "cloud_run",
    "vertex_ai",
    "azure_container_instance",
    "InfraFunction",
    "Submitter",
    "RunFuture",
    "MapFuture",
    "MapItem",
    "Plan",
    "ResourceChange",
    "WorkPool",
    "PoolRegistry",
    "WorkPoolResource",
    "PolicyPackResource",
    "PolicyResult",
    "secret",
    "__version__",
]

if TYPE_CHECKING:
    from toolkit.decorators import (
        InfraFunction,
        azure_container_instance,
        cloud_run,
        docker,
        ecs,
        kubernetes,
        process,
        vertex_ai,
    )
    from toolkit.fanout.future import MapFuture, MapItem
    from toolkit.futures import RunFuture
    from toolkit.guardrails.policy import PolicyResult
    from toolkit.plan import Plan, ResourceChange
    from toolkit.pools import PoolRegistry, WorkPool
    from toolkit.pools_as_code import PolicyPackResource, WorkPoolResource
    from toolkit.secretvalues import secret
    from toolkit.submitter import Submitter


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
