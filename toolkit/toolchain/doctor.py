"""``toolkit doctor``: one line per component, OK or MISSING, and the command that fixes it."""

from __future__ import annotations

import os
import shutil
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

from pydantic import BaseModel

from toolkit import settings
from toolkit.toolchain import docker_engine, kubernetes_provider, pulumi_cli, runner_image
from toolkit.toolchain.install import cli_version, installed_plugins
from toolkit.toolchain.language_host import HOST_NAME
from toolkit.toolchain.shim import SHIM_NAME

INSTALL = "toolkit toolchain install"

#: Provider plugins of the optional targets that the toolkit cannot build: Python package -> plugin name.
OPTIONAL_PLUGINS = {
    "pulumi_aws": "aws",
    "pulumi_gcp": "gcp",
    "pulumi_azure_native": "azure-native",
}


class Check(BaseModel):
    component: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _pulumi() -> Check:
    wanted = pulumi_cli.required_version()
    binary = settings.pulumi_binary()
    if binary is None or not binary.exists():
        return Check(component="Pulumi CLI", ok=False, detail="not found", fix=INSTALL)
    found = cli_version(binary)
    ok = found == wanted
    detail = f"v{found or '?'} ({binary})" + ("" if ok else f"; the pulumi package needs v{wanted}")
    return Check(component="Pulumi CLI", ok=ok, detail=detail, fix="" if ok else INSTALL)


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


def _plugins() -> list[Check]:
    plugins = installed_plugins()
    checks = []
    wanted = package_version("pulumi_docker")
    have = plugins.get("docker", set())
    checks.append(
        Check(
            component="plugin docker",
            ok=wanted in have,
            detail=f"v{wanted}" if wanted in have else f"v{wanted} not in the plugin cache (have: {sorted(have) or 'none'})",
            fix="" if wanted in have else INSTALL,
        )
    )
    kubernetes = _kubernetes_plugin(plugins)
    if kubernetes is not None:
        checks.append(kubernetes)
    for package, plugin in OPTIONAL_PLUGINS.items():
        try:
            version = package_version(package)
        except PackageNotFoundError:
            continue
        ok = version in plugins.get(plugin, set())
        checks.append(
            Check(
                component=f"plugin {plugin}",
                ok=ok,
                detail=f"v{version}" if ok else f"v{version} not installed (only needed to deploy to real {plugin})",
                fix="" if ok else f"pulumi plugin install resource {plugin} {version}  (on a machine that reaches get.pulumi.com)",
                required=False,
            )
        )
    return checks


def _kubernetes_plugin(plugins: dict[str, set[str]]) -> Check | None:
    """Built by ``toolkit toolchain install`` whenever pulumi_kubernetes is installed, so required then."""
    try:
        wanted = package_version("pulumi_kubernetes")
    except PackageNotFoundError:
        return None
    have = plugins.get("kubernetes", set())
    if wanted not in have:
        return Check(component="plugin kubernetes", ok=False,
                     detail=f"v{wanted} not in the plugin cache (have: {sorted(have) or 'none'})", fix=INSTALL)
    source = kubernetes_provider.read_source_note(settings.bin_dir() / kubernetes_provider.BINARY_NAME)
    return Check(component="plugin kubernetes", ok=True, detail=f"v{wanted}" + (f" (built from {source})" if source else ""))


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


def _registry() -> Check:
    from toolkit.pools import PoolRegistry

    try:
        registry = PoolRegistry()
        names = registry.names()
    except Exception as exc:  # noqa: BLE001 - any fsspec failure is a finding
        return Check(component="pool registry", ok=False, detail=f"{settings.pools_url()}: {exc}",
                     fix="check TOOLKIT_POOLS_URL / TOOLKIT_HOME and storage credentials")
    return Check(component="pool registry", ok=True, detail=f"{registry.url} ({len(names)} pools: {', '.join(names)})")


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


def checks() -> list[Check]:
    return [
        _pulumi(),
        _on_path(HOST_NAME, "Python language host", required=True),
        _policy_sdk(),
        _on_path(SHIM_NAME, "dynamic provider shim", required=True),
        *_plugins(),
        *_docker(),
        _backend(),
        _registry(),
    ]


def healthy(results: list[Check]) -> bool:
    return all(check.ok for check in results if check.required)
