"""Stand-ins for the toolchain tests: a ``pulumi`` shim and a ``go`` that only record.

The shim reports whatever version a test asks for and hands every other
command to the pinned CLI: it tests which CLI the toolkit picks and how it
judges the version reported, never whether that version works (whatever the
shim claims, the binary that runs is always the pinned one). A CLI that really
is older is tests/old_cli.py's real build, used by tests/test_old_cli.py. For
``pulumi plugin install`` without ``--file`` (Pulumi's own download) it either
fails as the real CLI does when the download site is unreachable, or succeeds
by installing a local binary, as if it had been downloaded. The fake ``go``
records its arguments and fails, so a test sees that a build started without
spending minutes on it. Both append to one log, so the order of calls shows.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import lanes
from toolkit import settings, workspace

UNREACHABLE = (
    'warning: Error downloading plugin: Get "https://get.pulumi.com/releases/plugins/x.tar.gz": '
    "dial tcp: lookup get.pulumi.com: no such host"
)


def real_pulumi() -> Path:
    """The CLI `toolkit toolchain install` left for this session (resolved before any test changes the env).

    In a test without the engine marker (``tests/lanes.py``), a stand-in that fails naming the test: such a
    test runs in the fast lane, where there may be no CLI, so its shims must answer without delegating."""
    guarded = os.environ.get(lanes.ACTIVE_ENV)
    if guarded:
        message = f"{guarded} delegated to the real Pulumi CLI but is not marked engine: mark it @pytest.mark.engine"
        stand_in = settings.home() / "refused-pulumi" / "bin" / "pulumi"
        return _executable(stand_in, f"#!/bin/sh\necho {shlex.quote(message)} >&2\nexit 97\n")
    binary = settings.pulumi_binary()
    assert binary is not None and binary.exists(), "the Pulumi CLI is not installed; run `toolkit toolchain install`"
    return binary.resolve()


@dataclass(frozen=True)
class CallLog:
    path: Path

    def calls(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []

    def of(self, program: str) -> list[str]:
        return [call.removeprefix(program + " ") for call in self.calls() if call.startswith(program + " ")]


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def pulumi_shim(
    path: Path, version: str, real: Path, log: CallLog, *, download: str = "delegate", downloaded: Path | None = None
) -> Path:
    """A ``pulumi`` at ``path`` reporting ``v{version}``.

    ``download``: what ``plugin install`` without ``--file`` does: ``delegate``
    (the real CLI tries), ``fail`` (unreachable site) or ``succeed`` (installs
    ``downloaded`` as the plugin).
    """
    download_branch = {
        "delegate": "",
        "fail": f"echo {shlex.quote(UNREACHABLE)} >&2; "
        'echo "error: [resource plugin $4-$5] downloading from : failed to download plugin: $4-$5: '
        'failed all 5 attempts" >&2; exit 255',
        "succeed": f'exec {shlex.quote(str(real))} "$@" --file {shlex.quote(str(downloaded))}',
    }[download]
    text = f"""#!/bin/sh
echo "pulumi $*" >> {shlex.quote(str(log.path))}
if [ "$1" = version ]; then echo v{version}; exit 0; fi
if [ "$1 $2" = "plugin install" ] && [ -n {shlex.quote(download_branch)} ]; then
  case " $* " in *" --file "*) ;; *) {download_branch} ;; esac
fi
exec {shlex.quote(str(real))} "$@"
"""
    return _executable(path, text)


def fake_go(directory: Path, log: CallLog) -> Path:
    """A ``go`` in ``directory`` that records its arguments and fails like an unreachable module proxy."""
    return _executable(
        directory / "go",
        f'#!/bin/sh\necho "go $*" >> {shlex.quote(str(log.path))}\n'
        'echo "fake go: the module proxy is not reachable in this test" >&2\nexit 1\n',
    )


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, log: CallLog, hide: str) -> Path:
    """An empty toolkit cache, no ``TOOLKIT_PULUMI``, no ``hide`` on PATH and a recording ``go`` first on it.

    Returns the real CLI (found before the environment changed). The caller
    clears ``workspace.pulumi_command``'s cache again when done.
    """
    real = real_pulumi()
    monkeypatch.delenv("TOOLKIT_PULUMI", raising=False)
    monkeypatch.setenv("TOOLKIT_CACHE_DIR", str(tmp_path / "cache"))
    fake_go(tmp_path / "go-bin", log)
    kept = [d for d in os.environ["PATH"].split(os.pathsep) if d and not (Path(d) / hide).exists()]
    monkeypatch.setenv("PATH", os.pathsep.join([str(tmp_path / "go-bin"), *kept]))
    workspace.pulumi_command.cache_clear()
    return real
