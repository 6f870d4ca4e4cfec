"""Azure stand-ins on loopback: Azurite (Blob storage) and a fake of the ARM calls the ACI watcher makes.

``azurite``: Azurite from the npm registry (``npm install azurite@3`` into
``~/.cache/toolkit/emulators/azurite`` on first use), ``azurite-blob`` started
in a temporary directory on a free port. Besides its documented development
account it serves the accounts a test module lists in ``AZURITE_ACCOUNTS``
(Azurite's ``AZURITE_ACCOUNTS`` variable), so a test can use the very storage
account name a run provisions. If npm or Azurite fails, the fixture fails
with the reason: it never skips.

``azurite_oauth``: the same Azurite over HTTPS (a certificate made for the
test, trusted through ``SSL_CERT_FILE``/``REQUESTS_CA_BUNDLE``) with OAuth on
(``--oauth basic``): it takes Azure AD bearer tokens and checks their issuer,
audience and lifetime, as Blob storage does for a managed identity.

``managed_identity``: Azure's instance metadata token endpoint (IMDS), as an
ACI container group's user-assigned identity sees it. ``azure-identity`` is
pointed at it with ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` and no other
credential around, so ``DefaultAzureCredential`` takes its managed-identity
path. It issues JWTs of the shape Azure AD issues, per resource and client id.

``fake_arm``: ``GET`` of a container group (with instance views) and of a
container's logs, in the shapes of the Microsoft.ContainerInstance REST API;
every call must carry the bearer token ``managed_identity`` issued for ARM.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.emulators.fakehttp import FakeHttpServer, Request
from tests.emulators.gcp import emulator_cache, free_port, installing, wait_until_serving

AZURITE_PACKAGE = "azurite@3"
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
"""Azurite's documented development account key (public, fixed)."""


def account_key(account: str) -> str:
    """A deterministic base64 key for an emulated account."""
    return base64.b64encode(hashlib.sha512(account.encode()).digest()).decode()


def azurite_binary() -> Path:
    """Install Azurite from npm once; later runs reuse it."""
    prefix = emulator_cache() / "azurite"
    with installing(prefix):
        return _install_azurite(prefix)


