"""Run storage's provider: create the run's prefix, upload the bundle (and the call's
``include_files`` archive, if any) and, for a job on this machine, its secrets
file; delete the whole prefix.

A local directory (process and docker runs) is handled with the standard
library; fsspec is imported only for remote storage, so the provider plugin of
a local run does not pay for it.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

from toolkit.providers import secrets_file


def local_path(url: str) -> str | None:
    """The path of a local URL ('/x', 'file:///x', 'local:///x'), None for remote storage."""
    scheme, _, rest = url.partition("://")
    if not rest:
        return url
    return rest if scheme in ("file", "local") else None


def _outputs(props: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in props.items() if key != "secrets"}


class RunStorageProvider(ResourceProvider):
    """Creates the prefix (0700 when local), uploads the bundle, writes the secrets file; deletes it all on destroy.

    The secrets are never echoed into the outputs, so state holds them only as the encrypted inputs.
    A new attempt of the run (``attempt`` changes, ``toolkit.retries``) is an update that writes the
    secrets file again, for the fresh job: the runner deleted it once read. The bundle stays.
    """

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        compared = (set(olds) | set(news)) - {"secrets", "__provider"}
        changed = {key for key in compared if olds.get(key) != news.get(key)}
        if changed == {"attempt"}:
            return DiffResult(changes=True, replaces=[], delete_before_replace=False)
        return DiffResult()  # anything else: the engine's own comparison of the inputs, as before

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        path = local_path(news["url"])
        if path is not None and news.get("secrets"):
            try:
                os.unlink(os.path.join(path, secrets_file.SECRETS_NAME))  # a job killed before it read it
            except FileNotFoundError:
                pass
            secrets_file.write(path, news["secrets"], news.get("secrets_owner"))
        return UpdateResult(outs=_outputs(news))

    def create(self, props: dict[str, Any]) -> CreateResult:
        url, options, name = props["url"], props.get("options") or {}, props["bundle_name"]
        path = local_path(url)
        if path is not None:
            try:
                os.makedirs(path, mode=0o700, exist_ok=True)
                os.chmod(path, int(props.get("mode") or "700", 8))
                shutil.copyfile(props["bundle_path"], os.path.join(path, name))
                if props.get("files_path"):
                    shutil.copyfile(props["files_path"], os.path.join(path, props["files_name"]))
                if props.get("secrets"):
                    secrets_file.write(path, props["secrets"], props.get("secrets_owner"))
            except BaseException:
                # A failed create is not recorded in state, so destroy would never remove it.
                shutil.rmtree(path, ignore_errors=True)
                raise
            return CreateResult(id_=url, outs=_outputs(props))
        import fsspec

        fs, root = fsspec.core.url_to_fs(url, **options)
        try:
            fs.makedirs(root, exist_ok=True)
            fs.put_file(props["bundle_path"], f"{root}/{name}")
            if props.get("files_path"):
                fs.put_file(props["files_path"], f"{root}/{props['files_name']}")
        except BaseException:
            if fs.exists(root):
                fs.rm(root, recursive=True)
            raise
        return CreateResult(id_=url, outs=_outputs(props))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        path = local_path(props["url"])
        if path is not None:
            if os.path.exists(path):
                shutil.rmtree(path)
            return
        import fsspec

        fs, root = fsspec.core.url_to_fs(props["url"], **(props.get("options") or {}))
        if fs.exists(root):
            fs.rm(root, recursive=True)
