"""Prefect's infrastructure decorators and workers, running on the toolkit.

The forms of Prefect's design for ad-hoc submission work with the import
line changed::

    from toolkit.prefect import kubernetes, KubernetesWorker

    @kubernetes(work_pool_name="olympic", memory=64000)
    @flow
    def my_k8s_flow(): ...

    future = my_k8s_flow()          # a RunFuture, as the design shows
    print(future.result())

    with KubernetesWorker(work_pool_name="olympic") as worker:
        future = worker.submit(my_k8s_flow, job_variables={"memory": 64000})

Differences from ``toolkit``'s own decorators: calling a decorated flow
returns its future (``toolkit.kubernetes`` blocks and returns the value),
and job variables may use Prefect's names and units for the target (the
target's ``synonyms`` table: ``memory=64000`` is MiB on kubernetes,
``memory_limit`` is ``memory``, ``finished_job_ttl`` is
``ttl_seconds_after_finished`` ...). A Prefect name with no counterpart is an
error saying why and what to use. The pool keyword is ``work_pool`` (Prefect
3), ``work_pool_name`` (the design) or ``pool``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from toolkit.decorators import InfraFunction, resolve_pool
from toolkit.errors import ConfigError
from toolkit.futures import RunFuture
from toolkit.infra import get_target_class
from toolkit.infra.synonyms import translate
from toolkit.submitter import Submitter

LOCAL_POOLS = {"process": "local-process", "docker": "local-docker"}


def prefect_variables(target_type: str, variables: Mapping[str, Any]) -> dict[str, Any]:
    """Job variables in Prefect's names and units for ``target_type`` -> the toolkit's."""
    if not variables:
        return {}
    return translate(get_target_class(target_type).synonyms, variables)


def _pool(target_type: str, work_pool: str | None, work_pool_name: str | None, pool: str | None) -> str:
    given = [name for name in (work_pool, work_pool_name, pool) if name]
    if len(set(given)) > 1:
        raise ConfigError(f"@{target_type} got more than one pool name {given!r}; pass one of work_pool=, pool=")
    return resolve_pool(target_type, given[0] if given else None, None, LOCAL_POOLS.get(target_type))


class PrefectBoundFlow(InfraFunction[Any, Any]):
    """A flow bound to a work pool the way Prefect binds it: calling it submits it and returns the future."""

    def __call__(self, *args: Any, **kwargs: Any) -> RunFuture:  # type: ignore[override]
        return self.submit(*args, **kwargs)

    def job_layers(self) -> list[dict[str, Any]]:
        return [prefect_variables(self.target_type, layer) for layer in self.layers]

    def with_options(  # type: ignore[override]
        self, *, job_variables: Mapping[str, Any] | None = None, work_pool: str | None = None, **flow_options: Any
    ) -> PrefectBoundFlow:
        """Prefect's form: new job variables, and any ``Flow.with_options`` option for the flow itself."""
        fn = self.fn.with_options(**flow_options) if flow_options else self.fn
        return PrefectBoundFlow(fn, self.target_type, work_pool or self.pool, [*self.layers, dict(job_variables or {})])


def _decorator(target_type: str) -> Callable[..., Callable[[Callable[..., Any]], PrefectBoundFlow]]:
    def decorator(
        work_pool: str | None = None,
        include_files: Sequence[str] | None = None,
        launcher: Any = None,
        *,
        work_pool_name: str | None = None,
        pool: str | None = None,
        **job_variables: Any,
    ) -> Callable[[Callable[..., Any]], PrefectBoundFlow]:
        if launcher is not None:
            raise ConfigError(
                f"@{target_type}(launcher=...) has no counterpart: the toolkit's runner loads and runs the "
                "bundle in every job; leave it out"
            )
        if include_files is not None:
            job_variables["include_files"] = list(include_files)
        chosen = _pool(target_type, work_pool, work_pool_name, pool)

        def bind(flow: Callable[..., Any]) -> PrefectBoundFlow:
            if isinstance(flow, InfraFunction):
                raise ConfigError(f"{flow!r} is already bound to infrastructure; decorate the flow once")
            return PrefectBoundFlow(flow, target_type, chosen, [job_variables])

        return bind

    decorator.__name__ = decorator.__qualname__ = target_type
    decorator.__doc__ = (
        f"Bind a Prefect flow to a {target_type} work pool, as Prefect's @{target_type} does.\n\n"
        f"``@{target_type}(work_pool='NAME', **job_variables)``; job variables may use Prefect's names and units."
    )
    return decorator


process = _decorator("process")
docker = _decorator("docker")
kubernetes = _decorator("kubernetes")
ecs = _decorator("ecs")
cloud_run = _decorator("cloud_run")
vertex_ai = _decorator("vertex_ai")
azure_container_instance = _decorator("azure_container_instance")


class PrefectWorker(Submitter):
    """Prefect's worker API: ``with XWorker(work_pool_name=...) as worker: worker.submit(flow, ...)``.

    Leaving the block waits for the submitted runs (and their teardown), as a
    ``Submitter`` does. ``submit`` takes the flow's arguments positionally,
    by keyword, or as Prefect's ``parameters=`` mapping.
    """

    target_type: ClassVar[str]

    def __init__(
        self,
        work_pool_name: str | None = None,
        *,
        work_pool: str | None = None,
        pool: str | None = None,
        **job_variables: Any,
    ) -> None:
        super().__init__(_pool(self.target_type, work_pool_name, work_pool, pool), **job_variables)

    def job_layers(self, fn: Callable[..., Any], job_variables: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        return [prefect_variables(self.target_type, layer) for layer in super().job_layers(fn, job_variables)]

    def submit(  # type: ignore[override]
        self,
        flow: Callable[..., Any],
        *args: Any,
        parameters: Mapping[str, Any] | None = None,
        job_variables: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> RunFuture:
        return super().submit(flow, *args, job_variables=job_variables, **{**(parameters or {}), **kwargs})


class ProcessWorker(PrefectWorker):
    target_type = "process"


class DockerWorker(PrefectWorker):
    target_type = "docker"


class KubernetesWorker(PrefectWorker):
    target_type = "kubernetes"


class ECSWorker(PrefectWorker):
    target_type = "ecs"


class CloudRunWorker(PrefectWorker):
    target_type = "cloud_run"


class CloudRunWorkerV2(PrefectWorker):
    target_type = "cloud_run"


class VertexAIWorker(PrefectWorker):
    target_type = "vertex_ai"


class AzureContainerWorker(PrefectWorker):
    target_type = "azure_container_instance"
