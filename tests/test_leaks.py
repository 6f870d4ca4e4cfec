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


@pytest.fixture
def a_recorded_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A run record of this session, so the container probe has something to look for."""
    runs = tmp_path / "runs"
    (runs / "aaaaaaaaaaaa").mkdir(parents=True)
    monkeypatch.setattr(leaks.settings, "runs_dir", lambda: runs)
    return "aaaaaaaaaaaa"


def test_a_failing_docker_ps_fails_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, a_recorded_run) -> None:
    _fake_docker(tmp_path, monkeypatch, 'echo "Cannot connect to the Docker daemon" >&2; exit 1\n')
    with pytest.raises(leaks.LeakProbeError, match=r"`docker ps` failed \(exit 1\): Cannot connect"):
        leaks.session_containers()


def test_a_missing_docker_cli_fails_the_check(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, a_recorded_run) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(leaks.LeakProbeError, match="could not run"):
        leaks.session_containers()


def test_without_a_recorded_run_no_container_is_ours_and_docker_is_not_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(leaks.settings, "runs_dir", lambda: tmp_path / "runs")
    _fake_docker(tmp_path, monkeypatch, f'touch "{tmp_path}/asked"; exit 1\n')
    assert leaks.session_containers() == []
    assert not (tmp_path / "asked").exists()


def test_only_docker_runs_and_unreadable_records_send_the_probe_to_docker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, a_recorded_run
) -> None:
    """A worker whose session made only process runs never asks the engine another worker may be restarting."""
    runs = tmp_path / "runs"
    (runs / a_recorded_run / "record.json").write_text('{"target": "process"}')
    _fake_docker(tmp_path, monkeypatch, f'touch "{tmp_path}/asked"; echo "toolkit-{a_recorded_run} {a_recorded_run}"\n')
    assert leaks.session_containers() == [] and not (tmp_path / "asked").exists()
    (runs / a_recorded_run / "record.json").write_text('{"target": "docker"}')
    assert leaks.session_containers() == [f"toolkit-{a_recorded_run}"] and (tmp_path / "asked").exists()
    (runs / a_recorded_run / "record.json").write_text('{"tar')  # being written: looked for all the same
    assert leaks.session_containers() == [f"toolkit-{a_recorded_run}"]


def test_a_file_backend_without_a_stack_file_holds_no_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = f"file://{tmp_path / 'state'}"
    monkeypatch.setenv("TOOLKIT_BACKEND_URL", backend)
    assert leaks.no_stack_ever_made(backend) and leaks.run_stacks() == []
    stacks = tmp_path / "state" / ".pulumi" / "stacks" / leaks.settings.RUN_PROJECT
    stacks.mkdir(parents=True)
    (stacks / "run-0123.json.bak").write_text("{}")  # what a removed stack leaves: still none
    assert leaks.no_stack_ever_made(backend) and leaks.run_stacks() == []
    (stacks / "run-0123.json").write_text("{}")
    assert not leaks.no_stack_ever_made(backend)
    assert leaks.no_stack_ever_made(backend, leaks.settings.ENV_PROJECT)  # another project's stacks are not these
    assert not leaks.no_stack_ever_made("s3://bucket/state")


def test_containers_of_this_sessions_runs_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, a_recorded_run) -> None:
    _fake_docker(tmp_path, monkeypatch, 'echo "toolkit-aaaaaaaaaaaa aaaaaaaaaaaa"; echo "toolkit-bbbbbbbbbbbb bbbbbbbbbbbb"\n')
    assert leaks.session_containers() == ["toolkit-aaaaaaaaaaaa"]  # another session's container is not ours


@pytest.mark.engine
def test_an_unreadable_backend_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLKIT_BACKEND_URL", "s3://no-such-bucket-toolkit-leaks?endpoint=http://127.0.0.1:9")
    with pytest.raises(leaks.LeakProbeError, match="could not list the run stacks"):
        leaks.run_stacks()
