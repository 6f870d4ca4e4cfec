"""The full suite's parts and groups (tests/parallel.py), on a small suite of its own run by pytest-xdist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.parallel import NO_ENGINE

ROOT = Path(__file__).resolve().parent.parent

SUITE = textwrap.dedent(
    """
    import json, os
    from pathlib import Path

    import pytest

    def note(name):
        seen = {"worker": os.environ.get("PYTEST_XDIST_WORKER"), "docker_host": os.environ.get("DOCKER_HOST")}
        (Path(__file__).parent / "seen" / name).write_text(json.dumps(seen))

    @pytest.mark.docker
    @pytest.mark.parametrize("i", range(4))
    def test_on_the_engine(i):
        note(f"engine-{i}")

    @pytest.mark.xdist_group("by-hand")
    @pytest.mark.parametrize("i", range(3))
    def test_grouped_by_hand(i):
        note(f"by-hand-{i}")

    @pytest.mark.parametrize("i", range(8))
    def test_beside(i):
        note(f"beside-{i}")

    @pytest.mark.k8s
    def test_on_the_cluster():
        note("cluster")
    """
)


def run_part(tmp_path: Path, part: str, *workers: str) -> tuple[subprocess.CompletedProcess, dict[str, dict]]:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.parallel"]\n')
    (tmp_path / "test_suite.py").write_text(SUITE)
    seen = tmp_path / "seen"
    seen.mkdir(exist_ok=True)
    for old in seen.iterdir():
        old.unlink()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DOCKER_HOST", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestUnknownMarkWarning",
         f"--part={part}", *workers, str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    return done, {path.name: json.loads(path.read_text()) for path in seen.iterdir()}


def test_the_first_part_runs_each_group_on_one_worker_and_keeps_the_engine_from_the_others(tmp_path: Path) -> None:
    done, seen = run_part(tmp_path, "beside-the-cluster", "-n", "2", "--dist", "loadgroup")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cluster" not in seen and len(seen) == 15
    engine_workers = {seen[f"engine-{i}"]["worker"] for i in range(4)}
    assert len(engine_workers) == 1  # pytest-xdist's own loadgroup spreads them under pytest 9
    assert len({seen[f"by-hand-{i}"]["worker"] for i in range(3)}) == 1
    assert all(seen[f"engine-{i}"]["docker_host"] is None for i in range(4))
    [group_worker] = engine_workers
    elsewhere = [name for name, test in seen.items() if name.startswith("beside") and test["worker"] != group_worker]
    assert elsewhere, seen  # eight tests beside a group of four on two workers: some ran on the other one
    assert all(seen[name]["docker_host"] == NO_ENGINE for name in elsewhere)


def test_the_second_part_runs_only_the_cluster_tests_and_an_empty_part_is_status_5(tmp_path: Path) -> None:
    done, seen = run_part(tmp_path, "cluster")
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(seen) == ["cluster"] and seen["cluster"]["docker_host"] is None
    done, seen = run_part(tmp_path, "cluster", "-k", "beside")
    assert done.returncode == 5 and seen == {}  # what scripts/test accepts for one part, not for both
