"""The run's task definition as ECS takes it: container definitions (secrets only as ``valueFrom``),
the other RegisterTaskDefinition fields, and the execution role's policy."""

from __future__ import annotations

import json
from typing import Any

from toolkit.bundles import STORAGE_OPTIONS_ENV
from toolkit.infra.flow import JobParts
from toolkit.secretvalues import Secret
from toolkit.targets.ecs.models import NESTED_FIELDS, TASK_DEFINITION_FIELDS, EcsJob

LOG_STREAM_PREFIX = "toolkit"


def execution_policy(arns: list[str], pull: list[dict[str, Any]]) -> str:
    """Execution-role policy: read exactly these Secrets Manager secrets and SSM parameters, and pull the
    environment's image (``pull``: the statements of ``aws.pull_statements``)."""
    secrets = sorted(a for a in arns if ":secretsmanager:" in a)
    parameters = sorted(a for a in arns if ":ssm:" in a)
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": secrets}
    ]
    if parameters:
        statements.append({"Effect": "Allow", "Action": ["ssm:GetParameters"], "Resource": parameters})
    return json.dumps({"Version": "2012-10-17", "Statement": [*statements, *pull]})


def container_definitions(
    job: EcsJob, parts: JobParts, secret_arns: dict[str, str], log_group: str, registry_secret: str | None = None
) -> str:
    """The task's container definitions as ECS takes them: the runner first, secrets only as ``valueFrom``.

    ``registry_secret``: the Secrets Manager ARN of the pool registry's credentials (a private registry
    other than ECR), given to ECS as the runner's ``repositoryCredentials``.
    """
    containers = json.loads(json.dumps(job.task_definition["containerDefinitions"]))
    runner = containers[0]
    runner["command"] = parts.form.command(parts.run.storage_url, job.python)
    if parts.image:  # the call's environment, pushed to the pool's registry: pulled by digest
        runner["image"] = parts.image
    if registry_secret:
        runner["repositoryCredentials"] = {"credentialsParameter": registry_secret}
    plain = {name: value for name, value in job.env.items() if not isinstance(value, Secret)}
    plain[STORAGE_OPTIONS_ENV] = json.dumps(parts.run.storage_options, sort_keys=True)
    runner["environment"] = [*runner.get("environment", []), *({"name": k, "value": v} for k, v in plain.items())]
    references = {**job.secrets, **secret_arns}
    runner["secrets"] = [*runner.get("secrets", []), *({"name": k, "valueFrom": v} for k, v in references.items())]
    if job.gpu:
        runner["resourceRequirements"] = [
            *runner.get("resourceRequirements", []),
            {"type": "GPU", "value": str(job.gpu)},
        ]
    runner.setdefault(
        "logConfiguration",
        {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": log_group,
                "awslogs-region": job.region,
                "awslogs-stream-prefix": LOG_STREAM_PREFIX,
            },
        },
    )
    return json.dumps(containers, sort_keys=True)


def nested_args(value: Any) -> Any:
    if isinstance(value, dict):
        return {NESTED_FIELDS.get(k, k): nested_args(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nested_args(v) for v in value]
    return value


def task_definition_args(job: EcsJob) -> dict[str, Any]:
    """``aws.ecs.TaskDefinition`` arguments from the RegisterTaskDefinition-shaped template (containers apart)."""
    args: dict[str, Any] = {}
    for field, arg in TASK_DEFINITION_FIELDS.items():
        value = job.task_definition.get(field)
        if field == "containerDefinitions" or value in (None, {}, []):
            continue
        args[arg] = str(value) if field in ("cpu", "memory") else nested_args(value)
    return args
