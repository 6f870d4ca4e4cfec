"""Where a missing provider plugin comes from: Pulumi's download, then the offline Go build, then a clear error.

An unreachable download site is simulated with an empty ``PULUMI_HOME`` and a
``pulumi`` shim whose ``plugin install`` fails as the real one does offline;
a fake ``go`` records that a build started (tests/toolchain_fakes.py). Both
write to one log, which shows the order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import toolkit
from tests.toolchain_fakes import CallLog, isolate, pulumi_shim
from toolkit import settings, workspace
from toolkit.errors import ToolchainError
from toolkit.toolchain import offline, plugins, pulumi_cli
from toolkit.toolchain.pulumi_env import pulumi_env

DOCKER = plugins.spec_of("pulumi_docker")
INSTALL_DOCKER = f"plugin install resource docker {DOCKER.version}"


@pytest.fixture
def log(tmp_path: Path) -> CallLog:
    return CallLog(tmp_path / "calls.log")


@pytest.fixture(scope="session")
def installed_docker_plugin() -> Path:
    """The docker plugin binary `toolkit toolchain install` provided (session scope: found before any test's
    function-scoped fixtures empty PULUMI_HOME and the toolkit cache)."""
    found = plugins.status(DOCKER)
    assert found.present, "the docker plugin is not installed; run `toolkit toolchain install`"
    location = Path(found.location)
    return location / "pulumi-resource-docker" if location.is_dir() else location


@pytest.fixture
def unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log: CallLog) -> Iterator[Path]:
    """Empty PULUMI_HOME and toolkit cache, detection left to the toolkit, a CLI whose downloads fail."""
    real = isolate(monkeypatch, tmp_path, log, hide="pulumi-resource-docker")
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "pulumi-home"))
    monkeypatch.delenv("TOOLKIT_OFFLINE", raising=False)
    monkeypatch.setenv("TOOLKIT_PULUMI", str(pulumi_shim(tmp_path / "cli" / "bin" / "pulumi",
                                                         pulumi_cli.required_version(), real, log, download="fail")))
    yield real
    workspace.pulumi_command.cache_clear()


def _steps(log: CallLog) -> list[str]:
    """The calls that matter for the order: downloads and builds (not `pulumi version`)."""
    return [call for call in log.calls() if call != "pulumi version"]


def test_an_unreachable_download_falls_back_to_the_go_build_and_is_remembered(monkeypatch, unreachable, log):
    assert not plugins.status(DOCKER).present and not offline.is_offline()
    lines: list[str] = []
    with pytest.raises(ToolchainError, match="fake go: the module proxy is not reachable"):
        plugins.ensure(DOCKER, lines.append)
    # 1. Pulumi's own download, 2. the offline build (its first Go step): in that order.
    assert _steps(log) == [f"pulumi {INSTALL_DOCKER}", "go mod download"]
    assert lines[0] == f"downloading the docker v{DOCKER.version} plugin: pulumi {INSTALL_DOCKER}"
    assert lines[1].startswith(f"`pulumi {INSTALL_DOCKER}` failed: error: [resource plugin docker-{DOCKER.version}]")
    assert lines[1].endswith("now in offline mode for 1 h")
    assert lines[2].startswith(f"docker v{DOCKER.version}: not downloaded (") and lines[2].endswith(
        "building it from the Go module proxy")

    # Remembered: offline now, so Pulumi's automatic acquisition is off and no download is tried again.
    mode = offline.mode()
    assert mode.offline and mode.reason.startswith(f"detected: `pulumi {INSTALL_DOCKER}` failed")
    assert pulumi_env()["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] == "true"
    with pytest.raises(ToolchainError, match="fake go"):
        plugins.ensure(DOCKER, lambda _line: None)
    assert _steps(log)[2:] == ["go mod download"]

    monkeypatch.setenv("TOOLKIT_OFFLINE", "0")  # forces online mode: the download is tried again
    with pytest.raises(ToolchainError, match="fake go"):
        plugins.ensure(DOCKER, lambda _line: None)
    assert _steps(log)[3:] == [f"pulumi {INSTALL_DOCKER}", "go mod download"]


@pytest.mark.engine  # installs the docker plugin `toolkit toolchain install` provided
def test_a_stale_failure_is_retried_and_a_working_download_needs_no_build(
    tmp_path, monkeypatch, unreachable, log, installed_docker_plugin
):
    # The site is back: `plugin install` "downloads" (installs the real plugin binary); the failure is an hour old.
    monkeypatch.setenv("TOOLKIT_PULUMI", str(pulumi_shim(tmp_path / "cli" / "bin" / "pulumi", pulumi_cli.required_version(),
                                                         unreachable, log, download="succeed",
                                                         downloaded=installed_docker_plugin)))
    marker = settings.cache_dir() / "offline.json"
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"since": time.time() - offline.REMEMBER_SECONDS - 1, "detail": "old failure"}))
    assert not offline.is_offline()
    assert "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION" not in pulumi_env()

    outcome = plugins.ensure(DOCKER, lambda _line: None)
    assert outcome == f"downloaded docker v{DOCKER.version} (pulumi {INSTALL_DOCKER})"
    assert _steps(log) == [f"pulumi {INSTALL_DOCKER}"]  # no build
    found = plugins.status(DOCKER)
    assert found.present and found.location == str(tmp_path / "pulumi-home" / "plugins" / f"resource-docker-v{DOCKER.version}")
    assert not marker.exists()


def test_offline_without_go_is_an_error_naming_both_fixes(monkeypatch, unreachable, log):
    monkeypatch.setenv("TOOLKIT_OFFLINE", "1")

    def no_go() -> str:
        raise ToolchainError("building the Pulumi CLI needs Go")

    monkeypatch.setattr(pulumi_cli, "go_binary", no_go)
    with pytest.raises(ToolchainError) as failed:
        plugins.ensure(DOCKER, lambda _line: None)
    message = str(failed.value)
    assert message.startswith(
        f"the docker v{DOCKER.version} provider plugin is missing and could not be obtained: not downloaded "
        "(offline mode (TOOLKIT_OFFLINE=1)), not built (Go is not installed). Fix it online: "
        f"`pulumi {INSTALL_DOCKER}` (or `toolkit toolchain install`) where get.pulumi.com is reachable"
    )
    assert "offline: install Go (https://go.dev/dl) and run `toolkit toolchain install`" in message
    assert _steps(log) == []  # offline: no download tried, and nothing to build with

    aws = plugins.spec_of("pulumi_aws")
    with pytest.raises(ToolchainError) as failed:
        plugins.ensure(aws, lambda _line: None)
    assert "not built (the toolkit has no offline build for it)" in str(failed.value)
    assert f"`pulumi plugin install resource aws {aws.version} --file PATH`" in str(failed.value)


@pytest.mark.engine
@pytest.mark.docker
def test_a_run_and_a_preview_whose_plugin_is_missing_stop_before_any_stack(unreachable, log):
    staging = settings.home() / "staging"
    staged = set(staging.glob("*")) if staging.exists() else set()
    echo = toolkit.docker(pool="local-docker")(lambda x: x)

    with pytest.raises(ToolchainError) as failed:
        echo.submit(1)
    assert str(failed.value).startswith(
        f"pool 'local-docker' (docker) needs the provider plugins docker v{DOCKER.version}: missing. "
        f"Not downloaded: `pulumi {INSTALL_DOCKER}` failed: error: [resource plugin docker-{DOCKER.version}]"
    )
    assert "Fix it online:" in str(failed.value) and "install Go" in str(failed.value)
    # The download was tried; no stack was created (no other CLI call at all) and no bundle staged.
    assert _steps(log) == [f"pulumi {INSTALL_DOCKER}"]
    assert (set(staging.glob("*")) if staging.exists() else set()) == staged

    with pytest.raises(ToolchainError, match=r"docker v[\d.]+: missing\. Not downloaded: offline mode \(detected"):
        echo.preview(1)
    assert _steps(log) == [f"pulumi {INSTALL_DOCKER}"]  # remembered: not tried again
