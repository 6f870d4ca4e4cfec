"""Which Pulumi CLI the toolkit runs, and whether its version will do.

The first CLI found (``TOOLKIT_PULUMI``, then ``pulumi`` on PATH, then the one
``toolkit toolchain install`` built into the cache) is used whenever its
version is at least ``MINIMUM_CLI_VERSION``, within the SDK's major version.
That floor is the toolkit's own, well above the Automation API's (3.1.0 in
``pulumi`` 3.260.0): the SDK gates its newer features by version, the toolkit
needs them. A CLI outside that range is an error, raised before the first
stack, that names both versions and how to upgrade; the toolkit never silently
skips a CLI the user put first.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pulumi import automation as auto
from pulumi.automation._minimum_version import _MINIMUM_VERSION  # the SDK's own floor; no public name
from semver import VersionInfo

from toolkit import settings
from toolkit.errors import ToolchainError

UPGRADE_HINT = (
    "upgrade it (curl -fsSL https://get.pulumi.com | sh, brew upgrade pulumi, or your package manager), "
    "or point TOOLKIT_PULUMI at a newer `pulumi`"
)


MINIMUM_CLI_VERSION = VersionInfo(3, 211, 0)
"""The oldest Pulumi CLI the toolkit works with; each line is a release the toolkit's runs need.

- 3.211.0: stack tags in DIY backends (``file://``, buckets): ``toolkit gc``, ``runs ls`` and the
  pools' run limits read each run stack's owner tag with ``stack tag ls``; before, every DIY backend
  answers "does not support stack tags" (the tags file ``diy_backend`` writes is that release's format).
- 3.208.0: the ``replacement_trigger`` resource option, by which ``retries`` replaces a job; an older
  engine drops the option, so a retry would re-run nothing.
- 3.188.0: ``stack rm --remove-backups`` (run stacks in object-store backends, environment stacks).
- 3.61.0: project-scoped DIY stacks (``.pulumi/stacks/<project>/``, ``meta.yaml`` version 1), the
  layout ``diy_backend`` writes; 3.43.0: ``destroy --remove``.

Run with a real CLI of the oldest version the Go module proxy serves at or above it: tests/test_old_cli.py.
"""


def minimum_version() -> VersionInfo:
    """The oldest CLI the toolkit runs: its own floor, or the installed SDK's if that is ever higher."""
    return max(MINIMUM_CLI_VERSION, _MINIMUM_VERSION)


@dataclass(frozen=True)
class FoundCli:
    path: Path
    version: str
    """As the CLI reports it, without the leading 'v' ('' if it did not run)."""
    source: str
    """Where it was found: ``TOOLKIT_PULUMI``, ``PATH`` or ``toolkit cache``."""

    def describe(self) -> str:
        return f"v{self.version or '?'} ({self.path}, from {self.source})"


def cli_version(binary: Path) -> str:
    """``pulumi version`` without the leading 'v' ('' if it does not run)."""
    try:
        result = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"})
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip().removeprefix("v") if result.returncode == 0 else ""


def _source(path: Path) -> str:
    if os.environ.get("TOOLKIT_PULUMI"):
        return "TOOLKIT_PULUMI"
    return "toolkit cache" if path == settings.bin_dir() / "pulumi" else "PATH"


def find_cli() -> FoundCli | None:
    """The first CLI found, with its version; None when there is none at all."""
    path = settings.pulumi_binary()
    if path is None or not path.exists():
        return None
    return FoundCli(path=path, version=cli_version(path), source=_source(path))


def version_problem(found: FoundCli) -> str | None:
    """Why ``found`` cannot be used (None when it can)."""
    minimum = minimum_version()
    try:
        version = VersionInfo.parse(found.version)
    except ValueError:
        return (
            f"the Pulumi CLI {found.path} (from {found.source}) did not report a version "
            f"(`{found.path} version` printed {found.version!r}); check that it runs, or {UPGRADE_HINT}"
        )
    if version.compare(minimum) < 0:
        return (
            f"the Pulumi CLI {found.path} (from {found.source}) is v{version}, older than v{minimum}, "
            f"the oldest the toolkit supports; {UPGRADE_HINT}"
        )
    if version.major != minimum.major:
        return (
            f"the Pulumi CLI {found.path} (from {found.source}) is v{version}, a major version the installed "
            f"pulumi SDK (v{minimum.major}) does not support; upgrade the toolkit's pulumi package, or point "
            f"TOOLKIT_PULUMI at a v{minimum.major} CLI"
        )
    return None


def _none_found() -> ToolchainError:
    return ToolchainError(
        "no Pulumi CLI found (TOOLKIT_PULUMI is unset, `pulumi` is not on PATH, and the toolkit's cache "
        f"{settings.bin_dir()} has none). Install it (curl -fsSL https://get.pulumi.com | sh), or run "
        "`toolkit toolchain install`, which builds one from the Go module proxy when Go is installed"
    )


def usable_cli() -> FoundCli:
    """The CLI to run; ``ToolchainError`` saying what to do when there is none or it is too old."""
    found = find_cli()
    if found is None:
        raise _none_found()
    problem = version_problem(found)
    if problem:
        raise ToolchainError(problem)
    return found


def _command_root(binary: Path) -> Path:
    """A directory whose ``bin/pulumi`` is ``binary``: the only way the Automation API accepts a CLI path.

    A CLI named otherwise (``TOOLKIT_PULUMI=/opt/pulumi-3.190``) gets a symlink in the cache.
    """
    if binary.name == "pulumi" and binary.parent.name == "bin":
        return binary.parent.parent
    digest = hashlib.sha256(str(binary.absolute()).encode()).hexdigest()[:12]
    root = settings.cache_dir() / "cli-links" / digest
    link = root / "bin" / "pulumi"
    if not (link.is_symlink() and Path(os.readlink(link)) == binary.absolute()):
        link.parent.mkdir(parents=True, exist_ok=True)
        temporary = link.with_name(f"pulumi.{os.getpid()}.tmp")
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(binary.absolute())
        os.replace(temporary, link)
    return root


def automation_command() -> auto.PulumiCommand:
    """The Automation API's handle on the first CLI found, refused (``ToolchainError``) as ``usable_cli`` does.

    The SDK runs ``pulumi version`` when it builds the handle; its answer is the
    one checked here, so finding the CLI costs a single CLI call.
    """
    path = settings.pulumi_binary()
    if path is None or not path.exists():
        raise _none_found()
    try:
        command = auto.PulumiCommand(root=str(_command_root(path)), skip_version_check=True)
        version = str(command.version) if command.version else ""
    except (OSError, subprocess.CalledProcessError):
        command, version = None, ""
    problem = version_problem(FoundCli(path=path, version=version, source=_source(path)))
    if problem:
        raise ToolchainError(problem)
    assert command is not None  # a CLI that did not run reported no version: a problem above
    return command
