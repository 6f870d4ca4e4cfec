"""Fixtures for real Prefect: a cached venv with Prefect and the toolkit's dependencies, a local server.

A plugin of the root conftest (``pytest_plugins``), so tests/prefect and
tests/k8s share one server per session.

Prefect stays out of the toolkit's venv: flows are defined and submitted by
client scripts run with the Prefect venv's interpreter (``run_client``), the
toolkit coming from this checkout through PYTHONPATH. The venv is built once
per machine under ``~/.cache/toolkit/tests/`` (keyed by what it holds); the
server is one per test session, bound to the Docker bridge's gateway so
containers (and the local cluster's pods) reach it as well as this host, and
it requires an auth string, so a job reports there only if the caller's
Prefect settings reached it (``toolkit.prefect_flows``). Results are checked
through the server's REST API from the test process.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.prefect import harness

ROOT = harness.ROOT


@dataclass(frozen=True)
class PrefectVenv:
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


@pytest.fixture(scope="session")
def prefect_venv() -> PrefectVenv:
    """Built before pytest starts by scripts/test (so no test's timeout covers it); a file read here."""
    return PrefectVenv(harness.ensure_test_venv())


@dataclass(frozen=True)
class PrefectServer:
    api_url: str
    env: dict[str, str]
    auth_string: str
    """The server takes only requests with it: a job reports there only if it got the caller's (a secret)."""

    def flow_runs(self, flow_name: str) -> list[dict[str, Any]]:
        """Flow runs of the flow named ``flow_name``, newest first, through the REST API."""
        body = json.dumps({"flows": {"name": {"any_": [flow_name]}}, "sort": "EXPECTED_START_TIME_DESC"}).encode()
        authorization = "Basic " + base64.b64encode(self.auth_string.encode()).decode()
        request = urllib.request.Request(
            f"{self.api_url}/flow_runs/filter", data=body,
            headers={"Content-Type": "application/json", "Authorization": authorization},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=30) as response:
            return json.loads(response.read())

    def flow_run_ids(self, flow_name: str) -> set[str]:
        """Ids of the flow's runs so far: what a test's own run is told apart from."""
        return {run["id"] for run in self.flow_runs(flow_name)}


@pytest.fixture(scope="session")
def prefect_server(prefect_venv: PrefectVenv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    work = tmp_path_factory.mktemp("prefect-server")
    with harness.outbound_sink() as sink:
        host = harness.bridge_gateway()
        port = harness.free_port(host)
        auth_string = f"toolkit-tests:{secrets.token_urlsafe(12)}"
        env = harness.server_env(prefect_venv.path, work / "home", host, port, sink, auth_string)
        with harness.prefect_server(prefect_venv.path, env, work / "server.log"):
            yield PrefectServer(env["PREFECT_API_URL"], env, auth_string)
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
    has no Prefect API at all and a Prefect home of its own. With it, the
    client reaches the package index directly (environments resolve with pip
    there) and everything else only through the server's outbound sink.
    """
    path = tmp_path / "client.py"
    path.write_text(script)
    if env is None:
        env = {**harness.venv_env(venv.path), "PREFECT_HOME": str(tmp_path / "prefect-home")}
        env.pop("PREFECT_API_URL", None)
    environment = {**env, "PYTHONPATH": str(ROOT)}
    if "NO_PROXY" in environment:  # the server's environment: past the sink, only the package index
        hosts = ",".join(harness.package_index_hosts())
        environment["NO_PROXY"] = environment["no_proxy"] = f"{environment['NO_PROXY']},{hosts}"
    for name in ("TOOLKIT_HOME", "TOOLKIT_PROGRESS", "TOOLKIT_RUNNER_IMAGE"):
        if name in os.environ:
            environment[name] = os.environ[name]
    done = subprocess.run(
        [str(venv.python), str(path)], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"client failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    return ClientRun(json.loads(done.stdout.strip().splitlines()[-1]), done.stdout)
