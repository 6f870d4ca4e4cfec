"""The ``ecs`` target: ``models``, ``definition`` (the task definition), ``task`` (the task, a dynamic
resource over boto3) and ``target`` (hooks, status mapping, watcher); primitives from ``toolkit.targets.aws``."""
