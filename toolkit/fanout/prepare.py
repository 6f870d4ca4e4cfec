"""A map, resolved and staged: the function's run prepared as a single call's, plus its items.

Everything that can be wrong with a map's input fails here, before any stack
exists: ``max_parallel``, the pool and job variables (``preparation.prepare``),
an item that cannot be pickled or an iterable that raises.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from toolkit.errors import ConfigError
from toolkit.fanout.items import stage_items
from toolkit.infra.run import FanOut
from toolkit.preparation import PreparedRun, prepare, staging_dir


def check_max_parallel(max_parallel: int | None) -> None:
    if max_parallel is None:
        return
    if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1:
        raise ConfigError(
            f"max_parallel must be a whole number of at least 1 (or None for the target's default), "
            f"not {max_parallel!r}"
        )


def prepare_map(
    fn: Callable[..., Any],
    iterables: Sequence[Iterable[Any]],
    pool_name: str,
    layers: Sequence[Mapping[str, Any]],
    expected_type: str | None = None,
    max_parallel: int | None = None,
    build: bool = True,
) -> PreparedRun:
    """Resolve and validate the map's run, stage one signed bundle per item; nothing is provisioned.

    ``context.fanout`` is None when the iterables hold no item: such a map has nothing to run.
    """
    check_max_parallel(max_parallel)
    prepared = prepare(fn, (), {}, pool_name, layers, expected_type, build=build)
    directory = staging_dir() / f"{prepared.run_id}.items"
    try:
        count = stage_items(fn, tuple(iterables), prepared.context.run_key, directory)
        if count:
            parallelism = prepared.target.map_parallelism(count, max_parallel, prepared.pool.name)
            fanout = FanOut(count=count, parallelism=parallelism, items_path=directory)
            prepared.context = dataclasses.replace(prepared.context, fanout=fanout)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        prepared.discard_bundle()
        raise
    if not count:
        shutil.rmtree(directory, ignore_errors=True)
    return prepared
