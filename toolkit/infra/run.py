"""What one run is, as a target's program sees it: the rendered job, a map's fan-out, the run's context.

Shared by the contract (``base``), the run flow (``flow``) and the toolkit's own
resources (``resources``), so none of them imports another for its models.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

from toolkit.bundles import RUN_KEY_ENV, STORAGE_OPTIONS_ENV
from toolkit.infra.image_registry import ImageRegistry
from toolkit.storage_urls import URLS_ENV

RUN_LABEL = "toolkit-run"
"""The label (or tag) naming its run on every resource a run creates, the run id its value."""


class JobConfiguration(BaseModel):
    """Base of every rendered job-configuration model, with the checks every target needs.

    ``env_fields`` name the job's environment mappings (``env`` and, where a target
    has them, references to existing secrets): none may set a variable the toolkit
    sets (``reserved_env``), and no name may be in two of them. ``runner_path`` is
    where the job resource lists its containers; the runner's comes first, and its
    image (``runner_image``) is what a call's environment builds on.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    env_fields: ClassVar[tuple[str, ...]] = ("env",)
    reserved_env: ClassVar[tuple[str, ...]] = (RUN_KEY_ENV, STORAGE_OPTIONS_ENV, URLS_ENV)
    runner_path: ClassVar[tuple[str, ...]] = ()
    runner_image_key: ClassVar[str] = "image"
    env_conflict: ClassVar[str] = "{names} are set in both {fields}; keep one"
    """The error for names given in two ``env_fields`` (``fields``: them, joined by 'and')."""

    @model_validator(mode="after")
    def _check_env_and_runner(self) -> JobConfiguration:
        if self.runner_path:
            runners = functools.reduce(lambda node, key: node.get(key, {}) if isinstance(node, dict) else {},
                                       self.runner_path[1:], getattr(self, self.runner_path[0]))
            if not isinstance(runners, list) or not runners or not isinstance(runners[0], dict):
                raise ValueError(f"{'.'.join(self.runner_path)} must list the runner container first")
        names = [name for field in self.env_fields for name in getattr(self, field)]
        for name in names:
            if name in self.reserved_env:
                raise ValueError(f"environment variable {name!r} is set by the toolkit; use another name")
        both = sorted({name for name in names if names.count(name) > 1})
        if both:
            raise ValueError(self.env_conflict.format(names=both, fields=" and ".join(self.env_fields)))
        return self

    @property
    def runner(self) -> dict[str, Any]:
        """The runner's container as the job resource describes it."""
        node: Any = getattr(self, self.runner_path[0])
        for key in self.runner_path[1:]:
            node = node[key]
        return node[0]

    @property
    def runner_image(self) -> str | None:
        """The image the runner starts from (None: not set, or a job without containers)."""
        if not self.runner_path:
            return getattr(self, self.runner_image_key, None)
        return self.runner.get(self.runner_image_key)


@dataclass(frozen=True)
class FanOut:
    """A map (``fn.map``): many items of one function in one run, as its job resource needs it.

    The run's bundle holds the function; each item's arguments are their own
    signed bundle under ``items/`` in run storage (``toolkit.fanout``).
    """

    count: int
    """Items in the map (at least one)."""
    parallelism: int
    """At most this many items run at once (1 <= parallelism <= count)."""
    items_path: Path
    """The staged item bundles, a local directory the program uploads as the run's ``items/``."""


@dataclass(frozen=True)
class RunContext:
    """Everything a target's program and watcher know about one run."""

    run_id: str
    pool_name: str
    function_name: str
    job: JobConfiguration
    storage_url: str
    """fsspec URL of this run's storage prefix: bundle and result live under it."""
    storage_options: dict[str, Any]
    bundle_path: Path
    """The signed bundle, staged locally; the program uploads it into run storage."""
    run_key: str = field(repr=False)
    """Per-run signing key; programs must pass it on only as ``pulumi.Output.secret``."""
    shared_storage: bool = False
    """True when ``storage_url`` is a prefix of a pool's existing bucket (nothing to create)."""
    image: str | None = None
    """The call's environment image (``toolkit.environments``), replacing the job's ``image``; None: as is."""
    python: str | None = None
    """The call's environment interpreter (process target), replacing the job's; None: as is."""
    files_path: Path | None = None
    """The signed bundle's ``include_files`` archive, staged locally; uploaded next to the bundle."""
    fanout: FanOut | None = None
    """Set for a map: the job resource runs ``fanout.count`` items, ``fanout.parallelism`` at a time."""
    attempt: int = 1
    """Which attempt of the call this program runs (``toolkit.retries``): targets the engine retries
    give their job resource ``replacement_trigger=attempt``, so a new attempt replaces only the job."""
    image_registry: ImageRegistry | None = None
    """The pool's registry when ``image`` was pushed there: the job must be allowed to pull from it."""
    timeout: int | None = None
    """The ``timeout`` job variable: how long an attempt's job may run (and its signed requests must last)."""

    @property
    def table_path(self) -> Path:
        """Where a map's sealed table of signed requests (``toolkit.presign``) is staged, next to the bundle."""
        return self.bundle_path.with_name(f"{self.run_id}.urls.tkb")

    @property
    def labels(self) -> dict[str, str]:
        """Labels/tags put on every resource, so leaked resources can be traced to a run."""
        return {RUN_LABEL: self.run_id, "toolkit-pool": self.pool_name}


def runner_command(
    storage_url: str,
    python: str = "python3",
    secrets_file: str | None = None,
    fanout: FanOut | None = None,
    index_env: str | None = None,
    worker: str | None = None,
) -> list[str]:
    """The command every job runs: fetch, verify and call the bundle, write the result.

    ``secrets_file``: where a local job finds its run key and secret env values
    (``toolkit.targets.local``) instead of its environment. For a map (``fanout``), the job
    runs the item at the index in the variable ``index_env``, or without it claims
    items until none is left; a named ``worker`` writes its name into its claims and
    stays until every item has a result, to take items released for a retry.
    """
    command = [python, "-u", "-m", "toolkit.runner", "--storage", storage_url]
    if secrets_file:
        command += ["--secrets", secrets_file]
    if fanout is not None:
        command += ["--items", str(fanout.count)]
        if index_env:
            command += ["--index-env", index_env]
        if worker is not None:
            command += ["--worker", worker, "--await-items"]
    return command
