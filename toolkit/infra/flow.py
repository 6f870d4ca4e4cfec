"""The run program of every target, written once; a target supplies only what differs, as hooks.

``RunFlow.program`` is the Pulumi program of every run stack (as SkyPilot's
``provision/provisioner.py`` owns the flow and each ``provision/<cloud>/``
implements a fixed set of functions):

1. check the job (what a run cannot go without, again after customizations);
2. storage: the run's own bucket, or the pool's shared prefix, decided here once;
3. the run's secrets (its signing key, the ``toolkit.secret`` env values and, where
   the target takes them, the storage requests signed for its job) as the
   platform's secret references;
4. pull access to the pool's image registry, when the environment image is there;
5. the environment image, in place of the job's own;
6. the map's form: one task per item (indexed) or workers claiming items;
7. the job resource, which a new attempt (``toolkit.retries``) replaces;
8. the exports its watcher is built from.

What differs per target: its ``Platform`` (a provider family's primitives: the
job's identity, a bucket of its own, secret references, pull grants; shared by
AWS, Google and Azure targets), its job resource (``job``) and its watcher.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pulumi

from toolkit.bundles import BUNDLE_NAME, FILES_NAME, RUN_KEY_ENV
from toolkit.infra.image_registry import ImageRegistry
from toolkit.infra.resources import RunStorage, item_uploads
from toolkit.infra.run import FanOut, JobConfiguration, RunContext, runner_command
from toolkit.presign import SignedRun, sign_run
from toolkit.secretvalues import Secret
from toolkit.storage_urls import TABLE_NAME, URLS_ENV


@dataclass
class Bucket:
    """Storage a platform makes for one run (step 2), and how objects get into it."""

    resource: pulumi.Resource
    """The bucket (or container) itself: a map's items are uploaded once it exists."""
    upload: Callable[[str, str, Path], pulumi.Resource]
    """``upload(logical name, key, local path)``: one object of the run's, as the platform's resource."""
    guards: list[pulumi.Resource] = field(default_factory=list)
    """What else the bucket needs before the job may use it (public access blocks, grants)."""
    items_options: pulumi.Input[dict[str, Any]] | None = None
    """The fsspec options a map's items are uploaded with (None: the pool's)."""
    signing_options: pulumi.Input[dict[str, Any]] | None = None
    """fsspec options that can sign the run's requests once the bucket exists (a storage account's key), for a
    single call whose pool's options cannot (``signed_requests``)."""


@dataclass
class SecretReferences:
    """Step 3's outcome: each secret env name -> how the job resource refers to its value."""

    references: dict[str, Any] = field(default_factory=dict)
    needs: list[pulumi.Resource] = field(default_factory=list)


@dataclass
class PullAccess:
    """Step 4's outcome: what the job resource names to pull its image with, and what grants it."""

    credentials: Any = None
    needs: list[pulumi.Resource] = field(default_factory=list)


class Platform(abc.ABC):
    """A provider family's primitives, bound to one run. Defaults: nothing to make."""

    storage_name: ClassVar[str] = "run-storage"
    """Logical name of the run's ``RunStorage`` (a prefix the client writes through fsspec)."""

    def identity(self) -> Any:
        """Who the job runs as (a role, a service account ...), made before anything it is granted."""
        return None

    def bucket(self, identity: Any) -> Bucket | None:
        """The run's own storage, with ``identity``'s access to it; None: a prefix (``RunStorage``)."""
        return None

    def prefix_access(self, identity: Any) -> list[pulumi.Resource]:
        """``identity``'s access to exactly the run's prefix of a pool's shared storage."""
        return []

    def job_needs(self) -> list[pulumi.Resource]:
        """What else the platform made (its identity's roles and bindings ...) that the job waits for."""
        return []

    def run_storage_settings(self) -> dict[str, Any]:
        """What else ``RunStorage`` takes on this platform (a local job's secrets file, its mode ...)."""
        return {}

    @abc.abstractmethod
    def secret_references(self, values: Mapping[str, pulumi.Input[str]], identity: Any) -> SecretReferences:
        """Step 3: ``values`` (name -> plain value, only ever passed on as Pulumi secrets) as the platform's
        secrets that ``identity`` alone may read, and how the job refers to each."""

    def pull_access(self, registry: ImageRegistry, identity: Any) -> PullAccess:
        """Step 4: the job's permission to pull from ``registry`` (the pool's, holding the call's image)."""
        return PullAccess()


