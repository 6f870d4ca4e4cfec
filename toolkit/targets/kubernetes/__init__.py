"""The ``kubernetes`` target: ``models``, ``manifest`` (a run's Job), ``cluster`` (API clients and the
platform's primitives), ``status`` (the status mapping) and ``target`` (its hooks and watcher)."""
