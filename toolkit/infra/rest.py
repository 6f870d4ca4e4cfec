"""JSON-over-HTTPS access to cloud control planes (Google APIs, Azure Resource Manager).

The cloud targets call a handful of REST methods (run a Cloud Run job, create a
Vertex AI CustomJob, read an ACI container group's instance view, read logs).
The official client libraries for them are large, so the toolkit speaks the
documented REST shapes through ``requests`` with the clouds' own auth libraries.

Every base URL can be overridden by an environment variable, so tests point a
target at a local fake of the API. Credentials are always looked up and sent,
whatever the endpoint: tests point the auth libraries at fakes of the identity
endpoints (the GCE metadata server, Azure's managed-identity endpoint) rather
than skipping them.
"""

from __future__ import annotations

import abc
import os
import time
from typing import Any

import requests

from toolkit.errors import ToolkitError
from toolkit.infra.watch import JobStatus, JobWatcher

GOOGLE_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
ARM_SCOPE = "https://management.azure.com/.default"
REQUEST_TIMEOUT = 60.0
"""Seconds for one API call; a hung connection must not hang a run's teardown."""


class CloudApiError(ToolkitError):
    """A cloud API answered with an error status."""

    def __init__(self, method: str, url: str, status: int, code: str, message: str) -> None:
        super().__init__(f"{method} {url} failed with HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.api_message = message


def endpoint(env_var: str, default: str) -> str:
    """``$env_var`` if set (a test's fake or an emulator), else the public endpoint."""
    return (os.environ.get(env_var) or default).rstrip("/")


def google_session() -> requests.Session:
    """A session carrying Application Default Credentials."""
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, _project = google.auth.default(scopes=list(GOOGLE_SCOPES))
    return AuthorizedSession(credentials)


class _AzureBearerSession(requests.Session):
    """Adds an Azure AD bearer token to each request; the credential caches and refreshes it."""

    def __init__(self) -> None:
        super().__init__()
        from azure.identity import DefaultAzureCredential

        self._credential = DefaultAzureCredential()

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        token = self._credential.get_token(ARM_SCOPE).token
        headers = dict(kwargs.pop("headers", None) or {})
        headers["Authorization"] = f"Bearer {token}"
        return super().request(method, url, *args, headers=headers, **kwargs)


def azure_session() -> requests.Session:
    """A session carrying ``DefaultAzureCredential`` tokens."""
    return _AzureBearerSession()


class RestClient:
    """Calls one API: ``client.call("GET", "/v1/...")`` returns the decoded JSON body."""

    def __init__(self, base_url: str, session: requests.Session) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        url = f"{self.base_url}/{path.lstrip('/')}"
        response = self.session.request(method, url, json=body, params=params, timeout=REQUEST_TIMEOUT)
        if response.status_code >= 400:
            code, message = _error_of(response)
            raise CloudApiError(method, url, response.status_code, code, message)
        if not response.content:
            return {}
        return response.json()


def _error_of(response: requests.Response) -> tuple[str, str]:
    """``(code, message)`` from a Google (``error.status``) or ARM (``error.code``) error body."""
    try:
        error = response.json().get("error") or {}
    except ValueError:
        return "", response.text[:500]
    if not isinstance(error, dict):
        return "", str(error)[:500]
    return str(error.get("status") or error.get("code") or ""), str(error.get("message") or "")


class PolledWatcher(JobWatcher):
    """A watcher over a cloud REST API: asks for the job's state at most every ``min_interval``.

    The engine polls several times a second and cloud APIs have quotas, so an
    unfinished state is reused until the interval has passed; a finished one is
    final.
    """

    def __init__(self, min_interval: float) -> None:
        self._min_interval = min_interval
        self._last: tuple[float, JobStatus] | None = None

    @abc.abstractmethod
    def fetch_status(self) -> JobStatus:
        """Ask the API for the job's state now."""

    @property
    def finished(self) -> bool:
        """The job's last known state is final (the engine then reads logs once more)."""
        return bool(self._last and self._last[1].finished)

    def status(self) -> JobStatus:
        now = time.monotonic()
        if self._last and not self._last[1].finished and now - self._last[0] < self._min_interval:
            return self._last[1]
        status = self.fetch_status()
        self._last = (now, status)
        return status
