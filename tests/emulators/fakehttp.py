"""A tiny JSON HTTP server on loopback for fakes of cloud REST APIs.

A fake registers ``(method, regex)`` routes; each handler gets the match and
the request (decoded JSON body, query, headers) and returns ``(status, body)``. Every request is recorded
so tests can assert what the code under test sent. An ``authorize`` hook sees
each request before the routes and may refuse it (a fake API that demands the
bearer token its fake identity endpoint issued).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from requests.structures import CaseInsensitiveDict


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: dict[str, Any]
    headers: CaseInsensitiveDict[str]


Handler = Callable[[re.Match[str], Request], tuple[int, dict[str, Any]]]


def google_error(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    """The error body every Google API returns (google.rpc.Status inside ``error``)."""
    return status, {"error": {"code": status, "message": message, "status": code}}


class FakeHttpServer:
    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.requests: list[Request] = []
        self.response_headers: dict[str, str] = {}
        self.authorize: Callable[[Request], tuple[int, dict[str, Any]] | None] | None = None
        """Called before routing; a ``(status, body)`` it returns is the answer (a refusal)."""
        self._lock = threading.Lock()
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else {}
                headers = CaseInsensitiveDict(self.headers.items())
                request = Request(self.command, url.path, parse_qs(url.query), body, headers)
                status, payload = fake.dispatch(request)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in fake.response_headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method, re.compile(pattern + r"$"), handler))

    def dispatch(self, request: Request) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(request)
            refusal = self.authorize(request) if self.authorize else None
            if refusal is not None:
                return refusal
            for method, pattern, handler in self.routes:
                match = pattern.match(request.path)
                if method == request.method and match:
                    return handler(match, request)
        return google_error(404, "NOT_FOUND", f"no route for {request.method} {request.path}")

    def calls(self, method: str, contains: str = "") -> list[Request]:
        return [r for r in self.requests if r.method == method and contains in r.path]

    def __enter__(self) -> FakeHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
