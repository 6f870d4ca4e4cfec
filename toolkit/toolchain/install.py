"""``toolkit toolchain install``: everything the toolkit runs on, used as found, else obtained and cached.

Idempotent: each step first checks what is there (a Pulumi CLI the SDK
supports, a plugin where the engine finds it, an image with the right content
hash) and obtains only what is missing, so a second run takes seconds. A
missing plugin is downloaded the Pulumi way when online and built from the Go
module proxy only offline (``plugins.py``); a CLI is built only when none
exists. Go builds reuse Go's module and build caches; built binaries live in
``~/.cache/toolkit/bin``.

The steps come in parts (``PARTS``), so a caller can obtain what one feature
needs when it needs it: ``core`` is all a ``local-process`` pool runs on;
``docker`` and ``kubernetes`` are independent of each other and are obtained
side by side (their Go builds share the CPU, but the Docker engine's install
and the runner image's debootstrap wait on the network meanwhile). Before the
work starts, ``install`` prints the steps still to do with how long each took
cold on a 2-core machine (``COLD_SECONDS``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

from toolkit import settings
from toolkit.errors import ToolchainError, ToolkitError
from toolkit.toolchain import cli_lookup, docker_engine, offline, plugins, pulumi_cli, runner_image
from toolkit.toolchain.language_host import install_language_host, pulumis_own_language_host
from toolkit.toolchain.lazy_init import RECIPE
from toolkit.toolchain.shim import compile_plugin_modules, install_provider_plugin, install_shim
from toolkit.toolchain.steps import Log, Timeline, read_stamp

PARTS: dict[str, str] = {
    "core": "the Pulumi CLI, the Python language host, the provider shims and the state backend "
            "(all that local-process pools run on)",
    "docker": "the docker provider plugin, the Docker engine and the runner image (local-docker pools)",
    "kubernetes": "the kubernetes provider plugin (kubernetes pools; with toolkit[kubernetes] installed)",
    "pools": "the provider plugins of the registered pools' targets",
}
"""What ``toolkit toolchain install PART...`` obtains, in the order it does it."""

COLD_SECONDS: dict[str, int] = {
    "Pulumi CLI": 490,
    "docker provider plugin": 505,
    "kubernetes provider plugin": 1560,
    "Docker engine": 24,
    "runner image": 80,
}
"""How long each step took with cold Go, pip and apt caches on a 2-core machine with little else running
(for the plan line; a busy machine takes several times as long)."""


def _about(seconds: int) -> str:
    return f"~{seconds} s" if seconds < 90 else f"~{round(seconds / 60)} min"


def _cli_to_build(found: cli_lookup.FoundCli | None) -> bool:
    """No CLI anywhere, or only the toolkit's own build of an older recipe (``lazy_init.RECIPE``)."""
    target = settings.bin_dir() / "pulumi"
    return found is None or (found.path == target and read_stamp(target.with_name("pulumi.recipe")) != RECIPE)


def _ensure_pulumi_cli(outcome: list[str], log: Log) -> None:
    """The user's CLI when there is one the SDK supports (an older one is an error); a build only when none
    exists, or when the toolkit's own build is of an older recipe (``lazy_init.RECIPE``)."""
    target = settings.bin_dir() / "pulumi"
    found = cli_lookup.find_cli()
    if not _cli_to_build(found):
        assert found is not None
        problem = cli_lookup.version_problem(found)
        if problem:
            raise ToolchainError(problem)
        outcome.append(f"{found.describe()}; the toolkit needs v{cli_lookup.minimum_version()} or newer")
        return
    wanted = pulumi_cli.required_version()
    if found is None:
        log(f"no Pulumi CLI found (TOOLKIT_PULUMI, PATH, {settings.bin_dir()}): building v{wanted} from the Go module proxy")
    else:
        log(f"rebuilding the toolkit's Pulumi CLI v{wanted}: its build recipe is now {RECIPE}")
    pulumi_cli.build_into_cache(wanted, log)
    outcome.append(f"built v{wanted} ({RECIPE}) -> {target}")


def core_plugin_packages(docker: bool) -> list[str]:
    """SDKs whose plugins must be present: docker's (with ``docker``) and kubernetes' when it is installed."""
    return (["pulumi_docker"] if docker else []) + (["pulumi_kubernetes"] if _has_package("pulumi_kubernetes") else [])


def _ensure_language_host(outcome: list[str]) -> None:
    """Pulumi's own host when the user has it (the normal case); else the toolkit's."""
    existing = pulumis_own_language_host()
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


def _missing_builds(parts: list[str], core: list[str]) -> list[str]:
    """The long steps ``parts`` still have to do, each with its cold time (cheap checks only: no build starts)."""
    missing = []
    if "core" in parts and _cli_to_build(cli_lookup.find_cli()):
        missing.append("Pulumi CLI")
    for spec in plugins.specs_of(core):
        if not plugins.status(spec).present:
            missing.append(f"{spec.name} provider plugin")
    if "docker" in parts:
        if shutil.which("dockerd") is None:
            missing.append("Docker engine")
        if not runner_image.base_image_cached(settings.cache_dir() / "images"):
            missing.append("runner image")
    return [f"{name} ({_about(COLD_SECONDS[name])} cold)" for name in missing]