@dataclass(frozen=True)
class MapForm:
    """Step 6: how the job resource runs the call (``fanout`` None) or a map's items."""

    fanout: FanOut | None
    indexed: bool
    """One task per item, its index in ``index_env`` (else: workers that claim items)."""
    index_env: str | None = None

    @property
    def workers(self) -> int:
        """Jobs the resource starts: a map's ``parallelism`` claiming workers, else one."""
        return self.fanout.parallelism if self.fanout is not None and not self.indexed else 1

    def command(
        self,
        storage_url: str,
        python: str = "python3",
        secrets_file: str | None = None,
        worker: int | str | None = None,
        stripe: bool = False,
    ) -> list[str]:
        """The runner's command; a named ``worker`` stays until every item has a result (to take retried ones).

        ``worker`` may be a reference the platform expands (Kubernetes' ``$(JOB_COMPLETION_INDEX)``);
        ``stripe``: it is the worker's number, and each worker claims its own stripe of the items
        first, so workers that start together do not all race for the first items.
        """
        named = None if worker is None or self.fanout is None else str(worker)
        command = runner_command(
            storage_url, python, secrets_file, self.fanout, self.index_env if self.indexed else None, named
        )
        if stripe and named is not None and self.fanout is not None:
            command += ["--stripe", f"{named}/{self.fanout.parallelism}"]
        return command


@dataclass
class JobParts:
    """What steps 1-6 made, for the target's job resource (step 7)."""

    run: RunContext
    platform: Platform
    identity: Any
    storage: list[pulumi.Resource]
    secrets: dict[str, Any]
    pull: Any
    image: str | None
    """Step 5: the call's environment image, pulled by digest; None: the job's own image."""
    form: MapForm
    needs: list[pulumi.Resource]
    trigger: int | None
    """``replacement_trigger`` of the job resource (the attempt), unless the platform retries natively."""

    def options(self, *depends_on: pulumi.Resource, **more: Any) -> pulumi.ResourceOptions:
        """The job resource's options: after all it needs; a new attempt replaces exactly it."""
        trigger = {} if self.trigger is None else {"replacement_trigger": self.trigger}
        return pulumi.ResourceOptions(depends_on=[*self.needs, *depends_on], **trigger, **more)


def run_secrets(run: RunContext, signed: pulumi.Input[str] | None = None) -> dict[str, pulumi.Input[str]]:
    """The values a job must receive as secrets: the run's signing key, every ``toolkit.secret`` env value and
    the requests ``signed`` for it (``SignedRun.env``: each URL is a credential for its object)."""
    env: Mapping[str, Any] = getattr(run.job, "env", {})
    values = {RUN_KEY_ENV: run.run_key, **{name: value.reveal() for name, value in env.items() if isinstance(value, Secret)}}
    return {**values, URLS_ENV: signed} if signed is not None else values


