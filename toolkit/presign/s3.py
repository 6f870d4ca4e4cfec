"""S3 pre-signed requests (SigV4 in the query string), from the credentials s3fs would use.

Signed with botocore's own ``S3SigV4QueryAuth`` on a bare request: the client's
``generate_presigned_url`` costs about five times more per URL (its event
hooks), and a map signs three per item. A conditional create is a PUT with
``If-None-Match: *``, a signed header, which S3 (and its emulator, moto) answers
with 412 when the object exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.session import Session

from toolkit.storage_urls import Request

DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class S3Signer:
    base_url: str
    """``<endpoint>/<bucket>/<prefix>`` (path style) or ``https://<bucket>.s3.<region>.amazonaws.com/<prefix>``."""
    region: str
    credentials: ReadOnlyCredentials
    conditional_create: bool = True

    @classmethod
    def of(cls, location: str, options: dict[str, Any]) -> S3Signer | None:
        """A signer for ``bucket/prefix`` with s3fs's ``options``; None when they name no credentials."""
        if options.get("anon"):
            return None
        bucket, _, prefix = location.partition("/")
        client_kwargs = options.get("client_kwargs") or {}
        session = Session(profile=options.get("profile")) if options.get("profile") else Session()
        if options.get("key") and options.get("secret"):
            credentials: Credentials | None = Credentials(options["key"], options["secret"], options.get("token"))
        else:
            credentials = session.get_credentials()
        if credentials is None:
            return None
        region = (
            client_kwargs.get("region_name")
            or options.get("region_name")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or session.get_config_variable("region")
            or DEFAULT_REGION
        )
        endpoint = (
            options.get("endpoint_url") or client_kwargs.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        if endpoint:
            base = f"{endpoint.rstrip('/')}/{bucket}"
        elif "." in bucket:  # a dotted name breaks the virtual host's certificate
            base = f"https://s3.{region}.amazonaws.com/{bucket}"
        else:
            base = f"https://{bucket}.s3.{region}.amazonaws.com"
        prefix = prefix.strip("/")
        return cls(f"{base}/{quote(prefix)}" if prefix else base, region, credentials.get_frozen_credentials())

    def sign(self, method: str, name: str, expires: int, create_only: bool = False) -> Request:
        headers = {"If-None-Match": "*"} if create_only else {}
        request = AWSRequest(method=method, url=f"{self.base_url}/{quote(name)}", headers=dict(headers))
        S3SigV4QueryAuth(self.credentials, "s3", self.region, expires=expires).add_auth(request)
        return [method, request.prepare().url, headers]
