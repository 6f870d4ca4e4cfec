"""Infrastructure decorators: ``@process``, ``@docker``, ``@kubernetes``, ... one per registered target.

A decorator binds a function to a pool and job variables; it does nothing else
until the function is called. Job-variable precedence, lowest first:

    pool defaults  <  decorator kwargs  <  with_options(...)  <  Submitter.submit(job_variables=)

``templating.merge_layers`` is the one function that applies it.

``block`` is a submission option, not a job variable: on a pool at its
``max_concurrent_runs``, True (the default) waits for a slot, False makes
``submit`` raise ``PoolBusyError`` at once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, ParamSpec, TypeVar

from toolkit import ahead
from toolkit.errors import ConfigError
from toolkit.fanout.api import MapMethod
from toolkit.fanout.prepare import prepare_map
from toolkit.futures import RunFuture
from toolkit.infra.registry import registry
from toolkit.plan import Plan
from toolkit.preparation import prepare
from toolkit.preview import preview_run

P = ParamSpec("P")
R = TypeVar("R")


class InfraFunction(Generic[P, R]):
    """A function bound to a pool: call it, ``.submit`` it, ``.preview`` it or run it ``.local``ly."""

    def __init__(
        self,
        fn: Callable[P, R],
        target_type: str,
        pool: str,
        layers: Sequence[Mapping[str, Any]] = (),
        block: bool = True,
    ) -> None:
        self.fn = fn
        self.target_type = target_type
        self.pool = pool
        self.layers = tuple(dict(layer) for layer in layers)
        self.block = block
        # Name and docs only: merging fn's __dict__ would let a Prefect Flow's own `fn` replace ours.
        functools.update_wrapper(self, fn, updated=())

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run remotely and block: the value, or the remote exception re-raised."""
        return self._submit(args, kwargs, prefix_logs=False).result()

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> RunFuture:
        """Start a run and return at once with its ``RunFuture``."""
        return self._submit(args, kwargs, prefix_logs=True)

    def preview(self, *args: P.args, **kwargs: P.kwargs) -> Plan:
        """The infrastructure a call would create, without creating anything."""
        return preview_run(prepare(self.fn, args, kwargs, self.pool, self.job_layers(), self.target_type, build=False))

    @property
    def map(self) -> MapMethod:
        """``fn.map(items, *more, max_parallel=None, return_exceptions=False)``: many calls, one stack.

        Like ``Executor.map``: the results come back in input order, lazily, from the
        returned ``MapFuture``; ``fn.map.preview(items)`` shows the one stack.
        """

        def prepare(iterables: Sequence[Any], max_parallel: int | None, build: bool) -> Any:
            prepared = prepare_map(
                self.fn, iterables, self.pool, self.job_layers(), self.target_type, max_parallel, build=build
            )
            prepared.block = self.block
            return prepared

        return MapMethod(prepare)

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """A plain local call, no infrastructure."""
        return self.fn(*args, **kwargs)

    def with_options(
        self, *, pool: str | None = None, block: bool | None = None, **job_variables: Any
    ) -> InfraFunction[P, R]:
        """A new bound function with more job variables (and optionally another pool or ``block``)."""
        return InfraFunction(
            self.fn, self.target_type, pool or self.pool, [*self.layers, job_variables],
            self.block if block is None else block,
        )

    def job_layers(self) -> list[dict[str, Any]]:
        """The job-variable layers a call passes on, lowest precedence first."""
        return list(self.layers)

    def _submit(self, args: tuple[Any, ...], kwargs: dict[str, Any], prefix_logs: bool) -> RunFuture:
        with ahead.submission() as run_id_for:
            prepared = prepare(self.fn, args, kwargs, self.pool, self.job_layers(), self.target_type,
                               run_id_for=run_id_for)
            prepared.block = self.block
            return RunFuture(prepared, prefix_logs=prefix_logs)

    def __repr__(self) -> str:
        return f"<{self.target_type} function {self.__qualname__} on pool {self.pool!r}>"


def resolve_pool(target_type: str, pool: str | None, work_pool_name: str | None, default: str | None) -> str:
    if pool and work_pool_name and pool != work_pool_name:
        raise ConfigError(
            f"@{target_type} got pool={pool!r} and work_pool_name={work_pool_name!r}; they are aliases, pass one"
        )
    chosen = pool or work_pool_name or default
    if not chosen:
        raise ConfigError(f"@{target_type} needs a work pool: @{target_type}(pool='NAME'); `toolkit pool ls` lists pools")
    return chosen


def _decorator_factory(target_type: str, default_pool: str | None = None) -> Callable[..., Any]:
    def decorator(
        pool: str | Callable[..., Any] | None = None,
        *,
        work_pool_name: str | None = None,
        block: bool = True,
        **job_variables: Any,
    ) -> Any:
        if callable(pool):  # used bare: @process
            return InfraFunction(pool, target_type, resolve_pool(target_type, None, None, default_pool))
        chosen = resolve_pool(target_type, pool, work_pool_name, default_pool)

        def bind(fn: Callable[P, R]) -> InfraFunction[P, R]:
            if isinstance(fn, InfraFunction):
                raise ConfigError(f"{fn!r} is already bound to infrastructure; decorate the plain function once")
            return InfraFunction(fn, target_type, chosen, [job_variables], block)

        return bind

    decorator.__name__ = decorator.__qualname__ = target_type
    decorator.__doc__ = (
        f"Run the decorated function as a {target_type} job on a work pool.\n\n"
        f"``@{target_type}(pool='NAME', **job_variables)``; ``work_pool_name=`` is an alias of ``pool=``."
        + (f" The pool defaults to {default_pool!r}." if default_pool else "")
    )
    return decorator


def __getattr__(name: str) -> Callable[..., Any]:
    """``@process``, ``@docker``, ...: one decorator per row of the target registry (PEP 562)."""
    row = registry().get(name)
    if row is None:
        raise AttributeError(f"module 'toolkit.decorators' has no attribute {name!r}")
    decorator = _decorator_factory(name, row.default_pool)
    globals()[name] = decorator
    return decorator
