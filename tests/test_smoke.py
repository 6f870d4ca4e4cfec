"""Toolchain smoke test: a real stack up and down through the Automation API, offline.

The inline program holds a Python dynamic resource (through the
``pulumi-resource-pulumi-python`` shim) and a ``pulumi_docker`` resource
(through the docker provider plugin the toolchain built). Both must exist
while the stack is up and be gone after destroy, in offline mode (automatic
plugin acquisition disabled), so nothing can have been downloaded.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pulumi_docker
import pytest
from pulumi import automation as auto
from pulumi.dynamic import CreateResult, Resource, ResourceProvider

from toolkit.toolchain.pulumi_env import pulumi_env
from toolkit.workspace import pulumi_command

pytestmark = [pytest.mark.engine, pytest.mark.docker]


class _MarkerProvider(ResourceProvider):
    def create(self, props):
        Path(props["path"]).write_text("up")
        return CreateResult(id_=props["path"], outs=props)

    def delete(self, _id, props):
        Path(props["path"]).unlink()


class Marker(Resource, module="smoke", name="Marker"):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(_MarkerProvider(), name, {"path": path})


def _networks() -> list[str]:
    return subprocess.run(["docker", "network", "ls", "--format", "{{.Name}}"], capture_output=True, text=True).stdout.split()


def test_dynamic_resource_and_docker_network_up_and_down(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_OFFLINE", "1")
    assert pulumi_env()["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] == "true"
    marker = tmp_path / "marker"
    network = f"toolkit-smoke-{uuid.uuid4().hex[:8]}"

    def program() -> None:
        Marker("marker", str(marker))
        pulumi_docker.Network("net", name=network)

    backend = "file://" + str(tmp_path / "state")
    (tmp_path / "state").mkdir()
    work_dir = tempfile.mkdtemp(prefix="toolkit-smoke-")
    try:
        stack = auto.create_stack(
            "smoke",
            project_name="toolkit-smoke",
            program=program,
            opts=auto.LocalWorkspaceOptions(
                work_dir=work_dir,
                project_settings=auto.ProjectSettings(
                    name="toolkit-smoke", runtime="python", backend=auto.ProjectBackend(url=backend)
                ),
                secrets_provider="passphrase",
                env_vars=pulumi_env(backend),
                pulumi_command=pulumi_command(),
            ),
        )
        result = stack.up(on_output=lambda _line: None)
        assert result.summary.resource_changes == {"create": 3}  # the stack and the two resources
        assert marker.read_text() == "up"
        assert network in _networks()
        stack.destroy(on_output=lambda _line: None)
        assert not marker.exists()
        assert network not in _networks()
        stack.workspace.remove_stack("smoke")
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
