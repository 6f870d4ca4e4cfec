"""Running the suite on several workers (pytest-xdist with ``--dist loadgroup``).

Tests that use the Docker engine or the local cluster share them with side
effects a second worker would trip over: ``test_faults`` restarts dockerd,
environment images are named by their content on the one engine (one
worker's prune removes another's), and the cluster's tests share its node. So
every test marked ``docker`` or ``k8s`` joins one ``xdist_group`` and they run
one after another on one worker, as in a serial run; the others (the fast
lane and the engine's local-process tests, each worker with its own
``TOOLKIT_HOME``) spread over the workers.
"""

from __future__ import annotations

import pytest

SHARED_ENGINES = ("docker", "k8s")
GROUP = "docker-engine-and-cluster"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(name) for name in SHARED_ENGINES):
            item.add_marker(pytest.mark.xdist_group(GROUP))
