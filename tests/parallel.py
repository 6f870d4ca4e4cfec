"""The full suite in two parts (``--part``), the first on two workers (pytest-xdist, ``--dist loadgroup``).

``scripts/test`` runs ``--part=beside-the-cluster -n 2`` and then ``--part=cluster``:

- The cluster's tests (marker ``k8s``) run last and alone. They push images
  through the loopback registries into the cluster's node and wait on its
  pods, work that outlasts the test timeout when a second worker keeps both
  cores of a small machine busy.
- Of the others, every test that reaches the Docker engine joins one
  ``xdist_group`` and they run one after another on one worker, as in a
  serial run: ``test_faults`` restarts dockerd, environment images are named by
  their content on the one engine (one worker's prune removes another's). A
  test reaches the engine when it is marked ``docker`` or uses a fixture in
  ``DOCKER_FIXTURES``. The others (the fast lane and the engine's
  local-process tests, each worker with its own ``TOOLKIT_HOME``) spread over
  both workers.

In the first part the body of a test outside the group runs with
``DOCKER_HOST`` pointing nowhere (``NO_ENGINE``), so one that reaches the
engine after all fails, naming this file, instead of only when it meets the
engine mid-restart. The lane guard (``tests/lanes.py``) cannot see that: the
engine tests may start the Docker CLI, and their child processes (``toolkit
gc``, ``toolkit doctor``, a provider plugin) are not watched. Only until the
worker runs a test of the group: from then on it is the group's worker, where
the engine is safe to ask, and where the leak probes of a local-process test
must still look for the containers of the docker runs before it
(``tests/leaks.py``; a worker that made no docker run asks no engine). Set-up
and teardown always keep the engine.

The groups are scheduled by ``pytest_xdist_make_scheduler`` below: pytest-xdist's own
``loadgroup`` scheduler does not see them under pytest 9.

Without ``--part`` (the default, ``all``) a run selects every test, one after
another. A part that selects nothing leaves pytest's exit status 5, which
``scripts/test`` accepts when the other part ran tests.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SHARED_ENGINE_GROUP = "docker-engine"
PARTS = ("all", "beside-the-cluster", "cluster")
DOCKER_FIXTURES = ("prefect_server",)
"""Fixtures that ask the Docker engine: the Prefect server listens on the bridge's gateway, looked up there."""
NO_ENGINE = "unix:///not-in-the-docker-engine-group/see-tests-parallel.py/docker.sock"
GROUPS_KEY = "toolkit_xdist_groups"
"""The ``workerinput`` key naming the file where workers leave each grouped test's group for the scheduler."""
_GROUPS_FILE = pytest.StashKey[Path]()
_RAN_THE_GROUP = False
"""Whether this worker has run a test of the group: it is the group's worker, where the engine is safe to ask."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--part", choices=PARTS, default="all",
        help="beside-the-cluster: every test but the k8s-marked ones; cluster: only those (tests/parallel.py)",
    )


def is_cluster_test(item: pytest.Item) -> bool:
    return item.get_closest_marker("k8s") is not None


def reaches_docker(item: pytest.Item) -> bool:
    fixtures = getattr(item, "fixturenames", ())
    return item.get_closest_marker("docker") is not None or any(name in fixtures for name in DOCKER_FIXTURES)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    part = config.getoption("part")
    if part != "all":
        wanted = part == "cluster"
        left_out = [item for item in items if is_cluster_test(item) != wanted]
        if left_out:
            config.hook.pytest_deselected(items=left_out)
            items[:] = [item for item in items if is_cluster_test(item) == wanted]
    for item in items:
        if reaches_docker(item):
            item.add_marker(pytest.mark.xdist_group(SHARED_ENGINE_GROUP))
    groups_file = getattr(config, "workerinput", {}).get(GROUPS_KEY)
    if groups_file:
        _write_groups(Path(groups_file), items)


def _write_groups(path: Path, items: list[pytest.Item]) -> None:
    """Each test's ``xdist_group``, by node id; every worker writes the same, each file whole."""
    groups = {
        item.nodeid: str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        for item in items
        if (mark := item.get_closest_marker("xdist_group"))
    }
    partial = path.with_name(f"{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(groups))
    os.replace(partial, path)


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.stash[_GROUPS_FILE] = Path(tempfile.mkdtemp(prefix="toolkit-xdist-")) / "groups.json"


def pytest_unconfigure(config: pytest.Config) -> None:
    groups_file = config.stash.get(_GROUPS_FILE, None)
    if groups_file is not None:
        shutil.rmtree(groups_file.parent, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    node.workerinput[GROUPS_KEY] = str(node.config.stash[_GROUPS_FILE])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` as xdist means it: pytest-xdist 3.8 marks a group by rewriting ``item._nodeid``,
    which pytest 9 no longer reads, so its own scheduler sees no group and spreads a group's tests."""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    groups_file = config.stash[_GROUPS_FILE]

    class GroupScheduling(LoadScopeScheduling):
        """Each test is a unit of its own, but the tests of one ``xdist_group`` are one unit together."""

        _groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._groups is None:  # the workers wrote it before they reported their collection
                self._groups = json.loads(groups_file.read_text()) if groups_file.exists() else {}
            return self._groups.get(nodeid, nodeid)

    return GroupScheduling(config, log)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """The body of a test outside the group, in the first part, without the Docker engine (see the module's text)."""
    global _RAN_THE_GROUP
    if reaches_docker(item):
        _RAN_THE_GROUP = True
    if item.config.getoption("part") != "beside-the-cluster" or _RAN_THE_GROUP:
        yield
        return
    before = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = NO_ENGINE
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = before
