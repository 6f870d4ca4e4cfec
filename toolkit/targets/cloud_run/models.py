"""The cloud_run target's models: its job variables and its job (``gcp.cloudrunv2.Job`` arguments)."""

from __future__ import annotations

import inspect
from typing import Any

import pulumi_gcp as gcp
from pydantic import Field, model_validator

from toolkit.infra.fields import customizations_field, unset
from toolkit.targets.google.target import GoogleJob, GoogleVariables

_JOB_ARGUMENTS = frozenset(inspect.signature(gcp.cloudrunv2.JobArgs.__init__).parameters) - {"__self__"}


class CloudRunVariables(GoogleVariables):
    """Job variables of the Cloud Run target."""

    cpu: str = Field(
        default="1000m", pattern=r"^(\d+(\.\d+)?|\d+m)$", description="CPU limit of the container, e.g. '1000m' or '2'."
    )
    memory: str = Field(
        default="512Mi", pattern=r"^\d+(Mi|Gi)$", description="Memory limit of the container, e.g. '512Mi' or '4Gi'."
    )
    max_retries: int = Field(
        default=0,
        ge=0,
        le=10,
        description="Retries of a task that ended without a result (a Python exception is a result, not a failure). "
        "This target's own name for 'retries'.",
    )
    vpc_connector: str | None = unset("Serverless VPC Access connector for egress.")
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables read from Secret Manager: NAME -> 'secret', 'secret:version' "
        "or 'projects/P/secrets/S[/versions/V]'.",
    )
    customizations: list[dict[str, Any]] = customizations_field(
        "the gcp.cloudrunv2.Job arguments (snake_case)",
        "[{'op': 'add', 'path': '/template/template/execution_environment', "
        "'value': 'EXECUTION_ENVIRONMENT_GEN2'}]",
    )


class CloudRunJob(GoogleJob):
    vpc_connector: str | None = None
    secrets: dict[str, str] = {}
    job: dict[str, Any]
    """Arguments of ``gcp.cloudrunv2.Job`` (snake_case); the runner is the first container."""

    env_fields = ("env", "secrets")
    env_conflict = "{names} given both in 'env' and in 'secrets'; keep one"
    runner_path = ("job", "template", "template", "containers")

    @model_validator(mode="after")
    def _check(self) -> CloudRunJob:
        unknown = sorted(set(self.job) - _JOB_ARGUMENTS)
        if unknown:
            raise ValueError(
                f"job: gcp.cloudrunv2.Job takes no argument {unknown[0]!r}; fix the pool's 'customizations'. "
                f"Arguments: {', '.join(sorted(_JOB_ARGUMENTS))}"
            )
        return self
