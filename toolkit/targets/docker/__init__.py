"""The ``docker`` target: ``models`` (its job variables and job) and ``target`` (its hooks and watcher)."""
