"""``toolkit toolchain install`` and ``toolkit doctor``: what the toolkit runs on.

The toolchain knows no targets or pools; what the registered pools need (their
targets' provider plugins) and the pool registry's own line in ``doctor`` are
worked out here and handed to it.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from toolkit.cli.output import JsonOption, err, out, print_json
from toolkit.errors import ToolkitError

toolchain_app = typer.Typer(no_args_is_help=True, help="The Pulumi engine, plugins, Docker engine and runner image.")


@toolchain_app.command("install")
def toolchain_install(
    parts: Annotated[list[str] | None, typer.Argument(
        help="Only these parts: core (the Pulumi CLI and what local-process pools need), docker (plugin, "
             "engine, runner image), kubernetes (plugin), pools (the registered pools' plugins). Default: all.",
        show_default=False)] = None,
    docker: Annotated[bool, typer.Option("--docker/--no-docker", help="Also the Docker engine, plugin and image.")] = True,
) -> None:
    """Build or install everything missing (idempotent; cached under ~/.cache/toolkit)."""
    from toolkit.toolchain.install import PARTS, install

    selected = parts or tuple(PARTS)
    timeline = install(lambda line: err.print(line, markup=False), docker=docker, parts=selected,
                       pool_packages=_pool_plugin_packages() if "pools" in selected else [])
    err.print("\nToolchain:\n" + timeline.summary(), markup=False)


def doctor(as_json: JsonOption = False) -> None:
    """What is installed and running, what is missing, and the command that fixes it."""
    from toolkit.toolchain.doctor import checks, healthy

    results = checks(_plugin_users(), _pool_registry_check())
    if as_json:
        print_json([check.model_dump() for check in results])
    else:
        for check in results:
            status = "[green]OK     [/green]" if check.ok else ("[red]MISSING[/red]" if check.required else "[yellow]absent [/yellow]")
            line = f"{status} {check.component:<24} {check.detail}"
            if not check.ok and check.fix:
                line += f"\n        fix: {check.fix}"
            out.print(line)
    raise typer.Exit(0 if healthy(results) else 1)


def _pool_plugin_packages() -> list[str]:
    """SDKs of the registered pools' targets, for the plugins those pools will need."""
    from toolkit.infra.registry import get_target_class
    from toolkit.pools.registry import PoolRegistry

    packages: list[str] = []
    for pool in PoolRegistry().list():
        try:
            target = get_target_class(pool.type)
        except ToolkitError:
            continue  # its SDK is not installed: `toolkit doctor` and a run say which extra to install
        packages += [package for package in target.plugin_packages if package not in packages]
    return packages


def _plugin_users() -> dict[str, tuple[list[str], list[str]]]:
    """SDK package -> (targets using it, pools of those targets), over every target whose SDK is installed."""
    from toolkit.infra.registry import get_target_class, target_names
    from toolkit.pools.registry import PoolRegistry

    pools = PoolRegistry().list()
    users: dict[str, tuple[list[str], list[str]]] = {}
    for name in target_names():
        try:
            target = get_target_class(name)
        except ToolkitError:
            continue  # its extra is not installed: no plugin to look for
        for package in target.plugin_packages:
            targets, pool_names = users.setdefault(package, ([], []))
            targets.append(name)
            pool_names += [pool.name for pool in pools if pool.type == name]
    return users


def _pool_registry_check() -> Any:
    """Doctor's line for the pool registry: reachable, and which pools it holds."""
    from toolkit import settings
    from toolkit.pools.registry import PoolRegistry
    from toolkit.toolchain.doctor import Check

    try:
        registry = PoolRegistry()
        names = registry.names()
    except Exception as exc:  # noqa: BLE001 - any fsspec failure is a finding
        return Check(component="pool registry", ok=False, detail=f"{settings.pools_url()}: {exc}",
                     fix="check TOOLKIT_POOLS_URL / TOOLKIT_HOME and storage credentials")
    return Check(component="pool registry", ok=True, detail=f"{registry.url} ({len(names)} pools: {', '.join(names)})")
