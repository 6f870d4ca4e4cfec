"""The ``vertex_ai`` target: ``models``, ``custom_job`` (the CustomJob: resource and status mapping) and
``target`` (hooks, watcher); primitives from ``toolkit.targets.google``."""
