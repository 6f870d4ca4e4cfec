"""Test session setup: a private TOOLKIT_HOME (pools, runs, local state), quiet progress, and
every environment the session built removed at its end.

The Pulumi CLI, plugins and runner image are the real ones installed by
``toolkit toolchain install`` (scripts/test runs it first).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["tests.prefect.fixtures"]
"""Prefect's venv and server (session fixtures), used by tests/prefect and by tests/k8s alike."""


def pytest_configure(config: pytest.Config) -> None:
    # Set before any toolkit module reads it; every path derives from it at call time.
    os.environ["TOOLKIT_HOME"] = tempfile.mkdtemp(prefix="toolkit-test-home-")
    os.environ["TOOLKIT_PROGRESS"] = "0"
    os.environ.pop("TOOLKIT_POOLS_URL", None)
    os.environ.pop("TOOLKIT_BACKEND_URL", None)


@pytest.fixture(scope="session")
def toolkit_home() -> Path:
    return Path(os.environ["TOOLKIT_HOME"])


@pytest.fixture(scope="session", autouse=True)
def _prune_environments_at_the_end(toolkit_home: Path):
    """Environment images live on the shared Docker engine, outside this session's TOOLKIT_HOME:
    any test (environments, Prefect flows, a docker call importing a package) may have built one."""
    yield
    from toolkit import settings

    if not (toolkit_home / "state" / ".pulumi" / "stacks" / settings.ENV_PROJECT).exists():
        return  # no environment stack was ever made: no Pulumi call needed
    from toolkit.environments import manage

    leftover = [result for result in manage.prune() if result.error]
    assert not leftover, f"could not prune environments: {leftover}"
