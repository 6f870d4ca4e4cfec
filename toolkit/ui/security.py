"""Who may read the dashboard and act through it.

- Bound to a loopback address (the default), it serves this machine only, and
  checks the ``Host`` header so a web page cannot reach it through a DNS name
  rebound to 127.0.0.1.
- Bound to any other address, every request needs the token printed at start
  (as Jupyter does): ``?token=`` once (it becomes a same-site cookie), the
  cookie, or an ``Authorization: token ...`` header.
- Every action is a POST that must carry the server's CSRF token (only its own
  pages know it) and must not come from another site (``Origin``,
  ``Sec-Fetch-Site``); see ``check_action``.
- Every response forbids inline scripts and framing (CSP), so even text that
  escaped escaping could not run.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

TOKEN_COOKIE = "toolkit-ui-token"
LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")
HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
     b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def needs_token(host: str) -> bool:
    """Any bind address but this machine's own loopback one needs a token."""
    return host not in LOOPBACK_NAMES


def new_secret() -> str:
    return secrets.token_urlsafe(24)


def same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _loopback_host(value: str) -> bool:
    name = value.rsplit(":", 1)[0] if value.count(":") == 1 or value.startswith("[") else value
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Guard:
    """ASGI middleware: the token (when needed), the Host check (when not), security headers."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if self.token is None:
            if not _loopback_host(headers.get("host", "")):
                await _refuse(send, 403, "This dashboard answers to localhost only (the Host header named another).")
                return
        else:
            cookie = SimpleCookie(headers.get("cookie", ""))
            given = query.get("token") or (cookie[TOKEN_COOKIE].value if TOKEN_COOKIE in cookie else None)
            authorization = headers.get("authorization", "")
            if authorization.lower().startswith("token "):
                given = authorization[6:].strip()
            if not same(given, self.token):
                await _refuse(send, 403, "This dashboard needs its token: open the URL `toolkit ui` printed "
                              "when it started (it ends with ?token=...).")
                return
            if "token" in query and scope["method"] == "GET":
                await _token_redirect(send, scope, query, self.token)
                return
        if scope["method"] not in ("GET", "HEAD") and cross_site(headers):
            await _refuse(send, 403, "Cross-site request refused.")
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, secured)


def cross_site(headers: dict[str, str]) -> bool:
    """A request another site's page made: its browser says so (``Sec-Fetch-Site``) or its
    ``Origin`` is not the host it was sent to."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    return origin.split("://", 1)[-1] != headers.get("host", "")


def check_action(headers: dict[str, str], form_token: str | None, csrf: str) -> str | None:
    """Why an action request must be refused (None: it may go ahead)."""
    if cross_site(headers):
        return "Cross-site request refused."
    if not same(form_token, csrf):
        return "This action's form is stale or did not come from this dashboard (CSRF token missing or wrong)."
    return None


async def _refuse(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), *HEADERS]})
    await send({"type": "http.response.body", "body": body})


async def _token_redirect(send: Send, scope: Scope, query: dict[str, str], token: str) -> None:
    """Trade ``?token=`` for a cookie and the same URL without it (out of the history and the logs)."""
    rest = urlencode({key: value for key, value in query.items() if key != "token"})
    location = scope["path"] + (f"?{rest}" if rest else "")
    cookie = f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode()), (b"set-cookie", cookie.encode()), *HEADERS]})
    await send({"type": "http.response.body", "body": b""})
