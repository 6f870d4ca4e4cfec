"""Work pools: what a platform team publishes, and the ways it gets there.

- ``registry``: ``WorkPool`` (a target type, a base job template, where run data
  lives) and ``PoolRegistry``, the directory of pool documents at an fsspec URL;
- ``as_code``: pools (and policy packs) declared as Pulumi resources of a
  platform team's own project, published to the registry by ``pulumi up``;
- ``diff``: what a change to a pool's template does to the jobs it renders;
- ``export``: a registered pool as the program that declares it as code.

A Prefect work pool's template becomes a pool through ``toolkit.prefect.pool_import``.
"""
