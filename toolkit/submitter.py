"""``Submitter``: the low-level API, as in the seed's worker API.

``with Submitter("pool") as s: fut = s.submit(fn, 1, job_variables={...})``.
Leaving the block waits for every run it submitted to finish and be torn
down, like ``ThreadPoolExecutor``; leaving it by an exception (Ctrl-C
included) cancels the runs still going first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, ClassVar

from toolkit import ahead
from toolkit.decorators import InfraFunction, resolve_pool
from toolkit.fanout.api import preview_map, start_map
from toolkit.fanout.map_future import EmptyMapFuture, MapFuture
from toolkit.fanout.prepare import prepare_map
from toolkit.futures import RunFuture
from toolkit.plan import Plan
from toolkit.pools.registry import WorkPool
from toolkit.preparation import PreparedRun, fresh_run_id, prepare
from toolkit.preview import preview_run


class Submitter:
    """Submits any callable to one work pool."""

    def __init__(
        self, pool: str | None = None, *, work_pool_name: str | None = None, block: bool = True, **job_variables: Any
    ) -> None:
        self.pool = resolve_pool("Submitter", pool, work_pool_name, None)
        self.block = block
        """False: ``submit`` raises ``PoolBusyError`` at once when the pool is at ``max_concurrent_runs``."""
        self.job_variables = job_variables
        self.futures: list[RunFuture | EmptyMapFuture] = []

    target_type: ClassVar[str | None] = None
    """When set, the pool must run jobs of this type (a ``KubernetesWorker`` takes kubernetes pools)."""

    def job_layers(self, fn: Callable[..., Any], job_variables: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
        """Job-variable layers of one submission, lowest precedence first."""
        layers: list[Mapping[str, Any]] = []
        if isinstance(fn, InfraFunction):  # keep its decorator kwargs, run it on this pool
            layers += fn.job_layers()
        return [*layers, self.job_variables, job_variables or {}]

    def _prepare(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        job_variables: Mapping[str, Any] | None,
        build: bool = True,
        run_id_for: Callable[[WorkPool], str] = fresh_run_id,
    ) -> PreparedRun:
        layers = self.job_layers(fn, job_variables)
        if isinstance(fn, InfraFunction):
            fn = fn.fn
        prepared = prepare(fn, args, kwargs, self.pool, layers, self.target_type, build=build, run_id_for=run_id_for)
        prepared.block = self.block
        return prepared

    def submit(
        self, fn: Callable[..., Any], *args: Any, job_variables: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> RunFuture:
        with ahead.submission() as run_id_for:
            future = RunFuture(self._prepare(fn, args, kwargs, job_variables, run_id_for=run_id_for))
        self.futures.append(future)
        return future

    def preview(
        self, fn: Callable[..., Any], *args: Any, job_variables: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> Plan:
        return preview_run(self._prepare(fn, args, kwargs, job_variables, build=False))

    def _prepare_map(
        self,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        job_variables: Mapping[str, Any] | None,
        max_parallel: int | None,
        build: bool = True,
    ) -> PreparedRun:
        layers = self.job_layers(fn, job_variables)
        if isinstance(fn, InfraFunction):
            fn = fn.fn
        prepared = prepare_map(fn, iterables, self.pool, layers, self.target_type, max_parallel, build=build)
        prepared.block = self.block
        return prepared

    def map(
        self,
        fn: Callable[..., Any],
        items: Iterable[Any],
        *more_items: Iterable[Any],
        job_variables: Mapping[str, Any] | None = None,
        max_parallel: int | None = None,
        return_exceptions: bool = False,
    ) -> MapFuture | EmptyMapFuture:
        """``fn`` once per item (``zip`` of the iterables) through one run stack; see ``fn.map``."""
        future = start_map(
            self._prepare_map(fn, (items, *more_items), job_variables, max_parallel), return_exceptions
        )
        self.futures.append(future)
        return future

    def preview_map(
        self,
        fn: Callable[..., Any],
        items: Iterable[Any],
        *more_items: Iterable[Any],
        job_variables: Mapping[str, Any] | None = None,
        max_parallel: int | None = None,
    ) -> Plan:
        """The one stack ``map`` would create, creating nothing."""
        return preview_map(self._prepare_map(fn, (items, *more_items), job_variables, max_parallel, build=False))

    def __enter__(self) -> Submitter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            for future in self.futures:
                if not future.done():
                    future.cancel(timeout=0)
        for future in self.futures:
            future.wait_teardown()
