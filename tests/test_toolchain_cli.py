"""Which Pulumi CLI the toolkit runs: any version from the toolkit's minimum on, a clear error below it
(before any stack exists), a build when none.

The CLIs here are shims that report a chosen version and hand every command to
the pinned CLI (tests/toolchain_fakes.py): they test the lookup and the version
gate, nothing about how another version behaves. A real CLI of the minimum
version runs calls, gc and the CLI-count test in tests/test_old_cli.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from semver import VersionInfo

import toolkit
from tests.toolchain_fakes import CallLog, isolate, pulumi_shim
from toolkit import diy_backend, settings, workspace
from toolkit.errors import ToolchainError, ToolkitError
from toolkit.toolchain import cli_lookup, install, pulumi_cli
from toolkit.toolchain.steps import Timeline

MINIMUM = str(cli_lookup.minimum_version())
JUST_BELOW = "3.210.0"
"""The last release whose file backends keep no stack tags (so `toolkit gc` cannot judge a run stack): refused."""


@pytest.fixture
def log(tmp_path: Path) -> CallLog:
    return CallLog(tmp_path / "calls.log")


@pytest.fixture
def clean_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log: CallLog) -> Iterator[Path]:
    """No CLI anywhere but where a test puts one: empty toolkit cache, PATH without pulumi, a recording go first."""
    real = isolate(monkeypatch, tmp_path, log, hide="pulumi")
    yield real
    workspace.pulumi_command.cache_clear()


def test_lookup_order_is_toolkit_pulumi_then_path_then_the_toolkit_cache(tmp_path, monkeypatch, clean_lookup, log):
    cached = pulumi_shim(tmp_path / "cache" / "bin" / "pulumi", "3.300.0", clean_lookup, log)
    assert cli_lookup.find_cli() == cli_lookup.FoundCli(cached, "3.300.0", "toolkit cache")
    on_path = pulumi_shim(tmp_path / "path-bin" / "pulumi", "3.301.0", clean_lookup, log)
    monkeypatch.setenv("PATH", f"{on_path.parent}{os.pathsep}{os.environ['PATH']}")
    assert cli_lookup.find_cli() == cli_lookup.FoundCli(on_path, "3.301.0", "PATH")
    # Named as a user might name a second install: the Automation API only takes `<root>/bin/pulumi`.
    explicit = pulumi_shim(tmp_path / "opt" / "pulumi-3.302", "3.302.0", clean_lookup, log)
    monkeypatch.setenv("TOOLKIT_PULUMI", str(explicit))
    assert cli_lookup.find_cli() == cli_lookup.FoundCli(explicit, "3.302.0", "TOOLKIT_PULUMI")
    assert str(workspace.pulumi_command().version) == "3.302.0"
    assert log.of("go") == []


@pytest.mark.engine
def test_a_cli_reporting_a_newer_version_is_used_without_a_build(tmp_path, monkeypatch, clean_lookup, log):
    shim = pulumi_shim(tmp_path / "newer" / "bin" / "pulumi", "3.999.0", clean_lookup, log)
    monkeypatch.setenv("TOOLKIT_PULUMI", str(shim))

    outcome: list[str] = []
    install._ensure_pulumi_cli(outcome, log=lambda _line: None)
    assert outcome == [f"v3.999.0 ({shim}, from TOOLKIT_PULUMI); the toolkit needs v{MINIMUM} or newer"]

    future = toolkit.process(pool="local-process")(lambda x: x * 2).submit(21)
    assert future.result(timeout=120) == 42
    assert future.wait_teardown(60)
    ran = [call.split() for call in log.of("pulumi")]
    assert any("up" in call for call in ran) and any("destroy" in call for call in ran), ran
    assert log.of("go") == []  # nothing was built

    doctor = subprocess.run([sys.executable, "-m", "toolkit", "doctor", "--json"], capture_output=True, text=True,
                            env={**os.environ}, timeout=120)
    cli = next(check for check in json.loads(doctor.stdout) if check["component"] == "Pulumi CLI")
    assert cli["ok"] and cli["detail"].startswith(f"v3.999.0 ({shim}, from TOOLKIT_PULUMI)"), cli


def test_an_older_cli_is_refused_naming_both_versions_and_the_upgrade(tmp_path, monkeypatch, clean_lookup, log):
    shim = pulumi_shim(tmp_path / "old" / "bin" / "pulumi", JUST_BELOW, clean_lookup, log)
    monkeypatch.setenv("PATH", f"{shim.parent}{os.pathsep}{os.environ['PATH']}")

    with pytest.raises(ToolchainError) as refused:
        workspace.pulumi_command()
    message = str(refused.value)
    assert f"the Pulumi CLI {shim} (from PATH) is v{JUST_BELOW}, older than v{MINIMUM}, the oldest the toolkit " \
        "supports" in message
    assert "get.pulumi.com" in message and "TOOLKIT_PULUMI" in message  # how to upgrade, or point elsewhere

    with pytest.raises(ToolchainError, match=f"is v{JUST_BELOW}, older than"):
        install._ensure_pulumi_cli([], log=lambda _line: None)
    assert log.of("go") == []  # an old CLI is the user's to upgrade, not a reason to build another

    doctor = subprocess.run([sys.executable, "-m", "toolkit", "doctor"], capture_output=True, text=True,
                            env={**os.environ}, timeout=120)
    assert doctor.returncode == 1
    lines = doctor.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if "Pulumi CLI" in line)
    assert "MISSING" in lines[at] and f"v{JUST_BELOW}" in lines[at] and f"v{MINIMUM}" in lines[at + 1]


@pytest.mark.engine
def test_an_older_cli_stops_a_call_before_its_stack_exists(tmp_path, monkeypatch, clean_lookup, log):
    monkeypatch.setenv("TOOLKIT_PULUMI", str(pulumi_shim(tmp_path / "old" / "bin" / "pulumi", JUST_BELOW, clean_lookup,
                                                         log)))
    with pytest.raises(ToolchainError, match=f"is v{JUST_BELOW}, older than v{MINIMUM}"):
        toolkit.process(pool="local-process")(lambda x: x * 2)(21)
    assert log.of("pulumi") == ["version"]  # asked its version, then nothing: no up, no stack
    stacks = diy_backend.stacks_dir(settings.default_backend_url(), settings.RUN_PROJECT)
    assert stacks is not None and not (stacks.exists() and any(stacks.iterdir()))


def test_the_minimum_is_the_toolkits_own_floor_and_the_readme_states_it():
    floor = cli_lookup.MINIMUM_CLI_VERSION
    assert cli_lookup.minimum_version() == floor > VersionInfo.parse(JUST_BELOW)
    assert floor > VersionInfo.parse("3.1.0")  # the SDK's own floor, which the toolkit's runs are well above
    at_floor = cli_lookup.FoundCli(Path("/opt/pulumi"), str(floor), "PATH")
    assert cli_lookup.version_problem(at_floor) is None
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    stated = set(re.findall(r"any (?:CLI|version) from (\d+\.\d+\.\d+) on", readme))
    assert stated == {str(floor)}, stated


def test_a_cli_of_another_major_version_is_refused(tmp_path, monkeypatch, clean_lookup, log):
    monkeypatch.setenv("TOOLKIT_PULUMI", str(pulumi_shim(tmp_path / "v4" / "bin" / "pulumi", "4.0.0", clean_lookup, log)))
    with pytest.raises(ToolchainError, match="is v4.0.0, a major version the installed pulumi SDK"):
        workspace.pulumi_command()


def test_with_no_cli_anywhere_install_takes_the_build_path(clean_lookup, log):
    assert cli_lookup.find_cli() is None
    with pytest.raises(ToolchainError, match="no Pulumi CLI found.*get.pulumi.com.*toolkit toolchain install"):
        workspace.pulumi_command()
    lines: list[str] = []
    with pytest.raises(ToolchainError, match="fake go: the module proxy is not reachable"):
        install._ensure_pulumi_cli([], log=lines.append)
    wanted = pulumi_cli.required_version()
    assert lines[0] == (f"no Pulumi CLI found (TOOLKIT_PULUMI, PATH, {settings.bin_dir()}): "
                        f"building v{wanted} from the Go module proxy")
    # The first step of the real build ran against the (fake) Go toolchain: the pinned CLI module.
    assert log.of("go") == [f"mod download -json {pulumi_cli.PKG}@v{wanted}"]
    assert log.of("pulumi") == []


def test_the_head_start_build_takes_the_version_the_checkout_pins(clean_lookup, log):
    """scripts/setup starts the CLI's build before the venv exists, from pyproject.toml: the venv's version."""
    pyproject = Path(toolkit.__file__).resolve().parents[1] / "pyproject.toml"
    assert pulumi_cli.pinned_version(pyproject) == pulumi_cli.required_version()
    assert pulumi_cli.main([str(pyproject)]) == 1  # no CLI anywhere: it builds (with the fake go, which fails)
    assert log.of("go") == [f"mod download -json {pulumi_cli.PKG}@v{pulumi_cli.required_version()}"]


def test_an_unknown_part_is_refused_before_anything_is_done(log):
    with pytest.raises(ToolkitError, match=r"unknown toolchain parts \['dockr'\]; valid: core, docker, kubernetes, pools"):
        install.install(lambda _line: None, parts=["dockr"])
    assert log.calls() == []


def test_parts_side_by_side_all_end_and_the_first_failure_is_raised():
    lines: list[str] = []
    ended: list[str] = []

    def builds(timeline: Timeline, log) -> None:
        with timeline.step("slow build") as outcome:
            time.sleep(0.5)
            outcome.append("built")
        ended.append("builds")

    def fails(_timeline: Timeline, log) -> None:
        log("starting")
        raise ToolchainError("no Go")

    timeline = Timeline(lines.append)
    with pytest.raises(ToolchainError, match="no Go"):
        install._side_by_side(timeline, {"docker": builds, "kubernetes": fails})
    assert ended == ["builds"], "the other part's build is not abandoned"
    assert "[kubernetes] starting" in lines and "[docker] ==> slow build" in lines
    assert [report.name for report in timeline.reports] == ["slow build"]
