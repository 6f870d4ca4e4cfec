"""The toolkit's own records inside a Pulumi state backend, through fsspec.

Slot markers and the run history live next to Pulumi's ``.pulumi/`` directory
under ``.toolkit/`` in the same backend: every client of a pool already shares
that backend and can write to it, and it outlives the run stacks (which are
removed after destroy). Backend URLs are gocloud URLs: their query options
(``?endpoint=...&region=...``) become the fsspec driver's options here.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import fsspec

from toolkit.errors import ConfigError

ROOT = ".toolkit"


def _storage_options(protocol: str, params: dict[str, str]) -> dict[str, Any]:
    if protocol == "s3":
        client: dict[str, str] = {}
        if params.get("endpoint"):
            endpoint = params["endpoint"]
            client["endpoint_url"] = endpoint if "://" in endpoint else f"https://{endpoint}"
        if params.get("region"):
            client["region_name"] = params["region"]
        options: dict[str, Any] = {"client_kwargs": client} if client else {}
        if params.get("profile"):
            options["profile"] = params["profile"]
        return options
    if protocol == "az" and params.get("storage_account"):
        return {"account_name": params["storage_account"]}
    return {}


class BackendStore:
    """JSON documents under ``<backend>/.toolkit/``; listings always read the backend, never a cache."""

    def __init__(self, backend_url: str) -> None:
        base, _, query = backend_url.partition("?")
        protocol, _, location = base.partition("://")
        if not location:
            raise ConfigError(f"backend URL {backend_url!r} has no scheme; use file://, s3://, gs:// or azblob://")
        protocol = {"azblob": "az", "file": "file"}.get(protocol, protocol)
        if protocol in ("https", "http"):
            raise ConfigError(
                f"backend {backend_url!r} is a Pulumi Cloud service: the toolkit keeps slot markers and run "
                "history in a self-managed backend (file://, s3://, gs://, azblob://). Use one of those for this pool"
            )
        params = {key: values[-1] for key, values in parse_qs(query).items()}
        self.url = backend_url
        self.fs, root = fsspec.core.url_to_fs(f"{protocol}://{location}", **_storage_options(protocol, params))
        self.root = f"{root.rstrip('/')}/{ROOT}"

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def write(self, relative: str, document: dict[str, Any]) -> None:
        path = self.path(relative)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(path, json.dumps(document).encode())

    def remove(self, relative: str) -> None:
        try:
            self.fs.rm_file(self.path(relative))
        except FileNotFoundError:
            pass

    def remove_tree(self, relative: str) -> None:
        try:
            self.fs.rm(self.path(relative), recursive=True)
        except FileNotFoundError:
            pass

    def names(self, relative: str) -> list[str]:
        """Entry names directly under ``relative`` ([] if it does not exist)."""
        directory = self.path(relative)
        self.fs.invalidate_cache(directory)
        try:
            entries = self.fs.ls(directory, detail=False)
        except FileNotFoundError:
            return []
        return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries)

    def read_all(self, relative: str) -> list[dict[str, Any]]:
        """Every JSON document directly under ``relative``; one removed or half-written meanwhile is skipped."""
        documents = []
        for name in self.names(relative):
            if not name.endswith(".json"):
                continue
            try:
                documents.append(json.loads(self.fs.cat_file(self.path(relative, name))))
            except (FileNotFoundError, ValueError):
                continue
        return documents
