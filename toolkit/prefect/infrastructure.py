"""Prefect's infrastructure decorators and workers, running on the toolkit.

The forms of Prefect's design for ad-hoc submission work with the import
line changed::

    from toolkit.prefect import kubernetes, KubernetesWorker

    @kubernetes(work_pool_name="olympic", memory=64000)
    @flow
    def my_k8s_flow(): ...

    my_k8s_flow()                            # blocks: the value, or the flow's exception
    state = my_k8s_flow(return_state=True)   # the run's final Prefect State; state.result()
    future = my_k8s_flow.submit()            # a RunFuture; future.result()

    with KubernetesWorker(work_pool_name="olympic") as worker:
        future = worker.submit(my_k8s_flow, job_variables={"memory": 64000})

A call behaves as Prefect 3's ``InfrastructureBoundFlow.__call__``. Job
variables may use Prefect's names and units for the target (the target's
``synonyms`` table: ``memory=64000`` is MiB on kubernetes, ``memory_limit`` is
``memory``, ``finished_job_ttl`` is ``ttl_seconds_after_finished`` ...). A
Prefect name with no counterpart is an error saying why and what to use. The
pool keyword is ``work_pool`` (Prefect 3), ``work_pool_name`` (the design) or
``pool``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from toolkit.decorators import InfraFunction, resolve_pool
from toolkit.errors import ConfigError, RunCancelledError
from toolkit.futures import RunFuture
from toolkit.infra.registry import get_target_class, prefect_workers, registry
from toolkit.infra.synonyms import translate
from toolkit.submitter import Submitter


def prefect_variables(target_type: str, variables: Mapping[str, Any]) -> dict[str, Any]:
    """Job variables in Prefect's names and units for ``target_type`` -> the toolkit's."""
    if not variables:
        return {}
    return translate(get_target_class(target_type).synonyms, variables)


def _pool(target_type: str, work_pool: str | None, work_pool_name: str | None, pool: str | None) -> str:
    given = [name for name in (work_pool, work_pool_name, pool) if name]
    if len(set(given)) > 1:
        raise ConfigError(f"@{target_type} got more than one pool name {given!r}; pass one of work_pool=, pool=")
    return resolve_pool(target_type, given[0] if given else None, None, registry()[target_type].default_pool)


class PrefectBoundFlow(InfraFunction[Any, Any]):
    """A flow bound to a work pool the way Prefect binds it."""

    def __call__(
        self, *args: Any, return_state: bool = False, wait_for: Iterable[Any] | None = None, **kwargs: Any
    ) -> Any:
        """Run on the pool and block: the flow's value, or its exception re-raised.

        ``return_state=True`` returns the run's final Prefect ``State`` instead, never raising for the
        flow's own failure: the job's engine runs the flow with ``return_state=True`` and the state
        comes back with its result, so ``state.result()`` gives the value or raises the exception. A
        run that ended without a state (its job died, timed out) is a ``Crashed`` state, a cancelled
        one ``Cancelled``. ``wait_for``: futures (or anything with ``wait()``) to wait for first.
        """
        for upstream in wait_for or ():
            upstream.wait()
        if not return_state:
            return super().__call__(*args, **kwargs)
        future = self.submit(*args, return_state=True, **kwargs)
        from prefect.states import Cancelled, Crashed

        try:
            return future.result()
        except RunCancelledError as exc:
            return Cancelled(message=str(exc))
        except Exception as exc:
            return Crashed(message=f"the run ended without a state: {type(exc).__name__}: {exc}", data=exc)

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


def __getattr__(name: str) -> Any:
    """Prefect's decorator (``kubernetes``) and worker classes (``KubernetesWorker``) of every registered
    target, made on first use (PEP 562)."""
    if name in registry():
        value: Any = _decorator(name)
    elif name in prefect_workers():
        value = type(name, (PrefectWorker,), {"target_type": prefect_workers()[name], "__module__": __name__})
    else:
        raise AttributeError(f"module 'toolkit.prefect.infrastructure' has no attribute {name!r}")
    globals()[name] = value
    return value
