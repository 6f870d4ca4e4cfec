"""Resource provider plugins: which ones a target needs, whether they are here, and getting them.

A target names the Python SDKs its program uses (``Target.plugin_packages``);
each SDK's ``pulumi-plugin.json`` names its plugin and version, exactly as the
Pulumi engine reads it. A plugin is present when the engine would find it: on
PATH (an "ambient" plugin, which the engine prefers; the toolkit's own builds
count only at the right version) or in Pulumi's plugin cache
(``$PULUMI_HOME/plugins/resource-NAME-vVERSION``). Checking that is a few
``stat`` calls, so every run does it before its stack exists.

A missing plugin is obtained in this order (``ensure``):

1. Pulumi's own acquisition, ``pulumi plugin install resource NAME VERSION``,
   unless the toolkit is offline (``offline.py``); a failure is remembered and
   makes it offline.
2. Offline, the toolkit's build from the Go module proxy, for the plugins it
   knows how to build (docker, kubernetes) when Go is installed.
3. Otherwise a ``ToolchainError`` that names both fixes.

Runs do only step 1 (``require``): a Go build takes minutes, so a run
without its plugin stops with the fix rather than building inside a call.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from importlib.metadata import version as package_version
from importlib.resources import files
from pathlib import Path

from pydantic import BaseModel

from toolkit import settings
from toolkit.errors import ToolchainError
from toolkit.toolchain import cli_lookup, offline
from toolkit.toolchain.pulumi_env import pulumi_env
from toolkit.toolchain.steps import Log, read_stamp, run, write_stamp

ACQUIRE_TIMEOUT = 600
"""Seconds one ``pulumi plugin install`` may take: the cloud providers' plugins are hundreds of MB."""


class PluginAcquisitionError(ToolchainError):
    """Pulumi could not download a plugin (remembered: the toolkit is offline for a while)."""


class PluginSpec(BaseModel, frozen=True):
    """A resource plugin at the version a Python SDK requires."""

    name: str
    version: str
    package: str
    """The Python SDK (``pulumi_docker``) whose ``pulumi-plugin.json`` names the plugin."""
    server: str = ""
    """Download URL of a plugin published outside Pulumi's own site ('' for the default)."""

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def install_command(self) -> str:
        return f"pulumi plugin install resource {self.name} {self.version}" + (
            f" --server {self.server}" if self.server else ""
        )


class PluginStatus(BaseModel):
    """Whether a plugin is present, and where the engine will find it."""

    name: str
    version: str
    present: bool
    location: str = ""

    def describe(self) -> str:
        where = f"present ({self.location})" if self.present else "missing"
        return f"{self.name} v{self.version}: {where}"


@functools.cache
def spec_of(package: str) -> PluginSpec:
    """The plugin ``package`` (an installed pulumi SDK) needs, from its ``pulumi-plugin.json``."""
    try:
        document = json.loads((files(package) / "pulumi-plugin.json").read_text())
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ToolchainError(
            f"{package!r} is not an installed Pulumi provider SDK with a pulumi-plugin.json ({exc}); "
            f"pip install {package.replace('_', '-')}"
        ) from None
    return PluginSpec(
        name=document["name"],
        version=str(document.get("version") or package_version(package)).removeprefix("v"),
        package=package,
        server=document.get("server", ""),
    )


def specs_of(packages: Iterable[str]) -> list[PluginSpec]:
    return [spec_of(package) for package in packages]


def plugin_cache() -> Path:
    """Pulumi's plugin cache, where ``pulumi plugin install`` puts plugins."""
    home = os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi"
    return Path(home).expanduser() / "plugins"


def built_binary(name: str) -> Path:
    """Where the toolkit keeps a plugin it built (with ``.version`` next to it)."""
    return settings.bin_dir() / f"pulumi-resource-{name}"


def _ambient(spec: PluginSpec) -> Path | None:
    """A ``pulumi-resource-NAME`` on the PATH the toolkit gives Pulumi, as the engine would pick it."""
    if os.environ.get("PULUMI_IGNORE_AMBIENT_PLUGINS"):
        return None
    path = os.pathsep.join([str(settings.bin_dir()), os.environ.get("PATH", "")])
    found = shutil.which(f"pulumi-resource-{spec.name}", path=path)
    if found is None:
        return None
    built = built_binary(spec.name)
    if Path(found) == built and read_stamp(built.with_name(built.name + ".version")) != spec.version:
        return None  # the toolkit's own build of another version: the engine would use it, wrongly
    return Path(found)


def status(spec: PluginSpec) -> PluginStatus:
    ambient = _ambient(spec)
    if ambient is not None:
        return PluginStatus(name=spec.name, version=spec.version, present=True, location=str(ambient))
    directory = plugin_cache() / f"resource-{spec.name}-v{spec.version}"
    complete = directory.is_dir() and not directory.with_name(directory.name + ".partial").exists()
    return PluginStatus(name=spec.name, version=spec.version, present=complete,
                        location=str(directory) if complete else "")


def acquire(spec: PluginSpec, log: Log) -> None:
    """``pulumi plugin install``, Pulumi's own download; a failure is remembered (offline mode) and raised."""
    cli = cli_lookup.usable_cli()
    command = [str(cli.path), "plugin", "install", "resource", spec.name, spec.version]
    if spec.server:
        command += ["--server", spec.server]
    log(f"downloading the {spec.label} plugin: {spec.install_command()}")
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=ACQUIRE_TIMEOUT,
                                env={**os.environ, **pulumi_env()})
        output, failed = (result.stdout + result.stderr).strip(), result.returncode != 0
    except subprocess.TimeoutExpired:
        output, failed = f"no answer within {ACQUIRE_TIMEOUT} s", True
    if failed:
        lines = output.splitlines()
        detail = lines[-1] if lines else "no output"
        cause = next((line.removeprefix("warning: ") for line in lines if "Error downloading" in line), "")
        detail += f" (first attempt: {cause})" if cause else ""
        offline.remember_failure(f"`{spec.install_command()}` failed: {detail}")
        raise PluginAcquisitionError(f"`{spec.install_command()}` failed: {detail}")
    offline.forget_failure()


