"""The targets: one module or folder each, registered by one row of ``toolkit.infra.registry``.

A target supplies only what differs (``toolkit.infra.base.Target``): its models,
its platform's primitives, its job resource and its watcher; the run flow
(``toolkit.infra.flow``) does the rest. Provider families share their
primitives: ``local`` (process, docker), ``aws`` (ecs), ``google`` (cloud_run,
vertex_ai), ``azure`` (azure_container_instance).
"""
