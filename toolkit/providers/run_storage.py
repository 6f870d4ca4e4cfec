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
from toolkit.providers.local_process import stop_recorded


def local_path(url: str) -> str | None:
    """The path of a local URL ('/x', 'file:///x', 'local:///x'), None for remote storage."""
    scheme, _, rest = url.partition("://")
    if not rest:
        return url
    return rest if scheme in ("file", "local") else None


def _outputs(props: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in props.items() if key != "secrets"}


def _copy_items(props: dict[str, Any], path: str) -> None:
    """A map's item bundles into ``items/``, and the directories its jobs write (results, claims)
    with the run directory's mode, so a container's unprivileged user can write there."""
    mode = int(props.get("mode") or "700", 8)
    for name in [props["items_dir"], *props["work_dirs"]]:
        os.makedirs(os.path.join(path, name))
        os.chmod(os.path.join(path, name), mode)
    source, items = props["items_path"], os.path.join(path, props["items_dir"])
    for name in os.listdir(source):  # copyfile: readable by the job's user, unlike the 0600 staged copies
        shutil.copyfile(os.path.join(source, name), os.path.join(items, name))


def _put_items(fs: Any, source: str, destination: str) -> None:
    """Every staged item bundle to ``destination/<name>`` in object storage, in one batched call."""
    names = sorted(os.listdir(source))
    fs.put([os.path.join(source, n) for n in names], [f"{destination}/{n}" for n in names])


class RunItemsProvider(ResourceProvider):
    """Uploads a map's items into a bucket the stack made; removes just them on delete."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        import fsspec

        fs, root = fsspec.core.url_to_fs(props["url"], **(props.get("options") or {}))
        _put_items(fs, props["items_path"], f"{root}/{props['items_dir']}")
        return CreateResult(id_=f"{props['url']}/{props['items_dir']}", outs=props)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        import fsspec

        fs, root = fsspec.core.url_to_fs(props["url"], **(props.get("options") or {}))
        try:
            fs.rm(f"{root}/{props['items_dir']}", recursive=True)
        except FileNotFoundError:
            pass  # the bucket went first


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
            for secrets_name in news.get("secrets_names") or [secrets_file.SECRETS_NAME]:  # one per map worker
                try:
                    os.unlink(os.path.join(path, secrets_name))  # a job killed before it read it
                except FileNotFoundError:
                    pass
                secrets_file.write(path, news["secrets"], news.get("secrets_owner"), secrets_name)
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
                if props.get("items_path"):
                    _copy_items(props, path)
                if props.get("secrets"):
                    for secrets_name in props.get("secrets_names") or [secrets_file.SECRETS_NAME]:
                        secrets_file.write(path, props["secrets"], props.get("secrets_owner"), secrets_name)
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
            for staged, named in (("files_path", "files_name"), ("table_path", "table_name")):
                if props.get(staged):
                    fs.put_file(props[staged], f"{root}/{props[named]}")
            if props.get("items_path"):
                _put_items(fs, props["items_path"], f"{root}/{props['items_dir']}")
        except BaseException:
            if fs.exists(root):
                fs.rm(root, recursive=True)
            raise
        return CreateResult(id_=url, outs=_outputs(props))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        path = local_path(props["url"])
        if path is not None:
            if os.path.exists(path):
                stop_recorded(path)
                shutil.rmtree(path)
            return
        import fsspec

        fs, root = fsspec.core.url_to_fs(props["url"], **(props.get("options") or {}))
        if fs.exists(root):
            fs.rm(root, recursive=True)
