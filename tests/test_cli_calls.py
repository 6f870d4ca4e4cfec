"""A run starts only the processes it needs: ``pulumi up`` and ``pulumi destroy --remove``, and no plugin
for the toolkit's own resources (the client serves their provider: ``toolkit/providers/resident.py``).
From a client's second call on a pool on, the next call's ``pulumi up`` is started ahead (``toolkit/ahead.py``):
the one no call takes is released with an empty program, so a client of n calls runs n + 1 ``pulumi up``
(n when n = 1) and n ``pulumi destroy``.

Counted through wrappers that log every Pulumi CLI and plugin process
(tests/cli_trace.py). Counts, never times, so this holds on a loaded machine.
The state backend is a local directory, where the stack and its gc tag are
written as files; ``pulumi version`` runs once per client process, for the one
``PulumiCommand`` every run shares.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import toolkit
from tests.cli_trace import CliTrace, plugins_on_path
from tests.leaks import assert_nothing_left
from toolkit import ahead, settings, workspace
from toolkit.futures import wait_for_teardowns
from toolkit.toolchain.pulumi_env import pulumi_env
from toolkit.toolchain.shim import PROVIDER_PLUGIN_NAME, SHIM_NAME

pytestmark = pytest.mark.engine


@pytest.fixture(autouse=True)
def _engine_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine started ahead is opt-in (``settings.engine_ahead``): these tests count and test it."""
    monkeypatch.setenv("TOOLKIT_ENGINE_AHEAD", "1")

DOCKER_PLUGIN = "pulumi-resource-docker"


@pytest.fixture
def traced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliTrace]:
    real = settings.pulumi_binary()
    assert real is not None, "the Pulumi CLI is not installed; run `toolkit toolchain install`"
    search = [str(real.parent), str(settings.bin_dir()), *plugin_cache_dirs()]
    plugins = plugins_on_path([SHIM_NAME, PROVIDER_PLUGIN_NAME, DOCKER_PLUGIN], ":".join(search))
    trace = CliTrace(tmp_path / "trace", real.resolve(), plugins)
    for name, value in trace.env().items():
        monkeypatch.setenv(name, value)
    workspace.pulumi_command.cache_clear()  # a fresh PulumiCommand on the traced CLI
    yield trace
    wait_for_teardowns()
    workspace.pulumi_command.cache_clear()


def plugin_cache_dirs() -> list[str]:
    """Directories of the docker provider in Pulumi's plugin cache (the engine's other place to look)."""
    home = Path(pulumi_env().get("PULUMI_HOME") or Path.home() / ".pulumi")
    return [str(path) for path in sorted((home / "plugins").glob("resource-docker-v*"))]


def _double(x: int) -> int:
    return 2 * x


def _cli_commands(trace: CliTrace) -> Counter[str]:
    return Counter(call.command for call in trace.calls() if call.name == "pulumi")


@pytest.mark.parametrize("target", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_each_run_is_one_up_and_one_destroy(traced: CliTrace, target: str) -> None:
    double = getattr(toolkit, target)(_double)
    assert double(1) == 2
    wait_for_teardowns()
    assert _cli_commands(traced) == {"pulumi version": 1, "pulumi up": 1, "pulumi destroy": 1}

    traced.clear()
    futures = [double.submit(x) for x in range(3)]
    assert [future.result(timeout=300) for future in futures] == [0, 2, 4]
    wait_for_teardowns()
    calls = traced.calls()
    # The second call started the third's engine ahead, the third the next one's, which no call took.
    assert _cli_commands(traced) == {"pulumi up": 4, "pulumi destroy": 3}
    assert all("--remove" in call.args for call in calls if call.command == "pulumi destroy")
    assert all(call.code == 0 for call in calls)
    # Run storage and the process job are served by the client: for docker one docker provider per
    # operation, and the engine starts nothing else.
    plugins = Counter(call.name for call in calls if call.name != "pulumi")
    assert plugins == ({DOCKER_PLUGIN: 6} if target == "docker" else {})
    assert_nothing_left()


def test_without_a_resident_provider_each_operation_starts_the_toolkit_plugin(
    traced: CliTrace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOOLKIT_RESIDENT_PROVIDER", "0")
    double = toolkit.process(_double)
    assert double(1) == 2
    wait_for_teardowns()
    traced.clear()
    futures = [double.submit(x) for x in range(3)]
    assert [future.result(timeout=300) for future in futures] == [0, 2, 4]
    wait_for_teardowns()
    assert _cli_commands(traced) == {"pulumi up": 4, "pulumi destroy": 3}  # one started ahead, released unused
    assert Counter(call.name for call in traced.calls() if call.name != "pulumi") == {PROVIDER_PLUGIN_NAME: 6}
    assert_nothing_left()


def test_calls_one_after_another_take_the_engine_started_ahead(traced: CliTrace) -> None:
    """Calls made one after the other: from the third on, each takes the ``pulumi up`` the previous call
    started (its run id is that engine's), and only the last one started is released unused."""
    double = toolkit.process(_double)
    run_ids, started_ahead = [], []
    for x in range(4):
        future = double.submit(x)
        assert future.result(timeout=300) == 2 * x
        assert future.wait_teardown(300)
        run_ids.append(future.run_id)
        started_ahead.append([standby.run_id for standby in ahead.waiting()])
    assert started_ahead[0] == []  # a client's first call starts nothing ahead
    assert run_ids[2:] == [started_ahead[1][0], started_ahead[2][0]]
    wait_for_teardowns()
    assert ahead.waiting() == []
    assert _cli_commands(traced) == {"pulumi version": 1, "pulumi up": 5, "pulumi destroy": 4}
    assert_nothing_left()
