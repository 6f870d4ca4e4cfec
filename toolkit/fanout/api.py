"""``fn.map(...)`` and ``fn.map.preview(...)``: the public face of a map, for decorators and ``Submitter``.

``MapMethod`` is what ``InfraFunction.map`` returns: callable like
``concurrent.futures.Executor.map`` (``fn.map(iterable, *more_iterables,
max_parallel=None, return_exceptions=False)``), with ``.preview(...)`` showing
the one stack the map would create. Both take a ``prepare`` callable that
resolves the pool and job variables of whoever owns them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from toolkit.fanout.map_future import EmptyMapFuture, MapFuture
from toolkit.plan import Plan
from toolkit.preparation import PreparedRun
from toolkit.preview import nothing_to_create, preview_run


class PrepareMap(Protocol):
    def __call__(self, iterables: Sequence[Iterable[Any]], max_parallel: int | None, build: bool) -> PreparedRun: ...


def start_map(prepared: PreparedRun, return_exceptions: bool = False) -> MapFuture | EmptyMapFuture:
    """Start the prepared map's run (its stack goes up in the background); no items: nothing starts."""
    if prepared.context.fanout is None:
        prepared.discard_bundle()
        return EmptyMapFuture()
    return MapFuture(prepared, return_exceptions=return_exceptions)


def preview_map(prepared: PreparedRun) -> Plan:
    """The plan of the map's one stack; a map over no items would create nothing."""
    return preview_run(prepared) if prepared.context.fanout else nothing_to_create(prepared)


class MapMethod:
    """``fn.map(iterable, *more, max_parallel=None, return_exceptions=False)``; ``fn.map.preview(...)``."""

    def __init__(self, prepare: PrepareMap) -> None:
        self._prepare = prepare

    def __call__(
        self,
        iterable: Iterable[Any],
        *more_iterables: Iterable[Any],
        max_parallel: int | None = None,
        return_exceptions: bool = False,
    ) -> MapFuture | EmptyMapFuture:
        """Run the function once per item (``zip`` of the iterables) through one run stack.

        Returns at once with a ``MapFuture``; iterate it for the results in input
        order. Bad input (``max_parallel``, job variables, an item that cannot be
        pickled) raises here, before anything is provisioned.
        """
        return start_map(self._prepare((iterable, *more_iterables), max_parallel, True), return_exceptions)

    def preview(self, iterable: Iterable[Any], *more_iterables: Iterable[Any], max_parallel: int | None = None) -> Plan:
        """The one stack the map would create (its job resource shaped for the items), creating nothing."""
        return preview_map(self._prepare((iterable, *more_iterables), max_parallel, False))
