"""The ``toolkit`` provider served by the client process, for every CLI process the client starts.

Without it the engine starts the provider as a plugin in every ``up`` and every
``destroy``: an interpreter's start, imports and a gRPC server, twice per run
on its critical path. Served once here, each CLI process attaches to it
(``PULUMI_DEBUG_PROVIDERS=toolkit:PORT``, see ``attach_env``) at the cost of a
local connection.

Safe to share because the provider keeps nothing per process (``server.py``).
It lives as long as the client: a stack whose client is gone is destroyed by
``toolkit gc``, which serves its own, or by the plugin ``pulumi-resource-toolkit``
the engine starts when none is attached. ``TOOLKIT_RESIDENT_PROVIDER=0`` turns it
off (every CLI process then starts the plugin), and so does a platform that cannot tell a
loopback caller's user (macOS: no ``/proc/net/tcp``).
"""

from __future__ import annotations

import os
import threading

from toolkit.providers import server

_lock = threading.Lock()
_port: int | None = None
_server: object = None
"""Kept referenced: the gRPC server stops when its object is collected."""


def enabled() -> bool:
    """On unless turned off, and where the provider can refuse other users' engines (``server.peers_known``)."""
    if os.environ.get("TOOLKIT_RESIDENT_PROVIDER", "1").lower() in ("0", "false", "no", "off"):
        return False
    return server.peers_known()


def port() -> int:
    """The resident provider's port, started on first use (once per process)."""
    global _port, _server
    with _lock:
        if _port is None:
            _server, _port = server.serve()
        return _port


def attach_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """``PULUMI_DEBUG_PROVIDERS`` for a CLI process to attach to the resident provider (and to any
    others the caller's environment names); empty when turned off."""
    if not enabled():
        return {}
    existing = (environ if environ is not None else os.environ).get("PULUMI_DEBUG_PROVIDERS", "")
    others = [entry for entry in existing.split(",") if entry and entry.split(":", 1)[0] != server.PACKAGE]
    return {"PULUMI_DEBUG_PROVIDERS": ",".join([*others, f"{server.PACKAGE}:{port()}"])}
