"""The plugin executables the engine looks up on PATH: ``pulumi-resource-pulumi-python`` and ``pulumi-resource-toolkit``.

The engine starts dynamic providers as a plugin named ``pulumi-python``; the
Python SDK ships the provider (``python -m pulumi.dynamic``) but not the
executable the engine looks for on PATH. It runs the interpreter named by
``PULUMI_PYTHON_CMD`` (set by the toolkit to its own interpreter), on the
toolkit's lean entry point when that interpreter has it.

``pulumi-resource-toolkit`` serves the toolkit's own resources (run storage, a
map's items, a local job process: ``toolkit/providers/server.py``) when no
resident provider is attached, e.g. for ``toolkit gc`` of a stack whose client
is gone. It runs the toolkit's interpreter, named when it was installed.
"""

from __future__ import annotations

import compileall
import importlib.util
import os
import sys
from pathlib import Path

SHIM_NAME = "pulumi-resource-pulumi-python"
_LAUNCH = (
    "try:\n"
    "    from toolkit.toolchain.dynamic_provider import main\n"
    "except ImportError:\n"
    "    import runpy\n"
    "    runpy.run_module('pulumi.dynamic', run_name='__main__', alter_sys=True)\n"
    "else:\n"
    "    main()\n"
)
SHIM_TEXT = f'#!/bin/sh\nexec "${{PULUMI_PYTHON_CMD:-python3}}" -u -c "{_LAUNCH}" "$@"\n'
"""Starts the toolkit's lean entry point (``dynamic_provider.py``), or the SDK's own
(``python -m pulumi.dynamic``) in an interpreter without the toolkit."""


PROVIDER_PLUGIN_NAME = "pulumi-resource-toolkit"


def provider_plugin_text(python: str = sys.executable) -> str:
    """The ``toolkit`` provider plugin: the provider's server in the toolkit's interpreter ``python``."""
    launch = "from toolkit.providers.server import main; main()"
    return f'#!/bin/sh\nexec "${{PULUMI_PYTHON_CMD:-{python}}}" -u -c "{launch}" "$@"\n'


def _install(path: Path, text: str) -> tuple[Path, bool]:
    if path.exists() and path.read_text() == text and os.access(path, os.X_OK):
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path, True


def install_shim(bin_dir: Path) -> tuple[Path, bool]:
    """Write the dynamic-provider shim into ``bin_dir``; returns ``(path, changed)``."""
    return _install(bin_dir / SHIM_NAME, SHIM_TEXT)


def install_provider_plugin(bin_dir: Path) -> tuple[Path, bool]:
    """Write ``pulumi-resource-toolkit`` into ``bin_dir``; returns ``(path, changed)``."""
    return _install(bin_dir / PROVIDER_PLUGIN_NAME, provider_plugin_text())


PLUGIN_PACKAGES = ("toolkit.toolchain", "toolkit.providers", "pulumi.dynamic")
"""What the plugin imports beyond ``pulumi`` itself: its entry point, the toolkit's providers, the SDK's server."""


def compile_plugin_modules() -> bool:
    """Byte-compile ``PLUGIN_PACKAGES`` where they are installed, so no plugin start compiles source.

    A no-op for up-to-date ``.pyc`` files (pip compiles what it installs; an
    editable or read-only install may have none). True if all compiled.
    """
    ok = True
    for name in PLUGIN_PACKAGES:
        spec = importlib.util.find_spec(name)
        for directory in (spec.submodule_search_locations or []) if spec else []:
            ok = bool(compileall.compile_dir(directory, maxlevels=0, quiet=1)) and ok
    return ok
