"""Run storage through signed URLs: what the client hands a job, and the job's client for it.

Where the pool's object storage can sign requests (S3 pre-signed URLs, Google
Cloud Storage V4 signed URLs, Azure SAS), the client signs every request a job
will make (``toolkit.presign``) and the job reaches storage with the standard
library's ``http.client`` over one kept-alive connection: no s3fs, gcsfs or
adlfs import and no storage client set-up in the job, which were most of a
job's start. The signed envelopes (bundle, items, results) are checked exactly
as on the fsspec path; a URL only says where a request goes.

The wire format, shared by both sides (this module is the job side's too, so
the standard library only):

- ``URLS_ENV`` (a secret: each URL is a bearer credential for one object) holds
  JSON ``{name: request}`` for the run's own objects: ``bundle.tkb`` (GET),
  ``result.tkb`` (PUT), ``files.tar.gz`` (GET, when the call has include_files)
  and, for a map, ``urls.tkb`` (GET): the table of its items' requests. A request
  is ``[method, url, headers]``; the job sends exactly those headers.
- ``urls.tkb`` lies next to the bundle, sealed like one (kind ``"urls"``, signed
  with the run key: it says where results go, so a table anyone else wrote is
  refused) around zlib-compressed JSON ``{"items": [...], "claims": [...],
  "results": [...], "control": request}``, one request per item in each list.
  A claim is a conditional create (S3 and Azure ``If-None-Match: *``, GCS
  ``x-goog-if-generation-match: 0``): the store refuses it (412, or Azure's 409)
  when the object exists, so one worker wins each item.
- ``control.json``, written by the client while a map runs (``ItemResults``):
  ``{"pending": [...], "done": bool}``, the items without a claim (never taken,
  or released for a retry after their worker died) and whether every item has
  its result. A worker with nothing left of its own reads it instead of listing
  the store (a signed URL cannot page through a listing).
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import http.client

URLS_ENV = "TOOLKIT_STORAGE_URLS"
TABLE_NAME = "urls.tkb"
"""A map's table of per-item requests, next to the bundle."""
CONTROL_NAME = "control.json"
"""What the client tells a map's workers: the items still to claim, and whether all are done."""
TABLE_KIND = "urls"
EXISTS = (409, 412)
"""A conditional create refused because the object exists (S3, GCS: 412; Azure: 409 BlobAlreadyExists)."""
_RETRIED_STATUSES = (500, 502, 503, 504)
_ATTEMPTS = 4

Request = list[Any]
"""``[method, url, headers]``."""


class SignedUrlRefused(PermissionError):
    """The store refused a signed request (expired, or signed by credentials it no longer honours)."""


class SignedUrlError(OSError):
    """A signed request failed otherwise (the store's answer is in the message)."""


def encode_table(table: dict[str, Any]) -> bytes:
    """The payload of ``urls.tkb`` (seal it with the run key)."""
    return zlib.compress(json.dumps(table, separators=(",", ":")).encode(), 6)


def decode_table(payload: bytes) -> dict[str, Any]:
    return json.loads(zlib.decompress(payload))


class Http:
    """Requests over one kept-alive connection per host; a connection the server closed meanwhile
    is opened again once, and a 5xx answer is tried again after a pause."""

    def __init__(self) -> None:
        self._connections: dict[tuple[str, str], http.client.HTTPConnection] = {}

    def send(self, request: Request, body: bytes | None = None) -> tuple[int, bytes]:
        import http.client  # here: a job on local storage never needs it (ssl and email come with it)

        method, url, headers = request
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = dict(headers)
        if body is not None:
            headers.setdefault("Content-Type", "application/octet-stream")
        for attempt in range(1, _ATTEMPTS + 1):
            reused = (parts.scheme, parts.netloc) in self._connections
            connection = self._connection(parts.scheme, parts.netloc)
            try:
                connection.request(method, target, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
            except (http.client.HTTPException, ConnectionError):
                self._drop(parts.scheme, parts.netloc)
                if not reused or attempt == _ATTEMPTS:  # only a stale kept-alive connection is safe to retry
                    raise
                continue
            if response.status in _RETRIED_STATUSES and attempt < _ATTEMPTS:
                time.sleep(0.2 * attempt)
                continue
            if response.will_close:
                self._drop(parts.scheme, parts.netloc)
            return response.status, data
        raise AssertionError("unreachable")

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        import http.client

        key = (scheme, netloc)
        if key not in self._connections:
            if scheme == "https":
                self._connections[key] = http.client.HTTPSConnection(netloc, timeout=60)
            else:
                self._connections[key] = http.client.HTTPConnection(netloc, timeout=60)
        return self._connections[key]

    def _drop(self, scheme: str, netloc: str) -> None:
        connection = self._connections.pop((scheme, netloc), None)
        if connection is not None:
            connection.close()


def _failure(request: Request, status: int, data: bytes) -> OSError:
    what = f"{request[0]} {urlsplit(request[1]).path}"
    detail = data[:300].decode(errors="replace").strip()
    if status == 403:
        return SignedUrlRefused(f"the store refused the signed request {what} (403: {detail})")
    return SignedUrlError(f"the signed request {what} failed ({status}: {detail})")


class SignedStorage:
    """The job's run storage through signed requests, by the names the runner uses
    (``bundle.tkb``, ``items/3.tkb``, ``results/3.tkb``, ``claims/3`` ...)."""

    def __init__(
        self,
        requests: dict[str, Request],
        open_table: Callable[[bytes, str], bytes],
        http_client: Http | None = None,
    ) -> None:
        """``open_table(data, source)`` verifies the sealed table and returns its payload (raising
        ``BundleVerificationError`` for a table the run did not sign); it is fetched on first need."""
        self._requests = requests
        self._open_table = open_table
        self._http = http_client or Http()
        self._table: dict[str, Any] | None = None

    def read(self, name: str) -> bytes:
        request = self._request(name)
        status, data = self._http.send(request)
        if status == 404:
            raise FileNotFoundError(f"{name} is not in the run's storage ({urlsplit(request[1]).path})")
        if status != 200:
            raise _failure(request, status, data)
        return data

    def write(self, name: str, data: bytes) -> None:
        request = self._request(name)
        status, answer = self._http.send(request, data)
        if status not in (200, 201):
            raise _failure(request, status, answer)

    def create(self, name: str, data: bytes) -> bool:
        """Create ``name`` unless it exists; False when it does (another worker's claim)."""
        request = self._request(name)
        status, answer = self._http.send(request, data)
        if status in EXISTS:
            return False
        if status not in (200, 201):
            raise _failure(request, status, answer)
        return True

    def control(self) -> dict[str, Any]:
        """The client's latest word to the workers; before its first: nothing pending, not done."""
        try:
            return json.loads(self.read(CONTROL_NAME))
        except FileNotFoundError:
            return {"pending": [], "done": False}

    def _request(self, name: str) -> Request:
        if name in self._requests:
            return self._requests[name]
        if TABLE_NAME not in self._requests:
            raise KeyError(f"no signed request for {name!r}: the client signed none for it")
        if self._table is None:
            source = urlsplit(self._requests[TABLE_NAME][1]).path
            self._table = decode_table(self._open_table(self.read(TABLE_NAME), source))
        if name == CONTROL_NAME:
            return self._table["control"]
        directory, _, file = name.partition("/")
        index = int(file.split(".", 1)[0])
        return self._table[directory][index]
