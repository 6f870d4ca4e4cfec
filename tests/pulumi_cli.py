"""Running Pulumi projects through the real CLI in tests, on a private toolchain directory and backend.

The toolchain directory holds a hard link to the installed Pulumi CLI plus the
toolkit's language host and dynamic provider shim, written by the code under
test; the engine then finds both next to itself, as after `toolkit toolchain
install`, without touching the user's ``~/.cache/toolkit``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from toolkit import settings
from toolkit.toolchain.language_host import install_language_host
from toolkit.toolchain.pulumi_env import pulumi_env
from toolkit.toolchain.shim import install_provider_plugin, install_shim


@dataclass(frozen=True)
class Outcome:
    returncode: int
    output: str
    """stdout then stderr: where the CLI prints program output depends on its display mode."""


@dataclass(frozen=True)
class PulumiCli:
    """The Pulumi CLI with an environment of its own: toolchain, ``PULUMI_HOME``, file backend."""

    binary: Path
    env: dict[str, str]
    backend_url: str

    def run(self, *args: str, cwd: Path, check: bool = True) -> Outcome:
        result = subprocess.run(
            [str(self.binary), *args, "--non-interactive"], cwd=cwd, env=self.env,
            capture_output=True, text=True, timeout=300,
        )
        outcome = Outcome(result.returncode, result.stdout + result.stderr)
        if check and result.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} failed ({result.returncode}):\n{outcome.output}")
        return outcome

    def json(self, *args: str, cwd: Path) -> Any:
        """A command's ``--json`` document (stdout only)."""
        result = subprocess.run(
            [str(self.binary), *args, "--json", "--non-interactive"], cwd=cwd, env=self.env,
            capture_output=True, text=True, timeout=300,
        )
        if result.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} --json failed ({result.returncode}):\n{result.stderr}")
        return json.loads(result.stdout)


def make_cli(root: Path) -> PulumiCli:
    """A private toolchain and backend under ``root``; fails (never skips) if the CLI is not installed."""
    installed = settings.pulumi_binary()
    if installed is None or not installed.exists():
        pytest.fail("the Pulumi CLI is not installed; run `toolkit toolchain install` first")
    cache = root / "cache"
    bin_dir = cache / "bin"
    bin_dir.mkdir(parents=True)
    binary = bin_dir / "pulumi"
    try:
        os.link(installed, binary)
    except OSError:  # another filesystem
        shutil.copy2(installed, binary)
    install_language_host(bin_dir)
    install_shim(bin_dir)
    install_provider_plugin(bin_dir)
    state = root / "state"
    state.mkdir()
    backend_url = f"file://{state}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOOLKIT_CACHE_DIR", str(cache))
        patch.delenv("TOOLKIT_PULUMI", raising=False)
        env = {**os.environ, **pulumi_env(backend_url)}
    env["PULUMI_HOME"] = str(root / "pulumi-home")
    env["TOOLKIT_CACHE_DIR"] = str(cache)
    env.pop("TOOLKIT_PULUMI", None)
    return PulumiCli(binary=binary, env=env, backend_url=backend_url)
