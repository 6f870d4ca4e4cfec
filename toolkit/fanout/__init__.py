"""Many calls, one stack: ``fn.map(items)`` on every target.

A map is one run (one stack, one function bundle) whose job resource runs
many items, each its own signed bundle under ``items/`` in run storage:

- ``items``: the items streamed from the caller's iterables into signed
  bundles on disk, a few at a time, so no map holds them all in memory;
- ``prepare``: validation (``max_parallel``), the function's run prepared as a
  single call's is, then the items staged; nothing is provisioned;
- ``results``: the item results polled from run storage while the job runs,
  moved into a local spool, and the per-item states;
- ``future``: ``MapFuture``, the run's lifecycle (``RunFuture``'s) plus ordered,
  lazy results, ``as_completed`` and per-item handles.

Targets only read ``RunContext.fanout`` (count, parallelism, staged items)
and render their job resource's form of it (one watcher over a map's workers
is ``toolkit.infra.watch``); everything else lives here.
"""
