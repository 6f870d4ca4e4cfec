"""Which Pulumi CLI the toolkit runs: any version the SDK supports, a clear error below it, a build when none.

The CLIs are shims that report a chosen version and hand every command to the
real CLI (tests/toolchain_fakes.py), so a "newer" CLI really runs stacks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import toolkit
from tests.toolchain_fakes import CallLog, isolate, pulumi_shim
from toolkit import engine, settings
from toolkit.errors import ToolchainError
from toolkit.toolchain import cli_lookup, install, pulumi_cli

MINIMUM = str(cli_lookup.minimum_version())


@pytest.fixture
def log(tmp_path: Path) -> CallLog:
    return CallLog(tmp_path / "calls.log")


@pytest.fixture
def clean_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log: CallLog) -> Iterator[Path]:
    """No CLI anywhere but where a test puts one: empty toolkit cache, PATH without pulumi, a recording go first."""
    real = isolate(monkeypatch, tmp_path, log, hide="pulumi")
    yield real
    engine.pulumi_command.cache_clear()


def test_lookup_order_is_toolkit_pulumi_then_path_then_the_toolkit_cache(tmp_path, monkeypatch, clean_lookup, log):
    cached = pulumi_shim(tmp_path / "cache" / "bin" / "pulumi", "3.200.0", clean_lookup, log)
    assert cli_lookup.find_cli() == cli_lookup.FoundCli(cached, "3.200.0", "toolkit cache")
    on_path = pulumi_shim(tmp_path / "path-bin" / "pulumi", "3.201.0", clean_lookup, log)
    monkeypatch.setenv("PATH", f"{on_path.parent}{os.pathsep}{os.environ['PATH']}")
    assert cli_lookup.find_cli() == cli_lookup.FoundCli(on_path, "3.201.0", "PATH")
    # Named as a user might name a second install: the Automation API only takes `<root>/bin/pulumi`.
    explicit = pulumi_shim(tmp_path / "opt" / "pulumi-3.202", "3.202.0", clean_lookup, log)
    monkeypatch.setenv("TOOLKIT_PULUMI", str(explicit))
    assert cli_lookup.find_cli() == cli_lookup.FoundCli(explicit, "3.202.0", "TOOLKIT_PULUMI")
    assert str(engine.pulumi_command().version) == "3.202.0"
    assert log.of("go") == []


@pytest.mark.engine
def test_a_newer_cli_is_used_as_it_is(tmp_path, monkeypatch, clean_lookup, log):
    shim = pulumi_shim(tmp_path / "newer" / "bin" / "pulumi", "3.999.0", clean_lookup, log)
    monkeypatch.setenv("TOOLKIT_PULUMI", str(shim))

    outcome: list[str] = []
    install._ensure_pulumi_cli(outcome, log=lambda _line: None)
    assert outcome == [f"v3.999.0 ({shim}, from TOOLKIT_PULUMI); the SDK needs v{MINIMUM} or newer"]

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
    shim = pulumi_shim(tmp_path / "old" / "bin" / "pulumi", "3.0.5", clean_lookup, log)
    monkeypatch.setenv("PATH", f"{shim.parent}{os.pathsep}{os.environ['PATH']}")

    with pytest.raises(ToolchainError) as refused:
        engine.pulumi_command()
    message = str(refused.value)
    assert f"the Pulumi CLI {shim} (from PATH) is v3.0.5, older than v{MINIMUM}" in message
    assert "get.pulumi.com" in message and "TOOLKIT_PULUMI" in message  # how to upgrade, or point elsewhere

    with pytest.raises(ToolchainError, match="is v3.0.5, older than"):
        install._ensure_pulumi_cli([], log=lambda _line: None)
    assert log.of("go") == []  # an old CLI is the user's to upgrade, not a reason to build another

    doctor = subprocess.run([sys.executable, "-m", "toolkit", "doctor"], capture_output=True, text=True,
                            env={**os.environ}, timeout=120)
    assert doctor.returncode == 1
    lines = doctor.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if "Pulumi CLI" in line)
    assert "MISSING" in lines[at] and "v3.0.5" in lines[at] and f"v{MINIMUM}" in lines[at + 1]


def test_a_cli_of_another_major_version_is_refused(tmp_path, monkeypatch, clean_lookup, log):
    monkeypatch.setenv("TOOLKIT_PULUMI", str(pulumi_shim(tmp_path / "v4" / "bin" / "pulumi", "4.0.0", clean_lookup, log)))
    with pytest.raises(ToolchainError, match="is v4.0.0, a major version the installed pulumi SDK"):
        engine.pulumi_command()


def test_with_no_cli_anywhere_install_takes_the_build_path(clean_lookup, log):
    assert cli_lookup.find_cli() is None
    with pytest.raises(ToolchainError, match="no Pulumi CLI found.*get.pulumi.com.*toolkit toolchain install"):
        engine.pulumi_command()
    lines: list[str] = []
    with pytest.raises(ToolchainError, match="fake go: the module proxy is not reachable"):
        install._ensure_pulumi_cli([], log=lines.append)
    wanted = pulumi_cli.required_version()
    assert lines[0] == (f"no Pulumi CLI found (TOOLKIT_PULUMI, PATH, {settings.bin_dir()}): "
                        f"building v{wanted} from the Go module proxy")
    # The first step of the real build ran against the (fake) Go toolchain: the pinned CLI module.
    assert log.of("go") == [f"mod download -json {pulumi_cli.PKG}@v{wanted}"]
    assert log.of("pulumi") == []
