"""The contract every target implements.

A target supplies only what differs between targets: its job-variables model
(which *is* the JSON schema of its default template) and its rendered
job-configuration model, its platform's primitives and its job resource (the
hooks of the run flow, ``toolkit.infra.flow``, which writes the Pulumi program
once for all), and its watcher with its status mapping. Teardown is always
``pulumi destroy`` of the run stack, so cancelling a job is deleting its
resources; no target has a separate stop path.

Abstract methods make an incomplete target fail when its class is created,
not in the middle of a run.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Collection, Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel

from toolkit.errors import ConfigError
from toolkit.infra.flow import RunFlow
from toolkit.infra.image_registry import ImageRegistry
from toolkit.infra.run import JobConfiguration, RunContext
from toolkit.infra.synonyms import Synonym
from toolkit.infra.variables import JobVariables
from toolkit.infra.watch import JobWatcher, WorkersWatcher


class Target(RunFlow):
    """One kind of infrastructure: a module or folder of ``toolkit.targets`` defines one subclass."""

    name: ClassVar[str]
    extra: ClassVar[str | None] = None
    """pip extra that provides this target's SDKs (None: part of the core install)."""
    variables_model: ClassVar[type[JobVariables]]
    job_model: ClassVar[type[JobConfiguration]]
    customization_root: ClassVar[str] = ""
    """JSON pointer in the job configuration that ``customizations`` patches apply to."""
    unsupported: ClassVar[dict[str, str]] = {}
    """Job variables this target cannot honour, with the reason shown to the user."""
    synonyms: ClassVar[Mapping[str, Synonym]] = {}
    """Other names for this target's job variables (Prefect's, habitual ones) with their units, or
    why nothing here corresponds: the one table behind "did you mean", ``toolkit.prefect`` and
    ``toolkit pool import`` (see ``toolkit.infra.synonyms``)."""
    required: ClassVar[tuple[str, ...]] = ()
    """Job variables a run cannot go without. Their schema defaults stay empty so a pool's
    template renders before a platform team fills them in (e.g. an image from its registry)."""
    environment: ClassVar[Literal["image", "interpreter"] | None] = None
    """How this target receives a call's environment (packages, include_files): as an image built
    FROM ``environment_base(job)``, or as an interpreter; None: the target takes no environment."""
    images_from_registry: ClassVar[bool] = False
    """True when jobs do not run on the caller's Docker engine: an environment image reaches them pushed
    to the pool's ``image_registry`` and pulled by digest (False: built on the engine that runs it)."""
    storage_schemes: ClassVar[tuple[str, ...]] = ()
    """fsspec protocols a pool's ``storage.url`` may use, because its jobs can reach them
    (empty: any, e.g. a local path for local targets)."""
    native_retries: ClassVar[str | None] = None  # (declared by RunFlow, described here)
    """This target's own job variable for re-running a job that ended without a result, which its
    job controller honours (a Kubernetes Job's ``backoff_limit``): ``retries`` is carried into it and
    the engine retries nothing itself. None: the engine re-runs the job resource (``toolkit.retries``)."""
    plugin_packages: ClassVar[tuple[str, ...]] = ()
    """Pulumi provider SDKs the program uses (``"pulumi_docker"``); each one's ``pulumi-plugin.json``
    names the resource plugin and version the engine needs. Runs check them before any stack exists."""

    max_map_parallelism: ClassVar[int | None] = None
    """The most map items this target's job resource can run at once (None: no limit of its own)."""

    def default_map_parallelism(self, count: int) -> int:
        """``max_parallel=None``: every item at once (the platform queues what it cannot place)."""
        return count

    def map_parallelism(self, count: int, max_parallel: int | None, pool_name: str) -> int:
        """How many of a map's ``count`` items run at once: ``max_parallel`` within the target's limit."""
        limit = self.max_map_parallelism
        if limit and max_parallel and max_parallel > limit:
            raise ConfigError(
                f"pool {pool_name!r} ({self.name}) runs at most {limit} map items at once; "
                f"max_parallel={max_parallel} is more. Pass max_parallel={limit} or less"
            )
        wanted = max_parallel or self.default_map_parallelism(count)
        return max(1, min(wanted, count, limit or wanted))

    @classmethod
    @abc.abstractmethod
    def default_job_configuration(cls) -> dict[str, Any]:
        """The job configuration of the default template, with ``{{ variable }}`` placeholders."""

    @classmethod
    def default_template(cls) -> dict[str, Any]:
        """``{"job_configuration": ..., "variables": <schema of variables_model>}``."""
        return {
            "job_configuration": copy.deepcopy(cls.default_job_configuration()),
            "variables": variables_schema(cls.variables_model),
        }

    @classmethod
    def check_capabilities(cls, variables: dict[str, Any], pool_name: str) -> None:
        """Turn a missing required variable, or a request for something this target cannot do,
        into a clear error."""
        cls.require(variables, pool_name, cls.required)
        for name, reason in cls.unsupported.items():
            if variables.get(name) not in (None, False, 0, [], {}):
                raise ConfigError(f"pool {pool_name!r} ({cls.name}) cannot honour {name!r}: {reason}")

    @classmethod
    def require(cls, variables: dict[str, Any], pool_name: str, names: tuple[str, ...]) -> None:
        """Raise ``ConfigError`` for the first of ``names`` left unset, saying what it must be."""
        for name in names:
            if variables.get(name) in (None, ""):
                what = cls.variables_model.model_fields[name].description or ""
                raise ConfigError(
                    f"pool {pool_name!r} ({cls.name}) needs the job variable {name!r}: {what.rstrip('.')}. "
                    f"Set it in the pool's template or pass {name}=... to the decorator or submit()"
                )

    def parse_job(self, config: dict[str, Any], pool_name: str) -> JobConfiguration:
        """Validate a rendered job configuration against ``job_model``."""
        from pydantic import ValidationError

        try:
            return self.job_model.model_validate(config)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigError(
                f"the job rendered for pool {pool_name!r} ({self.name}) is invalid: {problems}. "
                "Check the pool's base job template and your job variables"
            ) from None

    def preflight(self, job: JobConfiguration, pool_name: str) -> None:
        """Checks that need this machine (engine running, image present), before anything is provisioned.

        Raise ``TargetUnavailableError`` or ``ConfigError`` naming the fix. The
        default has nothing to check: a target whose needs are Python packages is
        checked by the registry's import, and cloud credentials by the provider.
        """

    def environment_base(self, job: JobConfiguration) -> str | None:
        """The image (or interpreter; None: the caller's) a call's environment builds on."""
        if self.environment == "image":
            return job.runner_image
        return getattr(job, "python", None) if self.environment == "interpreter" else None

    def check_image_registry(self, registry: ImageRegistry, job: JobConfiguration, pool_name: str) -> None:
        """Refuse, before anything exists, a registry this target's jobs cannot be allowed to pull from."""

    def storage_url(self, run_id: str, pool_storage_url: str | None) -> tuple[str, bool]:
        """Where this run's bundle and result live: ``(url, shared)``.

        With a pool ``storage.url`` in shared-prefix mode the run uses
        ``<url>/<run-id>``; otherwise the target names its per-run storage.
        """
        if pool_storage_url:
            self.check_storage_url(pool_storage_url)
            return f"{pool_storage_url.rstrip('/')}/{run_id}", True
        return self.per_run_storage_url(run_id), False

    @classmethod
    def check_storage_url(cls, url: str) -> None:
        """Refuse pool storage this target's jobs cannot reach (checked at pool creation too)."""
        scheme = url.split("://", 1)[0] if "://" in url else "file"
        if cls.storage_schemes and scheme not in cls.storage_schemes:
            reachable = ", ".join(f"{s}://" for s in cls.storage_schemes)
            raise ConfigError(
                f"storage {url!r} cannot be reached by {cls.name} jobs; use object storage they can "
                f"reach ({reachable}), e.g. `--storage {cls.storage_schemes[0]}://bucket/prefix`"
            )

    @abc.abstractmethod
    def per_run_storage_url(self, run_id: str) -> str:
        """URL of the storage the run stack provisions for ``run_id``."""

    def check_job(self, job: JobConfiguration, pool_name: str) -> None:
        """Step 1 of the run flow: the ``required`` variables, again as the rendered job holds them
        (the pool's ``customizations`` may have dropped them)."""
        values = {name: job.runner_image if name == "image" else getattr(job, name, None) for name in self.required}
        self.require(values, pool_name, self.required)

    def watcher(self, run: RunContext, outputs: dict[str, Any]) -> JobWatcher:
        """The watcher of the job the program created, from the stack's outputs: the target's own, or
        for a map of several workers one over all of them (``WorkersWatcher``)."""
        found = self.watch(run, outputs)
        return WorkersWatcher(found) if isinstance(found, list) else found

    @abc.abstractmethod
    def watch(self, run: RunContext, outputs: dict[str, Any]) -> JobWatcher | list[JobWatcher]:
        """The target's watcher (its status mapping) of the job ``job`` created; a list: one per map worker."""

    def stray_jobs(self, run_ids: Collection[str], remove: bool) -> dict[str, list[str]]:
        """Jobs of ``run_ids`` still on the platform, found by their run's label, by run id; removed when ``remove``.

        ``toolkit gc`` asks for the runs of dead clients whose stacks are gone. A client killed during ``up``
        leaves the engine's provider running on: what it creates after the engine last wrote the state (a map's
        worker containers) is in no stack a destroy could read. Default: none, for a platform this machine
        cannot list without the run's own credentials (the cloud targets); a local engine's target finds them.
        """
        return {}


def placeholders(*names: str) -> dict[str, str]:
    """``{"env": "{{ env }}", ...}``: the flat part of a default job configuration."""
    return {name: "{{ " + name + " }}" for name in names}


def variables_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of a variables model, flattened so templates stay readable."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    schema.setdefault("type", "object")
    schema.pop("additionalProperties", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema
