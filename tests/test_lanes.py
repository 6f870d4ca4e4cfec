"""The fast lane's guard (tests/lanes.py) refuses the engine, Docker and the cluster to unmarked tests."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.lanes import UnmarkedInfrastructureUse, program_marker, refusing_infrastructure


def _program(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_the_engine_docker_and_cluster_programs_need_their_markers(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    for name in ("pulumi", "pulumi-resource-docker", "docker", "kubectl", "sh"):
        _program(bin_dir / name)
    elsewhere = tmp_path / "fakes"
    assert program_marker([str(bin_dir / "pulumi"), "version"], None, elsewhere) == "engine"
    assert program_marker("pulumi-resource-docker", str(bin_dir), elsewhere) == "engine"
    assert program_marker(f"{bin_dir}/docker ps -a", None, elsewhere) == "docker"
    assert program_marker(["kubectl", "get", "pods"], str(bin_dir), elsewhere) == "k8s"
    assert program_marker(["sh", "-c", "pulumi"], str(bin_dir), elsewhere) is None
    assert program_marker(["pulumi"], str(tmp_path / "empty"), elsewhere) is None, "not found: nothing runs"
    assert program_marker([str(bin_dir / "pulumi")], None, tmp_path) is None, "a test's own stand-in"


def test_a_refused_start_fails_the_test_even_when_the_code_under_test_catches_it(tmp_path: Path) -> None:
    pulumi = _program(tmp_path / "bin" / "pulumi")
    with refusing_infrastructure("tests/x.py::t", tmp_path / "fakes") as refusals:
        with pytest.raises(UnmarkedInfrastructureUse, match=r"tests/x.py::t started .* mark it @pytest.mark.engine"):
            subprocess.run([str(pulumi), "version"])
        try:
            subprocess.run([str(pulumi), "stack", "ls"])
        except Exception:  # noqa: BLE001 - as a probe that reports "missing" would
            pass
        assert subprocess.run(["sh", "-c", "exit 3"]).returncode == 3
    assert len(refusals) == 2
    assert subprocess.run([str(pulumi), "version"]).returncode == 0, "the guard ends with its block"


def test_the_docker_engines_socket_is_refused(tmp_path: Path) -> None:
    with refusing_infrastructure("tests/x.py::t", tmp_path) as refusals:
        with socket.socket(socket.AF_UNIX) as client, pytest.raises(UnmarkedInfrastructureUse, match="mark it @pytest.mark.docker"):
            client.connect(str(tmp_path / "docker.sock"))
    assert len(refusals) == 1
