"""Test session setup: a private TOOLKIT_HOME (pools, runs, local state), quiet progress.

The Pulumi CLI, plugins and runner image are the real ones installed by
``toolkit toolchain install`` (scripts/test runs it first).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Set before any toolkit module reads it; every path derives from it at call time.
    os.environ["TOOLKIT_HOME"] = tempfile.mkdtemp(prefix="toolkit-test-home-")
    os.environ["TOOLKIT_PROGRESS"] = "0"
    os.environ.pop("TOOLKIT_POOLS_URL", None)
    os.environ.pop("TOOLKIT_BACKEND_URL", None)


@pytest.fixture(scope="session")
def toolkit_home() -> Path:
    return Path(os.environ["TOOLKIT_HOME"])
