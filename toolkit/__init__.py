"""toolkit: run a Python function on real infrastructure through an ephemeral Pulumi stack per call.

Public names load lazily (PEP 562): jobs run ``python -m toolkit.runner``,
which imports this package, and must not pay for Pulumi or the cloud SDKs.

Dependencies point one way. Layers, lowest first; a layer imports only the
layers below it (``import-linter`` holds this in the test suite, its contracts
are in ``pyproject.toml``):

1. settings, errors and the wire layout (``settings``, ``errors``, ``bundles``,
   ``storage_urls``, ``secretvalues``, ``nested``);
2. the infra contract (``infra``: what a target is, the run's models);
3. targets, bundles' users, templating, environments, toolchain, pools, policy
   packs, the Pulumi workspace and the records beside them;
4. engine and preparation (one run stack; one call made ready to provision);
5. futures, fanout, guardrails, preview and gc (a run's lifecycle);
6. decorators and the submitter (the public API);
7. cli, prefect and ui (the faces).

``runner`` runs inside the job and imports only the standard library,
cloudpickle, fsspec and ``bundles``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from toolkit._version import __version__

_EXPORTS = {
    "InfraFunction": "toolkit.decorators",
    "Submitter": "toolkit.submitter",
    "RunFuture": "toolkit.futures",
    "MapFuture": "toolkit.fanout.map_future",
    "MapItem": "toolkit.fanout.map_future",
    "Plan": "toolkit.plan",
    "ResourceChange": "toolkit.plan",
    "WorkPool": "toolkit.pools.registry",
    "PoolRegistry": "toolkit.pools.registry",
    "WorkPoolResource": "toolkit.pools.as_code",
    "PolicyPackResource": "toolkit.pools.as_code",
    "PolicyResult": "toolkit.policy_packs",
    "secret": "toolkit.secretvalues",
}
"""Public names other than the decorators, which are one per row of the target registry."""


def _target_names() -> list[str]:
    from toolkit.infra.registry import target_names

    return target_names()


if TYPE_CHECKING:
    from toolkit.decorators import InfraFunction
    from toolkit.fanout.map_future import MapFuture, MapItem
    from toolkit.futures import RunFuture
    from toolkit.plan import Plan, ResourceChange
    from toolkit.policy_packs import PolicyResult
    from toolkit.pools.as_code import PolicyPackResource, WorkPoolResource
    from toolkit.pools.registry import PoolRegistry, WorkPool
    from toolkit.secretvalues import secret
    from toolkit.submitter import Submitter


def __getattr__(name: str) -> Any:
    if name == "__all__":  # the decorators' names come from the target registry, read on first use
        return [*_target_names(), *_EXPORTS, "__version__"]
    module = _EXPORTS.get(name)
    if module is None and not name.startswith("_") and name in _target_names():
        module = "toolkit.decorators"
    if module is None:
        raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
