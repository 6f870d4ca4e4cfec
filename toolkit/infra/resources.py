"""The toolkit's own Pulumi resources that targets share: run storage, a map's items, a local process.

Each is a resource of the toolkit's own provider (type ``toolkit:index:<Name>``,
``toolkit/providers/server.py``), which the client serves to every CLI process
it starts (``toolkit/providers/resident.py``): ``RunStorage`` and ``RunItems`` are
implemented in ``run_storage.py``, ``LocalProcess`` in ``local_process.py``.

Run storage: an fsspec prefix holding one run's bundle and result.

Used where the "bucket" is a directory or a prefix of an existing bucket
(process, docker, kubernetes with pool storage). Creating it uploads the
staged bundle; deleting it removes the whole prefix, result and logs included,
so ``pulumi destroy`` leaves no run data behind. A call's ``include_files``
archive, when it has one, is uploaded next to the bundle (the provider is
``toolkit/providers/run_storage.py``). For a job on this machine it also writes
the job's secrets file (``toolkit.targets.local``), from inputs that are Pulumi secrets
and are never echoed into the resource's outputs. Targets that provision a real per-run
bucket use their provider's bucket and object resources instead.
"""

from __future__ import annotations

from typing import Any

import pulumi

from toolkit.bundles import BUNDLE_NAME, CLAIMS_DIR, FILES_NAME, ITEMS_DIR, RESULTS_DIR
from toolkit.infra.run import RunContext
from toolkit.providers.run_storage import local_path
from toolkit.providers.server import resource_token
from toolkit.storage_urls import TABLE_NAME


class RunStorage(pulumi.CustomResource):
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
        items_path: str | None = None,
        secrets_names: list[str] | None = None,
        attempt: int = 1,
        table_path: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``secrets`` (local storage only): values for the job's secrets file, each a Pulumi
        secret; ``secrets_owner`` ('uid[:gid]') the job's user the file is handed to;
        ``secrets_names``: one file per worker of a map (each reads and deletes its own).
        ``items_path``: a map's staged item bundles, uploaded as ``items/``. ``attempt``
        (``RunContext.attempt``): a new one writes the secrets file again for the job's new attempt.
        ``table_path``: a map's staged table of signed requests (``toolkit.presign``), uploaded next to the bundle."""
        if secrets and local_path(url) is None:
            raise ValueError(f"a secrets file needs local run storage, not {url!r}")
        props = {
            "url": url,
            "bundle_path": bundle_path,
            "options": options or {},
            "mode": mode,
            "bundle_name": BUNDLE_NAME,
            "secrets": secrets or {},
            "secrets_owner": secrets_owner,
            "attempt": attempt,
        }
        if secrets_names:
            props["secrets_names"] = secrets_names
        if items_path:
            props.update(items_path=items_path, items_dir=ITEMS_DIR, work_dirs=[RESULTS_DIR, CLAIMS_DIR])
        if files_path:
            props.update(files_path=files_path, files_name=FILES_NAME)
        if table_path:
            props.update(table_path=table_path, table_name=TABLE_NAME)
        super().__init__(resource_token("RunStorage"), name, props, opts)

    @classmethod
    def of_run(cls, name: str, run: RunContext, **settings: Any) -> RunStorage:
        """The run's storage from what every target takes from ``run``: URL, staged bundle, fsspec
        options, ``include_files`` archive and a map's items; ``settings``: the target's own
        (mode, secrets, attempt, ...)."""
        return cls(
            name,
            url=run.storage_url,
            bundle_path=str(run.bundle_path),
            options=run.storage_options,
            files_path=str(run.files_path) if run.files_path else None,
            items_path=str(run.fanout.items_path) if run.fanout else None,
            **settings,
        )


def item_uploads(
    run: RunContext, bucket: pulumi.Resource, options: pulumi.Input[dict[str, Any]] | None = None
) -> list[pulumi.Resource]:
    """A map's ``RunItems`` into the per-run ``bucket`` (nothing for a single call); ``options``:
    the fsspec options the client uploads with (default: the pool's)."""
    if run.fanout is None:
        return []
    items = RunItems(
        "items",
        url=run.storage_url,
        items_path=str(run.fanout.items_path),
        options=run.storage_options if options is None else options,
        opts=pulumi.ResourceOptions(depends_on=[bucket]),
    )
    return [items]


class RunItems(pulumi.CustomResource):
    """A map's item bundles, uploaded under ``<url>/items/`` of a bucket the run stack made itself
    (``RunStorage`` uploads them where it owns the whole prefix). Deleting removes ``items/`` only:
    the bucket, with the results in it, goes with its own resource."""

    url: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        url: str,
        items_path: str,
        options: pulumi.Input[dict[str, Any]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {"url": url, "items_path": items_path, "items_dir": ITEMS_DIR, "options": options or {}}
        secret = pulumi.ResourceOptions(additional_secret_outputs=["options"])
        super().__init__(resource_token("RunItems"), name, props, pulumi.ResourceOptions.merge(secret, opts))


class LocalProcess(pulumi.CustomResource):
    """A job process on this machine, started from the runner command (the process target's job)."""

    pid: pulumi.Output[int]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(resource_token("LocalProcess"), name, props, opts)
