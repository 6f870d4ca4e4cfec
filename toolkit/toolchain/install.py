"""``toolkit toolchain install``: everything the toolkit runs on, built offline and cached.

Idempotent: each step first checks what is there (a binary at the right
version, a plugin in Pulumi's plugin cache, an image with the right content
hash) and builds only what is missing, so a second run takes seconds. Go
builds reuse Go's module and build caches; built binaries live in
``~/.cache/toolkit/bin``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

from toolkit import settings
from toolkit.toolchain import docker_engine, kubernetes_provider, pulumi_cli, runner_image
from toolkit.toolchain.docker_provider import build_docker_provider
from toolkit.toolchain.language_host import HOST_NAME, install_language_host
from toolkit.toolchain.lazy_init import RECIPE
from toolkit.toolchain.shim import compile_plugin_modules, install_shim
from toolkit.toolchain.steps import Log, Timeline, read_stamp, run, write_stamp


def cli_version(binary: Path) -> str:
    """``pulumi version`` without the leading 'v' ('' if it does not run)."""
    try:
        result = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=60,
                                env={**os.environ, **settings.pulumi_env()})
    except OSError:
        return ""
    return result.stdout.strip().removeprefix("v") if result.returncode == 0 else ""


def installed_plugins() -> dict[str, set[str]]:
    """Resource plugins in Pulumi's plugin cache: name -> versions."""
    binary = settings.pulumi_binary()
    if binary is None:
        return {}
    result = subprocess.run([str(binary), "plugin", "ls", "--json"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, **settings.pulumi_env()})
    if result.returncode != 0:
        return {}
    plugins: dict[str, set[str]] = {}
    for plugin in json.loads(result.stdout or "[]") or []:
        if plugin.get("kind") == "resource":
            plugins.setdefault(plugin["name"], set()).add(str(plugin.get("version", "")).removeprefix("v"))
    return plugins


def _ensure_pulumi_cli(outcome: list[str], log: Log) -> None:
    """A CLI at the SDK's version: the user's as it is, or the toolkit's own build of the current recipe."""
    wanted = pulumi_cli.required_version()
    existing = settings.pulumi_binary()
    target = settings.bin_dir() / "pulumi"
    recipe = target.with_name("pulumi.recipe")
    ours = existing is not None and existing == target
    if existing is not None and cli_version(existing) == wanted and (not ours or read_stamp(recipe) == RECIPE):
        outcome.append(f"v{wanted} present ({existing})")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    pulumi_cli.build_pulumi_cli(wanted, settings.cache_dir() / "build" / "pulumi-cli", target, log)
    write_stamp(recipe, RECIPE)
    outcome.append(f"built v{wanted} ({RECIPE}) -> {target}")


def _ensure_plugin(name: str, wanted: str, build: Callable[[Path], str], outcome: list[str]) -> None:
    """Install resource plugin ``name`` v``wanted`` into Pulumi's plugin cache, building it if needed.

    ``build(binary)`` writes the plugin to ``binary`` and returns what it built;
    the binary is cached in ``bin_dir()`` with a version stamp next to it.
    """
    if wanted in installed_plugins().get(name, set()):
        outcome.append(f"{name} v{wanted} present in the plugin cache")
        return
    binary = settings.bin_dir() / f"pulumi-resource-{name}"
    stamp = binary.with_name(binary.name + ".version")
    if not binary.exists() or read_stamp(stamp) != wanted:
        binary.parent.mkdir(parents=True, exist_ok=True)
        built = build(binary)
        write_stamp(stamp, wanted)
        outcome.append(f"built {name} v{wanted} ({built}) and installed it")
    else:
        outcome.append(f"installed cached {name} v{wanted}")
    pulumi = settings.pulumi_binary()
    assert pulumi is not None
    run([str(pulumi), "plugin", "install", "resource", name, wanted, "--file", str(binary)],
        f"pulumi plugin install {name}", env={**os.environ, **settings.pulumi_env()})


def _ensure_docker_plugin(outcome: list[str], log: Log) -> None:
    wanted = package_version("pulumi_docker")

    def build(binary: Path) -> str:
        os.replace(build_docker_provider(wanted, settings.cache_dir() / "build" / "docker-provider", log), binary)
        return "from the upstream Terraform provider"

    _ensure_plugin("docker", wanted, build, outcome)


def _ensure_kubernetes_plugin(outcome: list[str], log: Log) -> None:
    wanted = package_version("pulumi_kubernetes")

    def build(binary: Path) -> str:
        work_dir = settings.cache_dir() / "build" / "kubernetes-provider"
        source = kubernetes_provider.build_kubernetes_provider(wanted, work_dir, binary, log)
        kubernetes_provider.write_source_note(binary, source)
        return source.describe()

    _ensure_plugin("kubernetes", wanted, build, outcome)


def _pulumis_own_language_host() -> Path | None:
    """Pulumi's ``pulumi-language-python`` where the engine would find it, if one is installed."""
    pulumi = settings.pulumi_binary()
    ours = settings.bin_dir() / HOST_NAME
    on_path = shutil.which(HOST_NAME)
    candidates = [pulumi.parent / HOST_NAME if pulumi else None, Path(on_path) if on_path else None]
    for candidate in candidates:
        if candidate is None or not candidate.is_file() or candidate.absolute() == ours:
            continue
        with candidate.open("rb") as handle:
            if b"toolkit.toolchain.language_host" not in handle.read(512):  # not a toolkit shim elsewhere
                return candidate
    return None


def _ensure_language_host(outcome: list[str]) -> None:
    """Pulumi's own host when the user has it (the normal case); else the toolkit's."""
    existing = _pulumis_own_language_host()
    if existing is not None:
        outcome.append(f"Pulumi's own present ({existing})")
        return
    path, changed = install_language_host(settings.bin_dir())
    outcome.append(f"{'installed' if changed else 'present'} {path}")


def _has_package(name: str) -> bool:
    try:
        package_version(name)
    except PackageNotFoundError:
        return False
    return True


def install(log: Log, docker: bool = True) -> Timeline:
    """Install or build every component; returns the timeline (what was done, how long)."""
    timeline = Timeline(log)
    with timeline.step("Pulumi CLI") as outcome:
        _ensure_pulumi_cli(outcome, log)
    with timeline.step("Python language host") as outcome:
        _ensure_language_host(outcome)
    with timeline.step("dynamic provider shim") as outcome:
        path, changed = install_shim(settings.bin_dir())
        outcome.append(f"{'installed' if changed else 'present'} {path}")
        outcome.append("bytecode compiled" if compile_plugin_modules() else "bytecode: some modules could not be compiled")
    with timeline.step("state backend") as outcome:
        backend = settings.default_backend_url()
        if backend.startswith("file://"):
            Path(backend.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        outcome.append(backend)
    if _has_package("pulumi_kubernetes"):
        with timeline.step("kubernetes provider plugin") as outcome:
            _ensure_kubernetes_plugin(outcome, log)
    if not docker:
        return timeline
    with timeline.step("Docker engine") as outcome:
        installed = docker_engine.ensure_installed(log)
        running = docker_engine.ensure_running(log, settings.cache_dir() / "dockerd.log")
        outcome.append(f"{installed}, {running}")
    with timeline.step("docker provider plugin") as outcome:
        _ensure_docker_plugin(outcome, log)
    with timeline.step("runner image") as outcome:
        images = settings.cache_dir() / "images"
        base = runner_image.ensure_base_image(images, log)
        outcome.append(f"base {base}; {runner_image.ensure_runner_image(images, log)}")
    return timeline
