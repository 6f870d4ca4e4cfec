"""``toolkit doctor``: one line per component, OK or MISSING, and the command that fixes it.

It says which Pulumi CLI is used (and where it was found), whether the toolkit
is online or offline for plugins, and, per plugin, the pools that need it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

from pydantic import BaseModel

from toolkit import settings
from toolkit.toolchain import cli_lookup, docker_engine, kubernetes_provider, offline, plugins, runner_image
from toolkit.toolchain.install import core_plugin_packages
from toolkit.toolchain.language_host import HOST_NAME
from toolkit.toolchain.shim import PROVIDER_PLUGIN_NAME, SHIM_NAME

INSTALL = "toolkit toolchain install"


class Check(BaseModel):
    component: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _pulumi() -> Check:
    found = cli_lookup.find_cli()
    minimum = f"the toolkit needs v{cli_lookup.minimum_version()} or newer"
    if found is None:
        return Check(component="Pulumi CLI", ok=False, detail=f"not found (TOOLKIT_PULUMI, PATH, {settings.bin_dir()})",
                     fix="install Pulumi (curl -fsSL https://get.pulumi.com | sh), or "
                     f"{INSTALL} (builds it from the Go module proxy; needs Go)")
    problem = cli_lookup.version_problem(found)
    return Check(component="Pulumi CLI", ok=problem is None, detail=f"{found.describe()}; {minimum}", fix=problem or "")


def _mode() -> Check:
    mode = offline.mode()
    return Check(component="plugin mode", ok=True, detail=f"{'offline' if mode.offline else 'online'}: {mode.reason}",
                 required=False)


def _on_path(name: str, component: str, required: bool) -> Check:
    found = settings.bin_dir() / name
    path = str(found) if found.exists() else shutil.which(name)
    return Check(
        component=component,
        ok=path is not None,
        detail=path or "not found",
        fix="" if path else INSTALL,
        required=required,
    )


PluginUsers = Mapping[str, tuple[list[str], list[str]]]
"""SDK package -> (targets using it, pools of those targets), over every target whose SDK is installed."""


def _plugins(plugin_users: PluginUsers) -> list[Check]:
    """One line per plugin: present or not, and which pools need it (those make it required)."""
    checks = []
    core = core_plugin_packages(docker=True)  # `toolkit toolchain install` gets these in any case
    for package, (targets, pool_names) in sorted(plugin_users.items()):
        spec = plugins.spec_of(package)
        found = plugins.status(spec)
        required = bool(pool_names) or package in core
        users = f"pools: {', '.join(pool_names)}" if pool_names else f"targets: {', '.join(targets)}; no pool uses it"
        if found.present:
            source = kubernetes_provider.read_source_note(plugins.built_binary(spec.name)) if spec.name == "kubernetes" else ""
            detail = f"v{spec.version} at {found.location}" + (f" (built from {source})" if source else "")
            checks.append(Check(component=f"plugin {spec.name}", ok=True, detail=f"{detail}; {users}", required=required))
            continue
        offline_build = " (downloads it; offline it builds it with Go)" if spec.name in plugins.OFFLINE_BUILDERS else ""
        fix = f"{INSTALL}{offline_build}, or {spec.install_command()}" if required else spec.install_command()
        checks.append(
            Check(
                component=f"plugin {spec.name}",
                ok=False,
                detail=f"v{spec.version} not in the plugin cache ({plugins.plugin_cache()}) nor on PATH; {users}",
                fix=fix,
                required=required,
            )
        )
    return sorted(checks, key=lambda check: (not check.required, check.component))


def _docker() -> list[Check]:
    version = docker_engine.engine_version()
    if version is None:
        fix = docker_engine.INSTALL_HINT if shutil.which("dockerd") is None else docker_engine.START_HINT
        return [
            Check(component="Docker engine", ok=False, detail="not reachable", fix=f"{INSTALL}  (or: {fix})"),
            Check(component="runner image", ok=False, detail="unknown: the engine is not reachable", fix=INSTALL),
        ]
    image, current = runner_image.runner_image_status()
    exists = runner_image.image_exists(image)
    detail = image + ("" if current else (" is out of date with the toolkit sources" if exists else " not built"))
    return [
        Check(component="Docker engine", ok=True, detail=f"server {version}"),
        Check(component="runner image", ok=current, detail=detail, fix="" if current else INSTALL),
    ]


def _backend() -> Check:
    url = settings.default_backend_url()
    if url.startswith("file://"):
        path = Path(url.removeprefix("file://"))
        existing = next(p for p in (path, *path.parents) if p.exists())  # created on first use
        ok = existing.is_dir() and os.access(existing, os.W_OK)
        detail = url if path.exists() else f"{url} (created on first run)"
        return Check(component="state backend", ok=ok, detail=detail if ok else f"{url}: {existing} is not writable",
                     fix="" if ok else f"make {existing} writable or set TOOLKIT_HOME / TOOLKIT_BACKEND_URL")
    return Check(component="state backend", ok=True, detail=f"{url} (not checked: remote)")


def _policy_sdk() -> Check:
    """Pools' Python policy packs run through the language host's RunPlugin on this interpreter."""
    try:
        version = package_version("pulumi-policy")
    except PackageNotFoundError:
        return Check(component="policy packs", ok=False, required=False,
                     detail="pulumi-policy not installed (needed by pools with policy_packs)",
                     fix="pip install 'toolkit[policy]'")
    return Check(component="policy packs", ok=True,
                 detail=f"pulumi-policy {version}, started by the Python language host (RunPlugin)")


def checks(plugin_users: PluginUsers, pool_registry: Check) -> list[Check]:
    """Every check; what needs the targets and pools (``plugin_users``, ``pool_registry``) comes from the caller."""
    return [
        _pulumi(),
        _mode(),
        _on_path(HOST_NAME, "Python language host", required=True),
        _policy_sdk(),
        _on_path(SHIM_NAME, "dynamic provider shim", required=True),
        _on_path(PROVIDER_PLUGIN_NAME, "toolkit provider plugin", required=True),
        *_plugins(plugin_users),
        *_docker(),
        _backend(),
        pool_registry,
    ]


def healthy(results: list[Check]) -> bool:
    return all(check.ok for check in results if check.required)
