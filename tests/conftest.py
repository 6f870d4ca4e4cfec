"""Test session setup: a private TOOLKIT_HOME (pools, runs, local state), quiet progress, and
every environment a test module built removed when the module ends.

The Pulumi CLI, plugins and runner image are the real ones installed by
``toolkit toolchain install`` (scripts/test runs it first).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.prefect.fixtures", "tests.lanes", "tests.parallel"]
"""Prefect's venv and server (session fixtures), used by tests/prefect and by tests/k8s alike; the fast
lane's guard (a test without the engine, docker or k8s marker uses none of them); the groups of a run on
several workers."""


def pytest_configure(config: pytest.Config) -> None:
    # Set before any toolkit module reads it; every path derives from it at call time.
    os.environ["TOOLKIT_HOME"] = tempfile.mkdtemp(prefix="toolkit-test-home-")
    os.environ["TOOLKIT_PROGRESS"] = "0"
    os.environ.pop("TOOLKIT_POOLS_URL", None)
    os.environ.pop("TOOLKIT_BACKEND_URL", None)


@pytest.fixture(scope="session")
def toolkit_home() -> Path:
    return Path(os.environ["TOOLKIT_HOME"])


@pytest.fixture(scope="module", autouse=True)
def _prune_the_modules_environments(toolkit_home: Path) -> Iterator[None]:
    """A test module leaves no environment stack behind, so no module depends on what ran before it.

    Environment stacks are long-lived by design and their images live on the shared Docker engine,
    outside this session's TOOLKIT_HOME: any test (environments, Prefect flows, a docker call
    importing a package) may build one. Those the module found stay (none, when modules clean up).
    """
    before = _environment_stacks(toolkit_home)
    yield
    made = _environment_stacks(toolkit_home) - before
    if not made:
        return
    from toolkit.environments import manage

    leftover = [result for result in manage.prune(stacks=made) if result.error]
    assert not leftover, f"could not prune the module's environments: {leftover}"


def _environment_stacks(toolkit_home: Path) -> set[str]:
    """The environment stacks in this session's local file backend, read from its folder.

    Read from disk rather than with ``pulumi stack ls``: this runs before every module, fast-lane
    modules too, where no Pulumi CLI may start (tests/lanes.py)."""
    from toolkit import settings

    folder = toolkit_home / "state" / ".pulumi" / "stacks" / settings.ENV_PROJECT
    if not folder.is_dir():
        return set()
    return {
        path.name.removesuffix(suffix)
        for path in folder.iterdir()
        for suffix in (".json", ".json.gz")
        if path.name.endswith(suffix)
    }
