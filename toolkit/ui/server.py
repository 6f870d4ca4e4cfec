"""Starting the dashboard: bind, load the runs, print where it is, serve until Ctrl-C."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable

import uvicorn

from toolkit.ui import adapter, security
from toolkit.ui.app import Settings, create_app
from toolkit.ui.catalog import Catalog


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise adapter.ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}. Pick another --port") from None
    sock.listen(128)
    return sock


def url_of(host: str, port: int, token: str | None) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def serve(
    backend: str | None, host: str, port: int, read_only: bool, say: Callable[[str], None] = print
) -> None:
    """Serve the dashboard on ``host:port`` (0: any free port) until interrupted."""
    token = security.new_secret() if security.needs_token(host) else None
    backends = adapter.watched_backends(backend)
    sock = _bind(host, port)
    catalog = Catalog(backends)
    catalog.refresh()
    app = create_app(Settings(backends=backends, read_only=read_only, token=token), catalog)
    bound = sock.getsockname()[1]
    say(f"toolkit ui: {len(catalog.rows())} runs from {', '.join(backends)}" + (" (read-only)" if read_only else ""))
    say(f"open {url_of(host, bound, token)}")
    if token:
        say("any address but 127.0.0.1 needs that token: keep the URL to yourself")
    sys.stdout.flush()
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=1)
    uvicorn.Server(config).run(sockets=[sock])
