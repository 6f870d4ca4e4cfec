"""Google Cloud Storage requests signed as V4 signed URLs (XML API), with a service account's key.

Only credentials that sign locally are used: a service account key (the
``token`` gcsfs is given, or the application default credentials when they
are one). Others sign through the IAM API, a call per URL; the job keeps the
fsspec path then.

A conditional create is a PUT with ``x-goog-if-generation-match: 0`` (a signed
header), which Cloud Storage answers with 412 when the object exists. Its
emulator, fake-gcs-server (v1.56.1), ignores every precondition on a
signed-URL upload, so that refusal cannot be verified here: ``conditional_create``
is False, and maps whose workers claim items keep the fsspec path on GCS.
Single calls and maps whose tasks run the item their index names (Cloud Run)
need no claim.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
from dataclasses import dataclass
from typing import Any

from toolkit.storage_urls import Request

API_ENDPOINT = "https://storage.googleapis.com"


@dataclass
class GcsSigner:
    bucket: str
    prefix: str
    endpoint: str
    credentials: Any
    """``google.oauth2.service_account.Credentials``: holds the key that signs."""
    conditional_create: bool = False

    @classmethod
    def of(cls, location: str, options: dict[str, Any]) -> GcsSigner | None:
        """A signer for ``bucket/prefix`` with gcsfs's ``options``; None without a service account key."""
        credentials = _signing_credentials(options.get("token"))
        if credentials is None:
            return None
        bucket, _, prefix = location.partition("/")
        endpoint = options.get("endpoint_url") or os.environ.get("STORAGE_EMULATOR_HOST") or API_ENDPOINT
        return cls(bucket, prefix.strip("/"), endpoint.rstrip("/"), credentials)

    @functools.cached_property
    def _bucket(self) -> Any:
        """The bucket as google-cloud-storage signs for it (a client built offline from the key)."""
        from google.cloud.storage import Client

        return Client(project=self.credentials.project_id, credentials=self.credentials).bucket(self.bucket)

    def sign(self, method: str, name: str, expires: int, create_only: bool = False) -> Request:
        blob = self._bucket.blob(f"{self.prefix}/{name}" if self.prefix else name)
        headers = {"x-goog-if-generation-match": "0"} if create_only else {}
        url = blob.generate_signed_url(
            version="v4",
            expiration=datetime.timedelta(seconds=expires),
            method=method,
            headers=dict(headers) or None,  # (it adds Host to what it is given)
            credentials=self.credentials,
            api_access_endpoint=self.endpoint,
        )
        return [method, url, headers]


def _signing_credentials(token: Any) -> Any:
    """Service account credentials from gcsfs's ``token`` (a key file's path or its content), or the
    application default credentials when they hold a key; None otherwise."""
    from google.oauth2 import service_account

    if token == "anon":
        return None
    if isinstance(token, service_account.Credentials):
        return token
    if isinstance(token, dict) and token.get("type") == "service_account":
        return service_account.Credentials.from_service_account_info(token)
    if isinstance(token, str) and token.endswith(".json") and os.path.isfile(token):
        with open(token, encoding="utf-8") as handle:
            info = json.load(handle)
        return service_account.Credentials.from_service_account_info(info) if info.get("type") == "service_account" else None
    path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if token in (None, "google_default") and path:
        return _signing_credentials(path)
    return None
