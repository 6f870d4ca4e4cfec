"""Azure Blob requests signed as blob SAS URLs, from the account key adlfs would use or, with an
Azure AD credential, a user delegation key.

Each URL grants one blob the least it needs: read (bundle, items, the map's
control), or create and write (results and claims). A claim's PUT carries
``If-None-Match: *``, which Blob storage answers with 409 when the blob exists
(a create-only SAS would refuse it with 403 instead, which cannot be told apart
from an expired signature). Every PUT names its blob type.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from azure.storage.blob import BlobSasPermissions, UserDelegationKey, generate_blob_sas

from toolkit.storage_urls import Request

_PUT_HEADERS = {"x-ms-blob-type": "BlockBlob"}


@dataclass(frozen=True)
class AzureSigner:
    account: str
    container: str
    prefix: str
    endpoint: str
    """The account's blob endpoint, e.g. ``https://<account>.blob.core.windows.net`` (Azurite: ``http://host:port/<account>``)."""
    account_key: str | None = None
    delegation_key: UserDelegationKey | None = None
    conditional_create: bool = True

    @classmethod
    def of(cls, location: str, options: dict[str, Any]) -> AzureSigner | None:
        """A signer for ``container[@account.host]/prefix`` with adlfs's ``options``; None without a key
        or a credential."""
        if options.get("anon") or options.get("sas_token"):
            return None
        container, _, prefix = location.partition("/")
        container, _, host = container.partition("@")
        settings = _connection_settings(options.get("connection_string") or os.environ.get("AZURE_STORAGE_CONNECTION_STRING"))
        account = (
            options.get("account_name")
            or settings.get("AccountName")
            or host.split(".", 1)[0]
            or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
        )
        if not account:
            return None
        endpoint = (settings.get("BlobEndpoint") or _account_host(options, account)).rstrip("/")
        key = options.get("account_key") or settings.get("AccountKey") or os.environ.get("AZURE_STORAGE_ACCOUNT_KEY")
        if key:
            return cls(account, container, prefix.strip("/"), endpoint, account_key=key)
        credential = options.get("credential")
        if credential is None:
            return None
        return cls(account, container, prefix.strip("/"), endpoint, delegation_key=_delegation_key(endpoint, credential))

    def sign(self, method: str, name: str, expires: int, create_only: bool = False) -> Request:
        blob = f"{self.prefix}/{name}" if self.prefix else name
        if method == "GET":
            permission, headers = BlobSasPermissions(read=True), {}
        else:
            permission = BlobSasPermissions(create=True, write=True)
            headers = {**_PUT_HEADERS, "If-None-Match": "*"} if create_only else dict(_PUT_HEADERS)
        token = generate_blob_sas(
            self.account,
            self.container,
            blob,
            account_key=self.account_key,
            user_delegation_key=self.delegation_key,
            permission=permission,
            expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=expires),
        )
        return [method, f"{self.endpoint}/{quote(self.container)}/{quote(blob)}?{token}", headers]


def _connection_settings(connection_string: str | None) -> dict[str, str]:
    if not connection_string:
        return {}
    pairs = (part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    return {name.strip(): value.strip() for name, value in pairs}


def _account_host(options: dict[str, Any], account: str) -> str:
    host = options.get("account_host")
    if host:
        return host if "://" in host else f"https://{host}"
    return f"https://{account}.blob.core.windows.net"


def _delegation_key(endpoint: str, credential: Any) -> UserDelegationKey:
    """A user delegation key for a week (the longest a signature here lasts), from an Azure AD credential."""
    from azure.storage.blob import BlobServiceClient

    now = datetime.datetime.now(datetime.timezone.utc)
    client = BlobServiceClient(endpoint, credential=credential)
    return client.get_user_delegation_key(now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=7))
