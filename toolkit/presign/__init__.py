"""Signed requests for a run's objects, so its job reaches storage without a storage driver.

The client side of ``toolkit.storage_urls``: for a pool's object storage
(S3, Google Cloud Storage, Azure Blob), sign every request the job will make
with the caller's own credentials, once per attempt (``toolkit.infra.flow``
signs at each ``up``, whose job is new). What the job gets is ``SignedRun.env``, the
value of ``URLS_ENV`` (a secret), and, for a map, ``SignedRun.table``, the
sealed ``urls.tkb`` to upload next to the bundle.

``sign_run`` returns None where signing does not fit, and the job keeps the
fsspec path: local storage, anonymous access, credentials that cannot sign
here (GCS user credentials; a key held by a remote signer would cost a call
per URL), or a map whose workers claim items on a store whose conditional
create through a signed URL is not verified (``Signer.conditional_create``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from toolkit.bundles import BUNDLE_NAME, CLAIMS_DIR, FILES_NAME, ITEMS_DIR, RESULT_NAME, RESULTS_DIR, item_name, seal
from toolkit.storage_urls import CONTROL_NAME, TABLE_KIND, TABLE_NAME, Request, encode_table

MAX_SECONDS = 7 * 24 * 3600
"""The longest a signature may last (S3 SigV4 and GCS V4 refuse more)."""
MARGIN_SECONDS = 3600
"""Added to a call's ``timeout``: its job may start late (scheduling, image pulls)."""


class Signer(Protocol):
    """Signs requests for objects under one run's storage prefix."""

    conditional_create: bool
    """The store refuses a signed conditional create of an existing object (verified against its emulator)."""

    def sign(self, method: str, name: str, expires: int, create_only: bool = False) -> Request:
        """``[method, url, headers]`` for ``name`` under the run's prefix, valid ``expires`` seconds;
        ``create_only``: a PUT that fails when the object exists."""


@dataclass(frozen=True)
class SignedRun:
    env: str
    """``URLS_ENV``'s value: the run's own requests (a secret)."""
    table: bytes | None
    """A map's sealed ``urls.tkb``, uploaded next to the bundle; None for a single call."""


def signer_for(storage_url: str, options: dict[str, Any]) -> Signer | None:
    """The signer of the run's storage ``<scheme>://bucket/prefix``, or None where none fits."""
    scheme, _, rest = storage_url.partition("://")
    if not rest:
        return None
    if scheme in ("s3", "s3a"):
        from toolkit.presign.s3 import S3Signer

        return S3Signer.of(rest, options)
    if scheme in ("gs", "gcs"):
        from toolkit.presign.gcs import GcsSigner

        return GcsSigner.of(rest, options)
    if scheme in ("az", "abfs", "abfss"):
        from toolkit.presign.azure import AzureSigner

        return AzureSigner.of(rest, options)
    return None


def expiry_seconds(timeout: int | None) -> int:
    """How long a run's signatures last: its ``timeout`` and a margin, at most ``MAX_SECONDS``."""
    return min(MAX_SECONDS, timeout + MARGIN_SECONDS) if timeout else MAX_SECONDS


def sign_run(
    storage_url: str,
    options: dict[str, Any],
    key: str,
    *,
    files: bool = False,
    items: int | None = None,
    claims: bool = True,
    timeout: int | None = None,
) -> SignedRun | None:
    """The signed requests of one run (``items``: a map's count; ``claims``: its workers claim items,
    rather than run the item their platform's index names), or None to keep the fsspec path."""
    signer = signer_for(storage_url, options)
    if signer is None or (items is not None and claims and not signer.conditional_create):
        return None
    expires = expiry_seconds(timeout)
    own = {BUNDLE_NAME: signer.sign("GET", BUNDLE_NAME, expires), RESULT_NAME: signer.sign("PUT", RESULT_NAME, expires)}
    if files:
        own[FILES_NAME] = signer.sign("GET", FILES_NAME, expires)
    if items is None:
        return SignedRun(json.dumps(own), None)
    own[TABLE_NAME] = signer.sign("GET", TABLE_NAME, expires)
    table = {
        "items": [signer.sign("GET", item_name(ITEMS_DIR, i), expires) for i in range(items)],
        "claims": [signer.sign("PUT", f"{CLAIMS_DIR}/{i}", expires, create_only=True) for i in range(items)],
        "results": [signer.sign("PUT", item_name(RESULTS_DIR, i), expires) for i in range(items)],
        "control": signer.sign("GET", CONTROL_NAME, expires),
    }
    return SignedRun(json.dumps(own), seal(TABLE_KIND, encode_table(table), key))
