"""The ``azure_container_instance`` target: ``models`` and ``target`` (hooks, status mapping, watcher);
primitives from ``toolkit.targets.azure``."""
