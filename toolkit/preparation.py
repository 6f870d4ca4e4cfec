"""Turning one call into a ready-to-provision run: steps 1-3 of a submission.

Resolve the pool, render and validate the job, check the target's provider
plugins are here (downloading them when online), plan the call's environment
(packages and include_files, ``toolkit.environments``), bundle and sign the
call. All of it happens before any run stack exists, so every input error
surfaces here with nothing provisioned; ``preview`` and ``submit`` share it.
A submission (not a preview) also builds a missing environment here.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit import settings, templating
from toolkit.backend_store import BackendStore
from toolkit.bundles import dump_call, seal
from toolkit.environments import files, lifecycle
from toolkit.environments.variables import EnvironmentSettings
from toolkit.errors import ConfigError
from toolkit.infra.base import Target
from toolkit.infra.registry import get_target
from toolkit.infra.run import JobConfiguration, RunContext
from toolkit.policy_packs import resolve_packs
from toolkit.pools.registry import PoolRegistry, WorkPool
from toolkit.prefect_flows import flow_job_env
from toolkit.progress import Progress
from toolkit.records import VariableLayer
from toolkit.retries import RetryPolicy
from toolkit.secretvalues import mask, mask_as
from toolkit.toolchain import plugins
from toolkit.toolchain.plugins import PluginStatus


def function_name(fn: Callable[..., Any]) -> str:
    inner = getattr(fn, "fn", fn)  # a Prefect flow keeps the user function in .fn
    return getattr(inner, "__qualname__", None) or getattr(fn, "name", None) or type(fn).__name__


def new_run_id() -> str:
    """12 lowercase hex characters: valid in stack, bucket, container and Kubernetes names."""
    return uuid.uuid4().hex[:12]


def fresh_run_id(_pool: WorkPool) -> str:
    """A run id that names nothing yet, whatever the pool (``prepare``'s default)."""
    return new_run_id()


@dataclass
class PreparedRun:
    """A call, resolved and validated, with its bundle staged; nothing provisioned yet."""

    run_id: str
    pool: WorkPool
    target: Target
    context: RunContext
    variables: dict[str, Any]
    job_config: dict[str, Any]
    backend_url: str
    secrets_provider: str = "passphrase"
    policy_packs: list[str] = field(default_factory=list)
    """Local directories of the pool's policy packs (published ones fetched)."""
    block: bool = True
    """Wait for a slot when the pool is at ``max_concurrent_runs``; False fails at once."""
    plugins: list[PluginStatus] = field(default_factory=list)
    """The provider plugins the target needs, all present (checked before any stack exists)."""
    timings: dict[str, float] = field(default_factory=dict)
    environment: lifecycle.EnvironmentPlan | None = None
    variable_layers: list[VariableLayer] = field(default_factory=list)
    """The job variables layer by layer, secrets masked (the run's record keeps them for the dashboard)."""

    @property
    def function_name(self) -> str:
        return self.context.function_name

    @property
    def timeout(self) -> float | None:
        value = self.variables.get("timeout")
        return float(value) if value else None

    @property
    def stream_output(self) -> bool:
        return bool(self.variables.get("stream_output", True))

    def retry_policy(self) -> RetryPolicy:
        """A fresh ``retries`` policy of the run (or of one of a map's items): its target's controller
        retries it where it can (``Target.retried_natively``), else the engine does."""
        target = self.target
        return RetryPolicy.from_variables(
            self.variables, target.native_retries, target.retried_natively(self.context.fanout)
        )

    def masked_job(self) -> dict[str, Any]:
        return mask(self.job_config)

    def discard_bundle(self) -> None:
        self.context.bundle_path.unlink(missing_ok=True)
        self.context.table_path.unlink(missing_ok=True)
        if self.context.files_path:
            self.context.files_path.unlink(missing_ok=True)
        if self.context.fanout:
            shutil.rmtree(self.context.fanout.items_path, ignore_errors=True)


def variable_layers(
    template: Mapping[str, Any], layers: Sequence[Mapping[str, Any]], variables: Mapping[str, Any]
) -> list[VariableLayer]:
    """Pool defaults, each override layer as given (lowest precedence first), and the effective values;
    every value the effective ones hold as a ``Secret`` (or the schema marks secret) reads ``[secret]``."""
    properties = template.get("variables", {}).get("properties", {})
    defaults = {name: prop["default"] for name, prop in properties.items() if "default" in prop}
    shown = [
        ("pool defaults", defaults),
        *((f"override {number}", dict(layer)) for number, layer in enumerate(layers, 1) if layer),
        ("effective", dict(variables)),
    ]
    secret = {name for name, prop in properties.items() if prop.get("writeOnly") or prop.get("format") == "password"}
    masked = ((name, mask_as(values, dict(variables))) for name, values in shown)
    return [
        VariableLayer(name=name, values={key: "[secret]" if key in secret else value for key, value in values.items()})
        for name, values in masked
    ]


def staging_dir() -> Path:
    """Where bundles wait (0700) until their run stack uploads them."""
    staging = settings.home() / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    os.chmod(staging, 0o700)
    return staging


def _stage_bundle(run_id: str, envelope: bytes) -> Path:
    path = staging_dir() / f"{run_id}.tkb"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(envelope)
    return path


def prepare(
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    pool_name: str,
    layers: Sequence[Mapping[str, Any]],
    expected_type: str | None = None,
    build: bool = True,
    run_id_for: Callable[[WorkPool], str] = fresh_run_id,
) -> PreparedRun:
    """Resolve, render, validate and bundle one call. Raises before any run stack exists.

    ``layers`` are job-variable overrides, lowest precedence first (decorator
    kwargs, ``with_options``, ``submit(job_variables=)``); the pool's defaults
    sit under all of them. ``build=False`` (previews) plans the environment
    without building it. ``run_id_for`` names the run on the resolved pool (a submission's may be the id of
    an engine started ahead, ``toolkit.ahead``).
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    registry = PoolRegistry()
    pool = registry.get(pool_name)
    if expected_type and pool.type != expected_type:
        raise ConfigError(
            f"pool {pool.name!r} runs {pool.type!r} jobs, but {function_name(fn)} is decorated with "
            f"@{expected_type}. Use a {expected_type} pool (`toolkit pool ls`) or the @{pool.type} decorator"
        )
    run_id, name = run_id_for(pool), function_name(fn)
    target, layers, config, variables, job = _rendered_job(fn, pool, layers, run_id, name)
    plugin_statuses = plugins.require(
        target.plugin_packages, f"pool {pool.name!r} ({target.name})", Progress(run_id).say
    )
    policy_packs = resolve_packs(pool.policy_packs, registry.url, pool.name)
    secrets_provider = settings.secrets_provider(pool.secrets_provider)
    backend_url = pool.backend_url or settings.default_backend_url()
    if pool.max_concurrent_runs:
        BackendStore(backend_url)  # slots need a self-managed backend: say so before anything exists
    timings["render"] = time.perf_counter() - started

    shared_url = pool.storage.url if pool.storage.mode == "shared-prefix" else None
    storage_url, shared = target.storage_url(run_id, shared_url)
    call = (fn, tuple(args), dict(kwargs))
    environment, archive, key, bundle_path = _environment_and_bundle(call, pool, target, job, variables, run_id,
                                                                    build, timings)
    context = RunContext(
        run_id=run_id, pool_name=pool.name, function_name=name, job=job,
        storage_url=storage_url, storage_options=dict(pool.storage.options), shared_storage=shared,
        bundle_path=bundle_path, run_key=key, files_path=archive.path if archive else None,
        image=environment.image if environment else None,
        python=environment.python if environment else None,
        image_registry=environment.registry if environment else None, timeout=variables.get("timeout"),
    )
    return PreparedRun(
        run_id=run_id, pool=pool, target=target, context=context, variables=variables, job_config=config,
        backend_url=backend_url, secrets_provider=secrets_provider, policy_packs=policy_packs,
        plugins=plugin_statuses, timings=timings, environment=environment,
        variable_layers=variable_layers(pool.base_job_template, layers, variables),
    )


def _rendered_job(
    fn: Callable[..., Any], pool: WorkPool, layers: Sequence[Mapping[str, Any]], run_id: str, name: str
) -> tuple[Target, Sequence[Mapping[str, Any]], dict[str, Any], dict[str, Any], JobConfiguration]:
    """The pool's template rendered with the call's layers (a Prefect flow's env under them), validated,
    and checked on this machine; ``(target, layers, config, variables, job)``."""
    target = get_target(pool.type)
    flow_env = flow_job_env(fn)
    if flow_env:  # a Prefect flow: its engine runs in the job, reporting where the caller's Prefect does
        layers = [{"env": flow_env}, *layers]
    runtime = {"run_id": run_id, "pool_name": pool.name, "function_name": name}
    config, variables = templating.render_job(target, pool.base_job_template, layers, runtime, pool.name)
    target.check_capabilities(variables, pool.name)
    job = target.parse_job(config, pool.name)
    target.preflight(job, pool.name)
    return target, layers, config, variables, job


def _environment_and_bundle(
    call: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]],
    pool: WorkPool,
    target: Target,
    job: JobConfiguration,
    variables: dict[str, Any],
    run_id: str,
    build: bool,
    timings: dict[str, float],
) -> tuple[lifecycle.EnvironmentPlan | None, files.FilesArchive | None, str, Path]:
    """The call's environment (planned; built unless ``build`` is False), its include_files archive,
    and the signed bundle staged: ``(environment, archive, run key, bundle path)``."""
    fn, args, kwargs = call
    started = time.perf_counter()
    environment, archive = None, None
    if target.environment is not None:
        wanted = EnvironmentSettings.from_variables(variables)
        cwd = Path.cwd()
        base = target.environment_base(job)
        registry = pool.image_registry if target.images_from_registry else None
        environment = lifecycle.plan(fn, args, kwargs, wanted, target.environment, base, pool.name, cwd,
                                     remote=target.images_from_registry, registry=registry,
                                     function=function_name(fn))
        if environment.registry is not None:
            target.check_image_registry(environment.registry, job, pool.name)
        if wanted.include_files:
            selected = files.select(wanted.include_files, cwd, wanted.include_files_max_mb)
            archive = files.pack(selected, staging_dir() / f"{run_id}.files.tgz")
    try:
        if build and environment is not None:
            if environment.status == "build" and environment.kind == "image":  # built (and pushed) by docker
                plugins.require(("pulumi_docker",), f"the environment image of pool {pool.name!r}", Progress(run_id).say)
            environment = lifecycle.ensure(environment)
        timings["environment"] = time.perf_counter() - started

        started = time.perf_counter()
        key = secrets.token_hex(32)
        header = {"files": archive.header} if archive else {}
        envelope = seal("bundle", dump_call(fn, args, kwargs), key, function=function_name(fn), **header)
        bundle_path = _stage_bundle(run_id, envelope)
        timings["bundle"] = time.perf_counter() - started
    except BaseException:
        if archive is not None:
            archive.path.unlink(missing_ok=True)
        raise
    return environment, archive, key, bundle_path
