"""The leak probes fail loudly: "could not look" must never read as "nothing left"."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import leaks


def _fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text("#!/bin/sh\n" + script)
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_a_failing_docker_ps_fails_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_docker(tmp_path, monkeypatch, 'echo "Cannot connect to the Docker daemon" >&2; exit 1\n')
    with pytest.raises(leaks.LeakProbeError, match=r"`docker ps` failed \(exit 1\): Cannot connect"):
        leaks.session_containers()


def test_a_missing_docker_cli_fails_the_check(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(leaks.LeakProbeError, match="could not run"):
        leaks.session_containers()


def test_containers_of_this_sessions_runs_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    (runs / "aaaaaaaaaaaa").mkdir(parents=True)
    monkeypatch.setattr(leaks.settings, "runs_dir", lambda: runs)
    _fake_docker(tmp_path, monkeypatch, 'echo "toolkit-aaaaaaaaaaaa aaaaaaaaaaaa"; echo "toolkit-bbbbbbbbbbbb bbbbbbbbbbbb"\n')
    assert leaks.session_containers() == ["toolkit-aaaaaaaaaaaa"]  # another session's container is not ours


def test_an_unreadable_backend_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLKIT_BACKEND_URL", "s3://no-such-bucket-toolkit-leaks?endpoint=http://127.0.0.1:9")
    with pytest.raises(leaks.LeakProbeError, match="could not list the run stacks"):
        leaks.run_stacks()
