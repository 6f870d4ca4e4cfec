"""Container pools on the local Docker engine, sized per environment."""

from __future__ import annotations

import pulumi

from toolkit import WorkPoolResource
from toolkit.pools.as_code import template_with_defaults


def declare(config: pulumi.Config) -> list[WorkPoolResource]:
    small = template_with_defaults("docker", mem_limit=config.get("dockerMemLimit") or "2g", cpus=1.0)
    return [
        WorkPoolResource(
            "docker-small",
            type="docker",
            base_job_template=small,
            description="One CPU in a container on the local Docker engine",
        )
    ]
