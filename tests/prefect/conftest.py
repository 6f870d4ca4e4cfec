"""Fixtures for real Prefect: a cached venv with Prefect and the toolkit's dependencies, a local server.

Prefect stays out of the toolkit's venv: flows are defined and submitted by
client scripts run with the Prefect venv's interpreter (``run_client``), the
toolkit coming from this checkout through PYTHONPATH. The venv is built once
per machine under ``~/.cache/toolkit/tests/`` (keyed by what it holds); the
server is one per test session, bound to the Docker bridge's gateway so
containers reach it as well as this host. Results are checked through the
server's REST API from the test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.prefect import harness

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "toolkit" / "tests"


def toolkit_requirements() -> list[str]:
    """The toolkit's pinned core and kubernetes dependencies, so client scripts run the same versions."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["kubernetes"]]


@dataclass(frozen=True)
class PrefectVenv:
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


@pytest.fixture(scope="session")
def prefect_venv() -> PrefectVenv:
    venv = CACHE / "prefect-venv"
    python_version = ".".join(map(str, sys.version_info[:3]))
    harness.ensure_venv(venv, [f"prefect=={harness.PREFECT}", *toolkit_requirements()], python_version)
    return PrefectVenv(venv)


@dataclass(frozen=True)
class PrefectServer:
    api_url: str
    env: dict[str, str]

    def flow_runs(self, flow_name: str) -> list[dict[str, Any]]:
        """Flow runs of the flow named ``flow_name``, newest first, through the REST API."""
        body = json.dumps({"flows": {"name": {"any_": [flow_name]}}, "sort": "EXPECTED_START_TIME_DESC"}).encode()
        request = urllib.request.Request(
            f"{self.api_url}/flow_runs/filter", data=body, headers={"Content-Type": "application/json"}
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=30) as response:
            return json.loads(response.read())


@pytest.fixture(scope="session")
def prefect_server(prefect_venv: PrefectVenv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    work = tmp_path_factory.mktemp("prefect-server")
    with harness.outbound_sink() as sink:
        host = harness.bridge_gateway()
        port = harness.free_port(host)
        env = harness.server_env(prefect_venv.path, work / "home", host, port, sink)
        with harness.prefect_server(prefect_venv.path, env, work / "server.log"):
            yield PrefectServer(env["PREFECT_API_URL"], env)
        assert sink.attempts == [], f"something tried to reach the network: {sink.attempts}"


@dataclass(frozen=True)
class ClientRun:
    outcome: Any
    """The JSON document the script printed as its last line."""
    stdout: str


def run_client(
    venv: PrefectVenv, script: str, tmp_path: Path, env: dict[str, str] | None = None, timeout: float = 900
) -> ClientRun:
    """Run ``script`` with the Prefect venv's python; it prints one JSON document as its last line.

    ``env`` is the Prefect environment (a server's); without it the client
    has no Prefect API at all and a Prefect home of its own.
    """
    path = tmp_path / "client.py"
    path.write_text(script)
    if env is None:
        env = {**harness.venv_env(venv.path), "PREFECT_HOME": str(tmp_path / "prefect-home")}
        env.pop("PREFECT_API_URL", None)
    environment = {**env, "PYTHONPATH": str(ROOT)}
    for name in ("TOOLKIT_HOME", "TOOLKIT_PROGRESS", "TOOLKIT_RUNNER_IMAGE"):
        if name in os.environ:
            environment[name] = os.environ[name]
    done = subprocess.run(
        [str(venv.python), str(path)], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"client failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    return ClientRun(json.loads(done.stdout.strip().splitlines()[-1]), done.stdout)
