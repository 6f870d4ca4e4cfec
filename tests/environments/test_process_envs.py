"""Environments on the process target: a cached virtualenv, or the caller's interpreter when nothing is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.environments.conftest import env_stacks, updates
from tests.leaks import assert_nothing_left
from toolkit import process
from toolkit.environments import manage
from toolkit.futures import wait_for_teardowns

pytestmark = [pytest.mark.engine]


@pytest.fixture(autouse=True)
def _nothing_left_after_each_test():
    yield
    wait_for_teardowns()
    assert_nothing_left()


@process
def interpreter_and_humanize() -> tuple[str, str]:
    import sys

    import humanize

    return sys.executable, humanize.__version__


def test_what_the_caller_has_runs_on_the_callers_own_interpreter():
    before = env_stacks()
    plan = interpreter_and_humanize.preview()
    assert plan.environment is not None and plan.environment.status == "base"
    assert interpreter_and_humanize() == (sys.executable, "4.12.3")
    assert env_stacks() == before


def test_a_missing_package_gets_a_cached_virtualenv_over_the_callers_packages():
    older = interpreter_and_humanize.with_options(packages=["humanize==4.11.0"])
    plan = older.preview()
    assert plan.environment.status == "build"
    assert [(p.name, p.version, p.source) for p in plan.environment.packages] == [("humanize", "4.11.0", "packages")]
    python, version = older()
    assert version == "4.11.0" and python != sys.executable and python.endswith("/bin/python")
    stack_name = plan.environment.stack
    assert stack_name in env_stacks() and updates(stack_name) == 1
    assert older.preview().environment.status == "cached"
    assert older()[1] == "4.11.0"
    assert updates(stack_name) == 1  # reused, not rebuilt


def test_include_files_land_in_the_jobs_working_directory(project):
    @process(include_files=["data/*.csv"])
    def read_scores() -> list[str]:
        import os

        with open("data/scores.csv") as handle:
            rows = handle.read().splitlines()
        with open("data/scores.csv", "a") as handle:  # the copy is the job's own, writable
            handle.write("eve,1\n")
        return [*rows, str(os.path.exists("teamlib"))]

    assert read_scores() == ["name,score", "ada,3", "bob,5", "False"]
    assert (project / "data" / "scores.csv").read_text().count("\n") == 3  # the caller's file is untouched


def test_prune_removes_the_virtualenv_and_its_stack():
    env = interpreter_and_humanize.with_options(packages=["humanize==4.11.0"])
    python, _ = env()
    pruned = manage.prune()
    assert any(result.environment.reference == python and result.destroyed for result in pruned)
    assert env_stacks() == []
    assert not os.path.exists(python)


def test_cli_json_consumers_get_the_build_as_events(tmp_path):
    script = tmp_path / "jobs.py"
    script.write_text(
        "from toolkit import process\n\n"
        "@process(packages=['six==1.16.0'])\n"
        "def six_version():\n"
        "    import six\n"
        "    return six.__version__\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "toolkit", "run", f"{script}:six_version", "--json"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "TOOLKIT_PROGRESS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["result"] == "1.16.0"
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    stages = [event["stage"] for event in events if event.get("event") == "environment"]
    assert stages[0] == "resolving" and "downloading" in stages and stages[-2:] == ["building", "built"]
    sizes = [event["bytes"] for event in events if event.get("stage") == "building"]
    assert sizes and sizes[0] > 0
