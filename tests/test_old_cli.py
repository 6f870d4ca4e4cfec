"""The toolkit on a real Pulumi CLI of the oldest version it supports, not only on the pinned one.

``tests/old_cli.py`` builds that CLI once from the Go module proxy and caches
it; the first test of a fresh machine pays for the build (see its docstring
for how long), hence the timeout. Each test points ``TOOLKIT_PULUMI`` at the
old binary through the wrappers of tests/cli_trace.py, so every CLI process a
run starts is logged and provably the old one: a ``@process`` and a
``@docker`` call, ``toolkit gc`` of a killed client's stack, and the CLI-count
test (tests/test_cli_calls.py) run as they do on the pinned CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from semver import VersionInfo

import toolkit
from tests.cli_trace import CliTrace
from tests.clients import kill_holding_client
from tests.leaks import assert_nothing_left, run_stacks
from tests.old_cli import OLD_CLI_VERSION, build_seconds, ensure_old_cli
from toolkit import workspace
from toolkit.futures import wait_for_teardowns
from toolkit.toolchain import cli_lookup, pulumi_cli

pytestmark = [pytest.mark.slow, pytest.mark.engine, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def old_cli() -> Path:
    binary = ensure_old_cli()
    print(f"old CLI: {binary} ({build_seconds()})")
    return binary


@pytest.fixture
def traced(old_cli: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliTrace]:
    trace = CliTrace(tmp_path / "trace", old_cli, {})
    for name, value in trace.env().items():
        monkeypatch.setenv(name, value)
    workspace.pulumi_command.cache_clear()
    yield trace
    wait_for_teardowns()
    workspace.pulumi_command.cache_clear()


def _commands(trace: CliTrace) -> list[str]:
    return [call.command for call in trace.calls()]


def test_the_old_cli_is_a_real_older_build_at_the_minimum(old_cli: Path):
    reported = subprocess.run([str(old_cli), "version"], capture_output=True, text=True, timeout=60).stdout.strip()
    assert reported == f"v{OLD_CLI_VERSION}"
    version = VersionInfo.parse(OLD_CLI_VERSION)
    assert cli_lookup.minimum_version() <= version < VersionInfo.parse(pulumi_cli.required_version())
    assert old_cli.read_bytes()[:4] == b"\x7fELF"  # a compiled CLI, not a script handing over to the pinned one
    found = cli_lookup.FoundCli(old_cli, reported.removeprefix("v"), "TOOLKIT_PULUMI")
    assert cli_lookup.version_problem(found) is None


def _triple(x: int) -> int:
    return 3 * x


@pytest.mark.parametrize("target", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_a_call_runs_and_tears_down_on_the_old_cli(traced: CliTrace, target: str):
    triple = getattr(toolkit, target)(_triple)
    future = triple.submit(14)
    assert future.result(timeout=300) == 42
    assert future.wait_teardown(120)
    assert str(workspace.pulumi_command().version) == OLD_CLI_VERSION
    calls = traced.calls()
    assert _commands(traced) == ["pulumi version", "pulumi up", "pulumi destroy"], calls
    assert all(call.code == 0 for call in calls), calls
    assert_nothing_left()


def test_gc_collects_a_killed_clients_stack_with_the_old_cli(traced: CliTrace, tmp_path: Path):
    run_id = kill_holding_client(tmp_path, "process")
    assert run_stacks() == [f"run-{run_id}"]
    collector = subprocess.run([sys.executable, "-m", "toolkit", "gc", "--json"], capture_output=True, text=True,
                               timeout=300)
    assert collector.returncode == 0, collector.stderr
    collected = json.loads(collector.stdout)["leaks"]
    assert [(leak["stack"], leak["destroyed"]) for leak in collected] == [(f"run-{run_id}", True)], collected
    # gc read the stack's owner tag through the old CLI, then destroyed and removed the stack with it.
    assert {"pulumi stack tag ls", "pulumi destroy"} <= set(_commands(traced)), traced.calls()
    assert all(call.code == 0 for call in traced.calls()), traced.calls()
    assert_nothing_left()


@pytest.mark.docker
def test_the_cli_count_test_passes_on_the_old_cli(old_cli: Path):
    """tests/test_cli_calls.py as it is, in its own pytest session, with the old CLI as the one found."""
    counted = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cli_calls.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200, env={**os.environ, "TOOLKIT_PULUMI": str(old_cli)},
    )
    assert counted.returncode == 0, counted.stdout[-4000:] + counted.stderr[-2000:]
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", "tests/test_cli_calls.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    ).stdout.count("tests/test_cli_calls.py::")
    assert collected and f"{collected} passed" in counted.stdout.splitlines()[-1], counted.stdout[-2000:]  # none skipped