def _core(timeline: Timeline, log: Log) -> None:
    with timeline.step("Pulumi CLI") as outcome:
        _ensure_pulumi_cli(outcome, log)
    with timeline.step("Python language host") as outcome:
        _ensure_language_host(outcome)
    with timeline.step("dynamic provider shim") as outcome:
        path, changed = install_shim(settings.bin_dir())
        outcome.append(f"{'installed' if changed else 'present'} {path}")
        path, changed = install_provider_plugin(settings.bin_dir())
        outcome.append(f"{'installed' if changed else 'present'} {path}")
        outcome.append("bytecode compiled" if compile_plugin_modules() else "bytecode: some modules could not be compiled")
    with timeline.step("state backend") as outcome:
        backend = settings.default_backend_url()
        if backend.startswith("file://"):
            Path(backend.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        outcome.append(backend)


def _docker(timeline: Timeline, log: Log) -> None:
    for spec in plugins.specs_of(["pulumi_docker"]):
        with timeline.step(f"{spec.name} provider plugin") as outcome:
            outcome.append(plugins.ensure(spec, log))
    with timeline.step("Docker engine") as outcome:
        installed = docker_engine.ensure_installed(log)
        running = docker_engine.ensure_running(log, settings.cache_dir() / "dockerd.log")
        outcome.append(f"{installed}, {running}")
    with timeline.step("runner image") as outcome:
        images = settings.cache_dir() / "images"
        base = runner_image.ensure_base_image(images, log)
        outcome.append(f"base {base}; {runner_image.ensure_runner_image(images, log)}")


def _kubernetes(timeline: Timeline, log: Log) -> None:
    for spec in plugins.specs_of(core_plugin_packages(docker=False)):
        with timeline.step(f"{spec.name} provider plugin") as outcome:
            outcome.append(plugins.ensure(spec, log))


def _side_by_side(timeline: Timeline, work: dict[str, Callable[[Timeline, Log], None]]) -> None:
    """Run each part on its own thread, its lines prefixed with its name; the first failure is raised
    once every part has ended (a build is never abandoned half-way)."""
    if len(work) < 2:
        for run_part in work.values():
            run_part(timeline, timeline.log)
        return

    def run_part(name: str) -> Timeline:
        def log(line: str) -> None:
            timeline.log(f"[{name}] {line}")

        part_timeline = Timeline(log)
        work[name](part_timeline, log)
        return part_timeline

    with ThreadPoolExecutor(max_workers=len(work), thread_name_prefix="toolchain") as pool:
        futures = {name: pool.submit(run_part, name) for name in work}
    errors = [future.exception() for future in futures.values() if future.exception() is not None]
    for future in futures.values():
        if future.exception() is None:
            timeline.reports += future.result().reports
    if errors:
        raise errors[0]


def install(
    log: Log, docker: bool = True, parts: Iterable[str] = tuple(PARTS), pool_packages: Sequence[str] = ()
) -> Timeline:
    """Install or build what ``parts`` need (``PARTS``; ``docker=False`` leaves docker's out); returns the
    timeline (what was done, how long).

    ``pool_packages``: SDKs of the registered pools' targets, whose plugins those pools will need
    (the caller knows the pools; the toolchain knows no targets).
    """
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ToolkitError(f"unknown toolchain parts {unknown}; valid: {', '.join(PARTS)}")
    selected = [part for part in PARTS if part in parts and (docker or part != "docker")]
    timeline = Timeline(log)
    kubernetes = core_plugin_packages(docker=False) if "kubernetes" in selected else []
    core = (["pulumi_docker"] if "docker" in selected else []) + kubernetes
    to_do = _missing_builds(selected, core)
    if to_do:
        log(f"to build: {'; '.join(to_do)}" + ("; docker's and kubernetes' side by side"
                                                 if {"docker", "kubernetes"} <= set(selected) and kubernetes else ""))
    if "core" in selected:
        _core(timeline, log)
    with timeline.step("plugin mode") as outcome:
        mode = offline.mode()
        outcome.append(f"{'offline' if mode.offline else 'online'}: {mode.reason}")
    work = {"docker": _docker} if "docker" in selected else {}
    if kubernetes:
        work["kubernetes"] = _kubernetes
    _side_by_side(timeline, work)
    if "pools" not in selected:
        return timeline
    # Last, and not fatal: a pool of a cloud target may be registered on a machine that cannot get its
    # plugin (offline, no offline build); its runs and `toolkit doctor` keep saying what to do.
    skipped = [] if docker else ["pulumi_docker"]  # --no-docker: nothing of docker's
    done = [*core_plugin_packages(docker=True), *skipped]
    for spec in plugins.specs_of([package for package in pool_packages if package not in done]):
        with timeline.step(f"{spec.name} provider plugin (registered pools)") as outcome:
            try:
                outcome.append(plugins.ensure(spec, log))
            except ToolchainError as exc:
                outcome.append(f"MISSING: {exc}")
    return timeline
