"""Azure stand-ins on loopback: Azurite (Blob storage) and a fake of the ARM calls the ACI watcher makes.

``azurite``: Azurite from the npm registry (``npm install azurite@3`` into
``~/.cache/toolkit/emulators/azurite`` on first use), ``azurite-blob`` started
in a temporary directory on a free port. Besides its documented development
account it serves the accounts a test module lists in ``AZURITE_ACCOUNTS``
(Azurite's ``AZURITE_ACCOUNTS`` variable), so a test can use the very storage
account name a run provisions. If npm or Azurite fails, the fixture fails
with the reason: it never skips.

``fake_arm``: ``GET`` of a container group (with instance views) and of a
container's logs, in the shapes of the Microsoft.ContainerInstance REST API.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.emulators.fakehttp import FakeHttpServer, Request
from tests.emulators.gcp import emulator_cache, free_port, wait_until_serving

AZURITE_PACKAGE = "azurite@3"
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
"""Azurite's documented development account key (public, fixed)."""


def account_key(account: str) -> str:
    """A deterministic base64 key for an emulated account."""
    return base64.b64encode(hashlib.sha512(account.encode()).digest()).decode()


def azurite_binary() -> Path:
    """Install Azurite from npm once; later runs reuse it."""
    prefix = emulator_cache() / "azurite"
    binary = prefix / "node_modules" / ".bin" / "azurite-blob"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("the Azure Blob emulator needs npm to install Azurite; install Node.js and npm")
    prefix.mkdir(parents=True, exist_ok=True)
    install = subprocess.run(
        [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", AZURITE_PACKAGE],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if install.returncode != 0 or not binary.exists():
        pytest.fail(
            f"`npm install {AZURITE_PACKAGE}` failed (is the npm registry reachable?):\n{install.stderr[-3000:]}"
        )
    return binary


@dataclass
class Azurite:
    blob_endpoint: str

    def connection_string(self, account: str = DEV_ACCOUNT) -> str:
        key = DEV_KEY if account == DEV_ACCOUNT else account_key(account)
        return (
            f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
            f"BlobEndpoint={self.blob_endpoint}/{account};"
        )


@pytest.fixture(scope="module")
def azurite(request: pytest.FixtureRequest) -> Iterator[Azurite]:
    binary = azurite_binary()
    accounts = [DEV_ACCOUNT, *getattr(request.module, "AZURITE_ACCOUNTS", ())]
    keys = ";".join(f"{a}:{DEV_KEY if a == DEV_ACCOUNT else account_key(a)}" for a in accounts)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="azurite-") as location:
        process = subprocess.Popen(
            [
                str(binary),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
                "--location",
                location,
                "--skipApiVersionCheck",
                "--silent",
            ],
            env={**os.environ, "AZURITE_ACCOUNTS": keys},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        endpoint = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(f"{endpoint}/{DEV_ACCOUNT}?comp=list", process, "azurite-blob")
            yield Azurite(endpoint)
        finally:
            process.terminate()
            process.wait(timeout=10)


# -- fake Azure Resource Manager ------------------------------------------------------------------


@dataclass
class FakeArm:
    server: FakeHttpServer
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def install(self) -> None:
        group = (
            r"(/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.ContainerInstance/containerGroups/[^/]+)"
        )
        self.server.route("GET", group, self._get_group)
        self.server.route("GET", group + r"/containers/([^/]+)/logs", self._get_logs)

    def _get_group(self, match: re.Match[str], request: Request) -> tuple[int, dict[str, Any]]:
        if "api-version" not in request.query:
            return 400, {
                "error": {
                    "code": "MissingApiVersionParameter",
                    "message": "The api-version query parameter is required.",
                }
            }
        group = self.groups.get(match.group(1))
        if group is None:
            return 404, {
                "error": {"code": "ResourceNotFound", "message": f"The Resource '{match.group(1)}' was not found."}
            }
        return 200, group

    def _get_logs(self, match: re.Match[str], request: Request) -> tuple[int, dict[str, Any]]:
        if "api-version" not in request.query:
            return 400, {
                "error": {
                    "code": "MissingApiVersionParameter",
                    "message": "The api-version query parameter is required.",
                }
            }
        return 200, {"content": self.logs.get(f"{match.group(1)}/{match.group(2)}", "")}


def container_group(
    group_id: str,
    state: dict[str, Any],
    group_state: str,
    events: list[dict[str, Any]] | None = None,
    provisioning: str = "Succeeded",
) -> dict[str, Any]:
    """A container group as ``GET .../containerGroups/{name}`` returns it (api-version 2023-05-01)."""
    name = group_id.rsplit("/", 1)[-1]
    return {
        "id": group_id,
        "name": name,
        "type": "Microsoft.ContainerInstance/containerGroups",
        "location": "westeurope",
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {}},
        "properties": {
            "provisioningState": provisioning,
            "sku": "Standard",
            "osType": "Linux",
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "runner",
                    "properties": {
                        "image": "registry.example/runner:1",
                        "command": [
                            "python3",
                            "-u",
                            "-m",
                            "toolkit.runner",
                            "--storage",
                            "az://run@x.blob.core.windows.net",
                        ],
                        "ports": [],
                        "environmentVariables": [{"name": "TOOLKIT_RUN_KEY"}],
                        "resources": {"requests": {"memoryInGB": 1.5, "cpu": 1.0}},
                        "instanceView": {"restartCount": 0, "currentState": state, "events": events or []},
                    },
                }
            ],
            "instanceView": {"events": [], "state": group_state},
        },
    }


@pytest.fixture
def fake_arm() -> Iterator[FakeArm]:
    with FakeHttpServer() as server:
        fake = FakeArm(server)
        fake.install()
        yield fake