Builder = Callable[[PluginSpec, Path, Log], str]
"""Builds a plugin into the given path; returns what it built from (for the outcome line)."""


def _build_docker(spec: PluginSpec, binary: Path, log: Log) -> str:
    from toolkit.toolchain.docker_provider import build_docker_provider

    os.replace(build_docker_provider(spec.version, settings.cache_dir() / "build" / "docker-provider", log), binary)
    return "from the upstream Terraform provider"


def _build_kubernetes(spec: PluginSpec, binary: Path, log: Log) -> str:
    from toolkit.toolchain import kubernetes_provider

    work_dir = settings.cache_dir() / "build" / "kubernetes-provider"
    source = kubernetes_provider.build_kubernetes_provider(spec.version, work_dir, binary, log)
    kubernetes_provider.write_source_note(binary, source)
    return source.describe()


OFFLINE_BUILDERS: dict[str, Builder] = {"docker": _build_docker, "kubernetes": _build_kubernetes}
"""Plugins the toolkit can build from the Go module proxy when nothing can be downloaded."""


def _go_available() -> bool:
    from toolkit.toolchain.pulumi_cli import go_binary

    try:
        go_binary()
    except ToolchainError:
        return False
    return True


def _build(spec: PluginSpec, log: Log) -> str:
    """Step 2: build from the Go module proxy (or reuse an earlier build) and install into the plugin cache."""
    binary = built_binary(spec.name)
    stamp = binary.with_name(binary.name + ".version")
    if binary.exists() and read_stamp(stamp) == spec.version:
        outcome = f"installed the toolkit's earlier build of {spec.label}"
    else:
        binary.parent.mkdir(parents=True, exist_ok=True)
        outcome = f"built {spec.label} ({OFFLINE_BUILDERS[spec.name](spec, binary, log)}) and installed it"
        write_stamp(stamp, spec.version)
    cli = cli_lookup.usable_cli()
    run([str(cli.path), "plugin", "install", "resource", spec.name, spec.version, "--file", str(binary)],
        f"pulumi plugin install {spec.name}", env={**os.environ, **pulumi_env()})
    return outcome


def fixes(spec: PluginSpec) -> str:
    """Both ways to get a plugin, for error messages."""
    online = (f"online: `{spec.install_command()}` (or `toolkit toolchain install`) where get.pulumi.com is "
              f"reachable ({offline.ENV}=0 retries at once after a remembered failure)")
    if spec.name in OFFLINE_BUILDERS:
        build = ("offline: install Go (https://go.dev/dl) and run `toolkit toolchain install`, which builds it "
                 "from the Go module proxy")
    else:
        build = (f"offline: the toolkit cannot build {spec.name} from source; copy `pulumi-resource-{spec.name}` "
                 f"v{spec.version} from a connected machine and run "
                 f"`{spec.install_command()} --file PATH`")
    return f"Fix it {online}; or {build}"


def ensure(spec: PluginSpec, log: Log) -> str:
    """Make ``spec`` present, in the module docstring's order; returns what was done."""
    found = status(spec)
    if found.present:
        return f"{spec.label} present ({found.location})"
    mode = offline.mode()
    why_not_online = f"offline mode ({mode.reason})"
    if not mode.offline:
        try:
            acquire(spec, log)
            return f"downloaded {spec.label} ({spec.install_command()})"
        except PluginAcquisitionError as exc:
            why_not_online = str(exc)
            log(f"{why_not_online}; now in offline mode for {offline.REMEMBER_SECONDS / 3600:g} h")
    if spec.name in OFFLINE_BUILDERS and _go_available():
        log(f"{spec.label}: not downloaded ({why_not_online}); building it from the Go module proxy")
        return _build(spec, log)
    why_not_built = ("Go is not installed" if spec.name in OFFLINE_BUILDERS
                     else "the toolkit has no offline build for it")
    raise ToolchainError(
        f"the {spec.label} provider plugin is missing and could not be obtained: not downloaded "
        f"({why_not_online}), not built ({why_not_built}). {fixes(spec)}"
    )


def require(packages: Iterable[str], who: str, log: Log) -> list[PluginStatus]:
    """Before a run's stack exists: every plugin ``packages`` need, downloaded if missing and online.

    ``who`` names the pool and target in the error. Raises ``ToolchainError``
    listing each plugin and whether it is present.
    """
    specs = specs_of(packages)
    statuses = [status(spec) for spec in specs]
    missing = [spec for spec, found in zip(specs, statuses) if not found.present]
    if not missing:
        return statuses
    mode = offline.mode()
    problems = []
    for spec in missing:
        if mode.offline:
            problems.append(f"offline mode ({mode.reason})")
            continue
        try:
            acquire(spec, log)
        except PluginAcquisitionError as exc:
            problems.append(str(exc))
            mode = offline.mode()
    statuses = [status(spec) for spec in specs]
    still_missing = [spec for spec, found in zip(specs, statuses) if not found.present]
    if not still_missing:
        return statuses
    listing = "; ".join(found.describe() for found in statuses)
    why = problems[0] if problems else "`pulumi plugin install` succeeded but the plugin is not in the plugin cache"
    raise ToolchainError(
        f"{who} needs the provider plugins {listing}. Not downloaded: {why}. "
        + " ".join(fixes(spec) for spec in still_missing)
    )
