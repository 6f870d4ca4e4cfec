"""The organisation's work pools, as code (design.md, "Pools as code").

One module per family of pools, each with ``declare(config) -> pools``. The
stack's config (``stacks/Pulumi.<stack>.yaml``) selects the registry
(``toolkit:registryUrl``) and the per-environment values the modules read.
"""

import pulumi

import batch
import containers
from toolkit.pools.as_code import registry_url_from_config

config = pulumi.Config()
pools = [*batch.declare(config), *containers.declare(config)]

pulumi.export("registry", registry_url_from_config())
pulumi.export("pools", [pool.name for pool in pools])
