"""The infra contract: what a target is, and the run flow every target's program follows.

- ``base``: ``Target``, the hooks a target supplies (models, platform, job, watcher);
- ``flow``: the run program, written once (SkyPilot's provisioner), and the
  ``Platform`` primitives a provider family implements;
- ``run``, ``variables``, ``watch``, ``image_registry``, ``synonyms``: the models
  both sides share (a run's context and rendered job, job variables, job status
  and watchers, a pool's image registry, other names of job variables), and
  ``fields``, the kinds of field they declare many times;
- ``registry``: the one table of targets everything that names them reads;
- ``resources``, ``rest``, ``pulling``: what targets share (the toolkit's own
  resources, served by the client; cloud REST clients, registry reachability).

The targets themselves are ``toolkit.targets``.
"""
