"""The run stacks' secrets key, kept by the client for the CLI processes it starts.

Pulumi's passphrase secrets manager derives its key (PBKDF2, 1,000,000 rounds)
in every CLI process that opens a stack: twice per run, on its critical path.
Its cloud secrets manager instead keeps a random data key in the stack,
encrypted by a key service, and asks the service once per process to decrypt
it. One of the services the CLI links is Vault's transit engine
(``hashivault://KEY``, reached at ``VAULT_SERVER_URL`` with
``VAULT_SERVER_TOKEN``); its two calls are small, so the client serves them on
loopback (``transit/encrypt/KEY``, ``transit/decrypt/KEY``) and run stacks of
passphrase pools use ``URL`` instead of the passphrase.

The service's key is derived from the toolkit's passphrase (``settings``) once
per salt and process, with the passphrase manager's PBKDF2 and rounds, so the
state is exactly as hard to open without the passphrase as before. The salt
travels inside each ciphertext: any process with the passphrase -- ``toolkit
gc`` of a dead client's stack -- serves a service that decrypts it. The token
is random per process and travels only in the CLI's environment: other local
users cannot use the service to decrypt.

Off (``TOOLKIT_STACK_KEY=0``), or when the environment names a Vault server of
its own (a pool's real ``hashivault://``), run stacks keep the passphrase.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ROUNDS = 1_000_000
KEY_NAME = "toolkit-run-stacks"
URL = f"hashivault://{KEY_NAME}"
"""The secrets provider of run stacks whose pool uses the passphrase."""
PREFIX = "toolkit:v1"
_VAULT_SETTINGS = ("VAULT_SERVER_URL", "VAULT_ADDR", "VAULT_SERVER_TOKEN", "VAULT_TOKEN")


@functools.lru_cache(maxsize=64)
def _key(passphrase: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", passphrase.encode(), salt, ROUNDS, dklen=32)


class KeyService:
    """A Vault-transit-shaped key service on 127.0.0.1, for one passphrase."""

    def __init__(self, passphrase: str) -> None:
        self._passphrase = passphrase
        self._salt = os.urandom(16)
        self.token = secrets.token_hex(16)
        # Derived while the first CLI process starts, not on the caller's path.
        threading.Thread(target=_key, args=(passphrase, self._salt), name="stack-key", daemon=True).start()
        keeper = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
                keeper._handle(self)

            do_POST = do_PUT

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="stack-key-service", daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> dict[str, str]:
        return {"VAULT_SERVER_URL": self.url, "VAULT_SERVER_TOKEN": self.token}

    def encrypt(self, plaintext: bytes) -> str:
        nonce = os.urandom(12)
        sealed = AESGCM(_key(self._passphrase, self._salt)).encrypt(nonce, plaintext, None)
        return ":".join([PREFIX, base64.b64encode(self._salt).decode(), base64.b64encode(nonce + sealed).decode()])

    def decrypt(self, ciphertext: str) -> bytes:
        prefix, version, salt, sealed = ciphertext.split(":")
        if f"{prefix}:{version}" != PREFIX:
            raise ValueError("not a toolkit ciphertext")
        raw = base64.b64decode(sealed)
        return AESGCM(_key(self._passphrase, base64.b64decode(salt))).decrypt(raw[:12], raw[12:], None)

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        if not secrets.compare_digest(request.headers.get("X-Vault-Token", ""), self.token):
            self._reply(request, 403, {"errors": ["permission denied"]})
            return
        body = json.loads(request.rfile.read(int(request.headers.get("Content-Length") or 0)) or b"{}")
        try:
            if request.path == f"/v1/transit/encrypt/{KEY_NAME}":
                data = {"ciphertext": self.encrypt(base64.b64decode(body["plaintext"]))}
            elif request.path == f"/v1/transit/decrypt/{KEY_NAME}":
                data = {"plaintext": base64.b64encode(self.decrypt(body["ciphertext"])).decode()}
            else:
                self._reply(request, 404, {"errors": [f"no such path {request.path}"]})
                return
        except (KeyError, ValueError, TypeError, InvalidTag) as exc:
            self._reply(request, 400, {"errors": [f"{type(exc).__name__}: {exc}"]})
            return
        self._reply(request, 200, {"data": data})

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def enabled() -> bool:
    """Whether run stacks of passphrase pools use the kept key (see the module's docstring)."""
    if os.environ.get("TOOLKIT_STACK_KEY", "1").lower() in ("0", "false", "no", "off"):
        return False
    return not any(os.environ.get(name) for name in _VAULT_SETTINGS)


@functools.cache
def service(passphrase: str) -> KeyService:
    """This process's key service for ``passphrase``, started on first use."""
    return KeyService(passphrase)


def env(passphrase: str) -> dict[str, str]:
    """Where a CLI process reaches the key service of ``passphrase`` (empty when it is off)."""
    return service(passphrase).env() if enabled() else {}
