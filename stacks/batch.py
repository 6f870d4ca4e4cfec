"""CPU batch pools: local processes at low priority, for ETL and nightly jobs."""

from __future__ import annotations

import pulumi

from toolkit import WorkPoolResource
from toolkit.pools.as_code import template_with_defaults


def declare(config: pulumi.Config) -> list[WorkPoolResource]:
    template = template_with_defaults(
        "process",
        timeout=config.get_int("batchTimeout") or 3600,
        command=["nice", "-n", "10"],
        env={"OMP_NUM_THREADS": "4"},
    )
    return [
        WorkPoolResource(
            "cpu-batch",
            type="process",
            base_job_template=template,
            description="Low-priority local processes for batch jobs",
        )
    ]
