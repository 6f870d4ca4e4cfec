"""Run storage as a Pulumi resource: an fsspec prefix holding one run's bundle and result.

Used where the "bucket" is a directory or a prefix of an existing bucket
(process, docker, kubernetes with pool storage). Creating it uploads the
staged bundle; deleting it removes the whole prefix, result and logs included,
so ``pulumi destroy`` leaves no run data behind. A call's ``include_files``
archive, when it has one, is uploaded next to the bundle. For a job on this
machine it also writes the job's secrets file (``job_secrets``), from inputs
that are Pulumi secrets and are never echoed into the resource's outputs.
Targets that provision a real per-run bucket use their provider's bucket and
object resources instead.
"""

from __future__ import annotations

import os
from typing import Any

import fsspec
import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider

from toolkit.bundles import FILES_NAME
from toolkit.infra import job_secrets
from toolkit.runner import BUNDLE_NAME


def _is_local(url: str) -> bool:
    return fsspec.core.split_protocol(url)[0] in (None, "file", "local")


class _RunStorageProvider(ResourceProvider):
    """Creates the prefix (0700 when local), uploads the bundle, writes the secrets file; deletes it all on destroy."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        url, options = props["url"], props.get("options") or {}
        fs, root = fsspec.core.url_to_fs(url, **options)
        try:
            if _is_local(url):
                os.makedirs(root, mode=0o700, exist_ok=True)
                os.chmod(root, int(props.get("mode") or "700", 8))
            else:
                fs.makedirs(root, exist_ok=True)
            fs.put_file(props["bundle_path"], f"{root}/{BUNDLE_NAME}")
            if props.get("files_path"):
                fs.put_file(props["files_path"], f"{root}/{FILES_NAME}")
            if props.get("secrets"):
                job_secrets.write(root, props["secrets"], props.get("secrets_owner"))
        except BaseException:
            # A failed create is not recorded in state, so destroy would never remove it.
            if fs.exists(root):
                fs.rm(root, recursive=True)
            raise
        return CreateResult(id_=url, outs={key: value for key, value in props.items() if key != "secrets"})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        fs, root = fsspec.core.url_to_fs(props["url"], **(props.get("options") or {}))
        if fs.exists(root):
            fs.rm(root, recursive=True)


class RunStorage(Resource, module="toolkit", name="RunStorage"):
    """The run's storage prefix, holding the uploaded bundle."""

    url: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        url: str,
        bundle_path: str,
        options: dict[str, Any] | None = None,
        mode: str = "700",
        files_path: str | None = None,
        secrets: dict[str, pulumi.Output[str]] | None = None,
        secrets_owner: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``secrets`` (local storage only): values for the job's secrets file, each a Pulumi
        secret; ``secrets_owner`` ('uid[:gid]') the job's user the file is handed to."""
        if secrets and not _is_local(url):
            raise ValueError(f"a secrets file needs local run storage, not {url!r}")
        props = {
            "url": url,
            "bundle_path": bundle_path,
            "options": options or {},
            "mode": mode,
            "secrets": secrets or {},
            "secrets_owner": secrets_owner,
        }
        if files_path:
            props["files_path"] = files_path
        super().__init__(_RunStorageProvider(), name, props, opts)
