"""``toolkit toolchain install``: everything the toolkit runs on, used as found, else obtained and cached.

Idempotent: each step first checks what is there (a Pulumi CLI the SDK
supports, a plugin where the engine finds it, an image with the right content
hash) and obtains only what is missing, so a second run takes seconds. A
missing plugin is downloaded the Pulumi way when online and built from the Go
module proxy only offline (``plugins.py``); a CLI is built only when none
exists. Go builds reuse Go's module and build caches; built binaries live in
``~/.cache/toolkit/bin``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

from toolkit import settings
from toolkit.errors import ToolchainError, ToolkitError
from toolkit.toolchain import cli_lookup, docker_engine, offline, plugins, pulumi_cli, runner_image
from toolkit.toolchain.language_host import install_language_host, pulumis_own_language_host
from toolkit.toolchain.lazy_init import RECIPE
from toolkit.toolchain.shim import compile_plugin_modules, install_shim
from toolkit.toolchain.steps import Log, Timeline, read_stamp, write_stamp


def _ensure_pulumi_cli(outcome: list[str], log: Log) -> None:
    """The user's CLI when there is one the SDK supports (an older one is an error); a build only when none
    exists, or when the toolkit's own build is of an older recipe (``lazy_init.RECIPE``)."""
    target = settings.bin_dir() / "pulumi"
    recipe = target.with_name("pulumi.recipe")
    found = cli_lookup.find_cli()
    if found is not None and not (found.path == target and read_stamp(recipe) != RECIPE):
        problem = cli_lookup.version_problem(found)
        if problem:
            raise ToolchainError(problem)
        outcome.append(f"{found.describe()}; the SDK needs v{cli_lookup.minimum_version()} or newer")
        return
    wanted = pulumi_cli.required_version()
    target.parent.mkdir(parents=True, exist_ok=True)
    if found is None:
        log(f"no Pulumi CLI found (TOOLKIT_PULUMI, PATH, {settings.bin_dir()}): building v{wanted} from the Go module proxy")
    else:
        log(f"rebuilding the toolkit's Pulumi CLI v{wanted}: its build recipe is now {RECIPE}")
    pulumi_cli.build_pulumi_cli(wanted, settings.cache_dir() / "build" / "pulumi-cli", target, log)
    write_stamp(recipe, RECIPE)
    outcome.append(f"built v{wanted} ({RECIPE}) -> {target}")


def core_plugin_packages(docker: bool) -> list[str]:
    """SDKs whose plugins must be present: docker's (with ``docker``) and kubernetes' when it is installed."""
    return (["pulumi_docker"] if docker else []) + (["pulumi_kubernetes"] if _has_package("pulumi_kubernetes") else [])


def pool_plugin_packages(exclude: list[str]) -> list[str]:
    """SDKs of the registered pools' targets, for the plugins those pools will need (``exclude``: done already)."""
    from toolkit.infra import get_target_class
    from toolkit.pools import PoolRegistry

    packages: list[str] = []
    for pool in PoolRegistry().list():
        try:
            target = get_target_class(pool.type)
        except ToolkitError:
            continue  # its SDK is not installed: `toolkit doctor` and a run say which extra to install
        packages += [package for package in target.plugin_packages if package not in [*exclude, *packages]]
    return packages


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
    with timeline.step("plugin mode") as outcome:
        mode = offline.mode()
        outcome.append(f"{'offline' if mode.offline else 'online'}: {mode.reason}")
    core = core_plugin_packages(docker)
    for spec in plugins.specs_of(core):
        with timeline.step(f"{spec.name} provider plugin") as outcome:
            outcome.append(plugins.ensure(spec, log))
    if docker:
        with timeline.step("Docker engine") as outcome:
            installed = docker_engine.ensure_installed(log)
            running = docker_engine.ensure_running(log, settings.cache_dir() / "dockerd.log")
            outcome.append(f"{installed}, {running}")
        with timeline.step("runner image") as outcome:
            images = settings.cache_dir() / "images"
            base = runner_image.ensure_base_image(images, log)
            outcome.append(f"base {base}; {runner_image.ensure_runner_image(images, log)}")
    # Last, and not fatal: a pool of a cloud target may be registered on a machine that cannot get its
    # plugin (offline, no offline build); its runs and `toolkit doctor` keep saying what to do.
    skipped = [] if docker else ["pulumi_docker"]  # --no-docker: nothing of docker's
    for spec in plugins.specs_of(pool_plugin_packages(exclude=[*core, *skipped])):
        with timeline.step(f"{spec.name} provider plugin (registered pools)") as outcome:
            try:
                outcome.append(plugins.ensure(spec, log))
            except ToolchainError as exc:
                outcome.append(f"MISSING: {exc}")
    return timeline