def signed_requests(run: RunContext, indexed: bool, options: Mapping[str, Any] | None = None) -> SignedRun | None:
    """Every request the run's job makes to its storage, signed with the caller's credentials for as long as
    an attempt may run (``toolkit.presign``), so the job imports no storage driver; None where signing does not
    fit (local storage, credentials that cannot sign here ...): the job reaches storage through fsspec then.

    Signed at each ``up``: one per attempt, whose job is new. A map's table of per-item requests is staged at
    ``run.table_path``, uploaded next to the bundle. ``options``: more fsspec options to sign with."""
    fanout = run.fanout
    signed = sign_run(
        run.storage_url,
        {**run.storage_options, **(options or {})},
        run.run_key,
        files=run.files_path is not None,
        items=fanout.count if fanout is not None else None,
        claims=not indexed,
        timeout=run.timeout,
    )
    if signed is not None and signed.table is not None:
        fd = os.open(run.table_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(signed.table)
    return signed


class RunFlow(abc.ABC):
    """The template of every target's Pulumi program; ``toolkit.infra.base.Target`` adds the rest."""

    native_retries: ClassVar[str | None] = None
    map_form: ClassVar[Literal["indexed", "workers"]] = "workers"
    """How a map runs: an indexed job (one task per item) or workers that claim items from run storage."""
    index_env: ClassVar[str | None] = None
    """With ``map_form = "indexed"``: the variable the platform puts each task's index in."""
    signed_storage: ClassVar[bool] = False
    """The job gets its storage requests signed (``signed_requests``), as a secret, where the pool's storage
    and the caller's credentials allow it."""

    def retried_natively(self, fanout: FanOut | None) -> bool:
        """True when the platform's controller re-runs this run's job (``native_retries``). Never for a map of
        claiming workers: a dead worker is not replaced, the engine gives its items back (``toolkit.fanout``)."""
        return self.native_retries is not None and (fanout is None or self.map_form == "indexed")

    @abc.abstractmethod
    def check_job(self, job: JobConfiguration, pool_name: str) -> None:
        """Step 1: refuse a rendered job the run cannot go without (``ConfigError`` saying what to set)."""

    @abc.abstractmethod
    def platform(self, run: RunContext) -> Platform:
        """The primitives of this target's provider family, for ``run`` (its provider, project ...)."""

    @abc.abstractmethod
    def job(self, run: RunContext, parts: JobParts) -> Mapping[str, Any]:
        """Step 7: the job resource (``parts.options()`` for its options); returns its exports (step 8)."""

    def program(self, run: RunContext) -> None:
        """The Pulumi program of ``run``'s stack: steps 1-8."""
        self.check_job(run.job, run.pool_name)
        platform = self.platform(run)
        identity = platform.identity()
        signed = signed_requests(run, self.map_form == "indexed") if self.signed_storage else None
        storage, bucket = _storage(platform, run, identity, signed is not None and signed.table is not None)
        urls: pulumi.Input[str] | None = signed.env if signed is not None else None
        if urls is None and self.signed_storage and run.fanout is None and bucket and bucket.signing_options:
            urls = pulumi.Output.from_input(bucket.signing_options).apply(lambda more: _signed_env(run, more))
        secrets = platform.secret_references(run_secrets(run, urls), identity)
        pull = platform.pull_access(run.image_registry, identity) if run.image_registry else PullAccess()
        parts = JobParts(
            run=run,
            platform=platform,
            identity=identity,
            storage=storage,
            secrets=secrets.references,
            pull=pull.credentials,
            image=run.image,
            form=MapForm(run.fanout, self.map_form == "indexed", self.index_env),
            needs=[*storage, *secrets.needs, *pull.needs, *platform.job_needs()],
            trigger=None if self.retried_natively(run.fanout) else run.attempt,
        )
        for name, value in self.job(run, parts).items():
            pulumi.export(name, value)


def _signed_env(run: RunContext, options: Mapping[str, Any]) -> str:
    """A single call's ``SignedRun.env``, signed with ``options`` too; empty (the job keeps fsspec) if none fits."""
    signed = signed_requests(run, False, options)
    return signed.env if signed is not None else ""


def _storage(
    platform: Platform, run: RunContext, identity: Any, table: bool
) -> tuple[list[pulumi.Resource], Bucket | None]:
    """Step 2: the bundle, the files archive, a map's items (and with ``table``, its signed requests) in the
    run's storage, which is a bucket of its own or, for a pool in ``shared-prefix`` mode (and where the
    platform makes none), a prefix. Returns what was made, and the bucket."""
    table_path = run.table_path if table else None
    bucket = None if run.shared_storage else platform.bucket(identity)
    if bucket is None:
        settings = {**platform.run_storage_settings(), **({"table_path": str(table_path)} if table_path else {})}
        storage = RunStorage.of_run(platform.storage_name, run, **settings)
        return [storage, *(platform.prefix_access(identity) if run.shared_storage else [])], None
    staged = (
        ("bundle", BUNDLE_NAME, run.bundle_path),
        ("files", FILES_NAME, run.files_path),
        ("urls", TABLE_NAME, table_path),
    )
    uploads = [bucket.upload(logical, key, path) for logical, key, path in staged if path is not None]
    return [*uploads, *item_uploads(run, bucket.resource, bucket.items_options), *bucket.guards], bucket