def _install_azurite(prefix: Path) -> Path:
    binary = prefix / "node_modules" / ".bin" / "azurite-blob"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("the Azure Blob emulator needs npm to install Azurite; install Node.js and npm")
    prefix.mkdir(parents=True, exist_ok=True)
    install = subprocess.run(
        [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", AZURITE_PACKAGE],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if install.returncode != 0 or not binary.exists():
        pytest.fail(
            f"`npm install {AZURITE_PACKAGE}` failed (is the npm registry reachable?):\n{install.stderr[-3000:]}"
        )
    return binary


@dataclass
class Azurite:
    blob_endpoint: str

    def connection_string(self, account: str = DEV_ACCOUNT) -> str:
        key = DEV_KEY if account == DEV_ACCOUNT else account_key(account)
        return (
            f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
            f"BlobEndpoint={self.blob_endpoint}/{account};"
        )


@contextmanager
def _serve_azurite(request: pytest.FixtureRequest, tls: tuple[Path, Path] | None = None) -> Iterator[Azurite]:
    """Azurite on a free loopback port; with ``tls`` (cert, key): HTTPS and OAuth bearer tokens accepted."""
    binary = azurite_binary()
    accounts = [DEV_ACCOUNT, *getattr(request.module, "AZURITE_ACCOUNTS", ())]
    keys = ";".join(f"{a}:{DEV_KEY if a == DEV_ACCOUNT else account_key(a)}" for a in accounts)
    port = free_port()
    secure = ["--oauth", "basic", "--cert", str(tls[0]), "--key", str(tls[1])] if tls else []
    with tempfile.TemporaryDirectory(prefix="azurite-") as location:
        process = subprocess.Popen(
            [
                str(binary),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
                "--location",
                location,
                "--skipApiVersionCheck",
                "--silent",
                *secure,
            ],
            env={**os.environ, "AZURITE_ACCOUNTS": keys},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        try:
            verify = str(tls[0]) if tls else True
            # Node's start takes well over 30 s on a busy 2-core machine; a healthy start returns at once.
            wait_until_serving(f"{endpoint}/{DEV_ACCOUNT}?comp=list", process, "azurite-blob", timeout=120,
                               verify=verify)
            yield Azurite(endpoint)
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def azurite(request: pytest.FixtureRequest) -> Iterator[Azurite]:
    with _serve_azurite(request) as served:
        yield served


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, as PEM files in ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "azurite.crt", directory / "azurite.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@dataclass
class SecureAzurite(Azurite):
    certificate: Path
    """PEM file that clients (and job subprocesses, through ``SSL_CERT_FILE``) trust."""

    def account_host(self, account: str) -> str:
        """adlfs ``account_host`` for ``account``: Azurite names accounts by path, not by host."""
        return f"{self.blob_endpoint.removeprefix('https://')}/{account}"

    def connection_string(self, account: str = DEV_ACCOUNT) -> str:
        return super().connection_string(account).replace("DefaultEndpointsProtocol=http;", "DefaultEndpointsProtocol=https;")


@pytest.fixture(scope="module")
def azurite_oauth(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureAzurite]:
    tls = self_signed_certificate(tmp_path_factory.mktemp("azurite-tls"))
    with _serve_azurite(request, tls) as served:
        yield SecureAzurite(served.blob_endpoint, tls[0])


# -- a managed identity: Azure's instance metadata token endpoint -------------------------------------

TENANT = "00000000-0000-0000-0000-0000000000bb"
ARM_RESOURCE = "https://management.azure.com"
STORAGE_RESOURCE = "https://storage.azure.com"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class FakeManagedIdentity:
    """``GET /metadata/identity/oauth2/token`` as IMDS answers it, recording who asked for what."""

    server: FakeHttpServer
    issued: dict[str, str] = field(default_factory=dict)
    """Token by ``resource|client_id`` (client_id '' for the system-assigned identity)."""

    @property
    def url(self) -> str:
        return self.server.url

    def install(self) -> None:
        self.server.route("GET", r"/metadata/identity/oauth2/token", self._token)

    def token_for(self, resource: str, client_id: str = "") -> str:
        """An Azure AD-shaped JWT (issuer, audience, lifetime: what Azurite's OAuth checks); unsigned."""
        key = f"{resource}|{client_id}"
        if key not in self.issued:
            now = int(time.time())
            header = {"typ": "JWT", "alg": "RS256", "kid": "fake"}
            claims = {
                "aud": resource,
                "iss": f"https://sts.windows.net/{TENANT}/",
                "iat": now - 60,
                "nbf": now - 60,
                "exp": now + 3600,
                "appid": client_id or "system-assigned",
                "oid": hashlib.sha256(key.encode()).hexdigest()[:32],
                "tid": TENANT,
            }
            parts = [_b64url(json.dumps(part).encode()) for part in (header, claims)]
            self.issued[key] = ".".join([*parts, _b64url(b"not-signed")])
        return self.issued[key]

    def _token(self, _match: re.Match[str], request: Request) -> tuple[int, dict[str, Any]]:
        if request.headers.get("Metadata") != "true":
            return 400, {"error": "invalid_request", "error_description": "Required metadata header not specified"}
        resource = (request.query.get("resource") or [""])[0]
        if not resource or "api-version" not in request.query:
            return 400, {"error": "invalid_request", "error_description": "Required query parameter missing"}
        client_id = (request.query.get("client_id") or [""])[0]
        token = self.token_for(resource.rstrip("/"), client_id)
        expires = str(int(time.time()) + 3600)
        return 200, {
            "access_token": token,
            "client_id": client_id,
            "expires_in": "3600",
            "expires_on": expires,
            "ext_expires_in": "3600",
            "not_before": str(int(time.time()) - 60),
            "resource": resource,
            "token_type": "Bearer",
        }

    def requests_for(self, resource: str) -> list[Request]:
        return [r for r in self.server.calls("GET", "/metadata/identity") if r.query.get("resource") == [resource]]


IDENTITY_ENV = (
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_TENANT_ID",
    "AZURE_USERNAME",
    "AZURE_FEDERATED_TOKEN_FILE",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)
"""Variables that would make azure-identity use another credential than the managed identity."""


@pytest.fixture
def managed_identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeManagedIdentity]:
    with FakeHttpServer() as server:
        fake = FakeManagedIdentity(server)
        fake.install()
        for name in IDENTITY_ENV:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", fake.url)
        yield fake


# -- fake Azure Resource Manager ------------------------------------------------------------------


@dataclass
class FakeArm:
    server: FakeHttpServer
    identity: FakeManagedIdentity
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def _authorize(self, request: Request) -> tuple[int, dict[str, Any]] | None:
        """ARM's answer to a call without a token the identity endpoint issued for ARM."""
        issued = {t for key, t in self.identity.issued.items() if key.startswith(f"{ARM_RESOURCE}|")}
        scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
        if scheme != "Bearer" or token not in issued:
            return 401, {
                "error": {
                    "code": "AuthenticationFailed",
                    "message": "Authentication failed. The 'Authorization' header is missing or invalid.",
                }
            }
        return None

    def install(self) -> None:
        self.server.authorize = self._authorize
        group = (
            r"(/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.ContainerInstance/containerGroups/[^/]+)"
        )
        self.server.route("GET", group, self._get_group)
        self.server.route("GET", group + r"/containers/([^/]+)/logs", self._get_logs)

    def _get_group(self, match: re.Match[str], request: Request) -> tuple[int, dict[str, Any]]:
        if "api-version" not in request.query:
            return 400, {
                "error": {
                    "code": "MissingApiVersionParameter",
                    "message": "The api-version query parameter is required.",
                }
            }
        group = self.groups.get(match.group(1))
        if group is None:
            return 404, {
                "error": {"code": "ResourceNotFound", "message": f"The Resource '{match.group(1)}' was not found."}
            }
        return 200, group

    def _get_logs(self, match: re.Match[str], request: Request) -> tuple[int, dict[str, Any]]:
        if "api-version" not in request.query:
            return 400, {
                "error": {
                    "code": "MissingApiVersionParameter",
                    "message": "The api-version query parameter is required.",
                }
            }
        return 200, {"content": self.logs.get(f"{match.group(1)}/{match.group(2)}", "")}


def container_group(
    group_id: str,
    state: dict[str, Any],
    group_state: str,
    events: list[dict[str, Any]] | None = None,
    provisioning: str = "Succeeded",
) -> dict[str, Any]:
    """A container group as ``GET .../containerGroups/{name}`` returns it (api-version 2023-05-01)."""
    name = group_id.rsplit("/", 1)[-1]
    return {
        "id": group_id,
        "name": name,
        "type": "Microsoft.ContainerInstance/containerGroups",
        "location": "westeurope",
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {}},
        "properties": {
            "provisioningState": provisioning,
            "sku": "Standard",
            "osType": "Linux",
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "runner",
                    "properties": {
                        "image": "registry.example/runner:1",
                        "command": [
                            "python3",
                            "-u",
                            "-m",
                            "toolkit.runner",
                            "--storage",
                            "az://run@x.blob.core.windows.net",
                        ],
                        "ports": [],
                        "environmentVariables": [{"name": "TOOLKIT_RUN_KEY"}],
                        "resources": {"requests": {"memoryInGB": 1.5, "cpu": 1.0}},
                        "instanceView": {"restartCount": 0, "currentState": state, "events": events or []},
                    },
                }
            ],
            "instanceView": {"events": [], "state": group_state},
        },
    }


@pytest.fixture
def fake_arm(managed_identity: FakeManagedIdentity) -> Iterator[FakeArm]:
    with FakeHttpServer() as server:
        fake = FakeArm(server, managed_identity)
        fake.install()
        yield fake
