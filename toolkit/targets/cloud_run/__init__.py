"""The ``cloud_run`` target: ``models``, ``execution`` (the job's execution: resource and status mapping)
and ``target`` (hooks, watcher); primitives from ``toolkit.targets.google``."""
