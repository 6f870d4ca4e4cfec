"""ACME's work pools as code: copy this project, edit the pool modules, review, publish.

    pulumi stack init dev                 # stacks/Pulumi.dev.yaml holds its settings
    pulumi preview                        # validates every template, lists changed fields
    pulumi preview --diff                 # ... and renders each change in full
    pulumi up                             # publishes the pools to the registry
    pulumi destroy                        # removes them

The registry is the stack's `toolkit:registryUrl` (a path relative to this
directory, or s3://, gs://, az:// ...); without it, your own registry.
"""

import pulumi

import etl
import ml

config = pulumi.Config()
pools = [*etl.declare(config), *ml.declare(config)]
pulumi.export("pools", [pool.name for pool in pools])
