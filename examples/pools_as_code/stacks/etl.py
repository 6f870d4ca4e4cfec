"""ETL pools: a hand-written template, to show the shape every pool template has.

``job_configuration`` is what the target receives; each ``{{ name }}`` in it is
filled from the job variables, which ``variables`` (a JSON schema) declares,
types and defaults. A placeholder with no variable fails ``pulumi preview``.
"""

from __future__ import annotations

import pulumi

from toolkit import WorkPoolResource

ETL_TEMPLATE = {
    "job_configuration": {
        "env": {"ETL_DATASET": "{{ dataset }}", "ETL_WAREHOUSE": "{{ warehouse }}"},
        "command": ["nice", "-n", "{{ niceness }}"],
        "labels": {"team": "data", "dataset": "{{ dataset }}"},
    },
    "variables": {
        "type": "object",
        "required": ["dataset"],
        "properties": {
            "dataset": {"type": "string", "description": "Dataset the job loads."},
            "warehouse": {"type": "string", "default": "analytics", "description": "Target warehouse."},
            "niceness": {"type": "string", "default": "10", "description": "CPU priority of the job (nice)."},
            "timeout": {"type": "integer", "default": 3600, "description": "Seconds before the job is stopped."},
        },
    },
}


def declare(config: pulumi.Config) -> list[WorkPoolResource]:
    return [
        WorkPoolResource(
            "etl",
            type="process",
            base_job_template=ETL_TEMPLATE,
            description=f"Nightly loads into the {config.get('warehouse') or 'analytics'} warehouse",
        )
    ]
