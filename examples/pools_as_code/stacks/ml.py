"""Machine-learning pools: the docker target's template with ACME's defaults, sized per environment."""

from __future__ import annotations

import pulumi

from toolkit import WorkPoolResource
from toolkit.pools.as_code import template_with_defaults
from toolkit.pools.registry import StorageConfig


def declare(config: pulumi.Config) -> list[WorkPoolResource]:
    storage_url = config.get("runStorage")
    storage = StorageConfig(url=storage_url, mode="shared-prefix") if storage_url else StorageConfig()
    return [
        WorkPoolResource(
            "ml-train",
            type="docker",
            base_job_template=template_with_defaults(
                "docker",
                mem_limit=config.get("trainMemory") or "4g",
                cpus=config.get_float("trainCpus") or 2.0,
                env={"PYTHONHASHSEED": "0"},
            ),
            storage=storage,
            description="Training jobs in containers",
        )
    ]
