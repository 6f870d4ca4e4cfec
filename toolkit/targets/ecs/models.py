"""The ecs target's models: its job variables and its job (a RegisterTaskDefinition-shaped task definition)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator

from toolkit.infra.fields import customizations_field, unset
from toolkit.infra.run import JobConfiguration
from toolkit.infra.variables import EnvironmentVariables
from toolkit.secretvalues import Secret

SECRET_ARN = r"^arn:aws[\w-]*:(secretsmanager|ssm):[\w-]+:\d{12}:(secret|parameter)[:/].+$"

FARGATE_MEMORY = {
    256: range(512, 2049, 512),
    512: range(1024, 4097, 1024),
    1024: range(2048, 8193, 1024),
    2048: range(4096, 16385, 1024),
    4096: range(8192, 30721, 1024),
    8192: range(16384, 61441, 4096),
    16384: range(32768, 122881, 8192),
}
"""Fargate's valid task sizes: CPU units -> memory MiB (from the ECS task-size table)."""

TASK_DEFINITION_FIELDS = {
    "family": "family",
    "cpu": "cpu",
    "memory": "memory",
    "networkMode": "network_mode",
    "requiresCompatibilities": "requires_compatibilities",
    "containerDefinitions": "container_definitions",
    "runtimePlatform": "runtime_platform",
    "ephemeralStorage": "ephemeral_storage",
    "placementConstraints": "placement_constraints",
    "pidMode": "pid_mode",
    "ipcMode": "ipc_mode",
}
"""RegisterTaskDefinition fields a template may use, and their ``aws.ecs.TaskDefinition`` argument."""

NESTED_FIELDS = {
    "cpuArchitecture": "cpu_architecture",
    "operatingSystemFamily": "operating_system_family",
    "sizeInGiB": "size_in_gib",
    "type": "type",
    "expression": "expression",
}


class EcsVariables(EnvironmentVariables):
    """Job variables of the ECS target."""

    region: str = Field(default="us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$", description="AWS region of the run.")
    cluster: str = Field(default="default", description="Name or ARN of the ECS cluster that runs the task.")
    image: str | None = unset(
        "Container image with the job's Python, the toolkit, cloudpickle and s3fs installed (required).",
    )
    launch_type: Literal["FARGATE", "EC2"] = Field(default="FARGATE", description="Where the task runs.")
    cpu: int = Field(default=1024, ge=128, description="CPU units of the task (1024 = one vCPU).")
    memory: int = Field(default=2048, ge=128, description="Memory of the task in MiB (Fargate: a valid size for cpu).")
    gpu: int | None = unset("GPUs for the container (EC2 launch type only).", ge=1)
    cpu_architecture: Literal["X86_64", "ARM64"] = Field(default="X86_64", description="CPU architecture of the task.")
    ephemeral_storage: int | None = unset("Ephemeral storage of a Fargate task in GiB (default 20).", ge=21, le=200)
    network_mode: Literal["awsvpc", "bridge", "host"] = Field(
        default="awsvpc", description="Task network mode (Fargate needs 'awsvpc')."
    )
    subnets: list[str] = Field(default_factory=list, description="Subnet IDs of the task (required for 'awsvpc').")
    security_groups: list[str] = Field(default_factory=list, description="Security group IDs of the task.")
    assign_public_ip: bool = Field(
        default=False, description="Give the task a public IP (needed in public subnets to reach S3 and registries)."
    )
    platform_version: str | None = unset("Fargate platform version, e.g. 'LATEST' or '1.4.0'.")
    task_role_arn: str | None = unset(
        "An existing task role to run as (default: a per-run one); it gets an inline policy for "
        "the run's bucket for the run's lifetime.",
    )
    execution_role_arn: str | None = unset(
        "An existing execution role (default: a per-run one); it gets an inline policy for the "
        "run's secrets for the run's lifetime.",
    )
    log_group: str | None = unset("An existing CloudWatch log group (default: /toolkit/runs/<run-id>, made per run).")
    log_retention_days: int = Field(default=7, ge=1, description="Retention of the per-run log group in days.")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables of the container; toolkit.secret() values go through Secrets Manager.",
    )
    secrets: dict[str, Annotated[str, StringConstraints(pattern=SECRET_ARN)]] = Field(
        default_factory=dict,
        description="Environment variables read from existing secrets: NAME -> ARN of a Secrets Manager "
        "secret or SSM parameter (the per-run execution role may read exactly these; one encrypted with a "
        "customer-managed KMS key also needs kms:Decrypt, so pass an execution_role_arn that has it).",
    )
    tags: dict[str, str] = Field(default_factory=dict, description="Tags on every resource of the run and the task.")
    python: str = Field(default="python3", description="The Python interpreter in the image.")
    customizations: list[dict[str, Any]] = customizations_field(
        "the task definition (RegisterTaskDefinition shape)",
        "[{'op': 'add', 'path': '/containerDefinitions/0/ulimits', 'value': "
        "[{'name': 'nofile', 'softLimit': 65536, 'hardLimit': 65536}]}]",
    )


class EcsJob(JobConfiguration):
    region: str
    cluster: str
    launch_type: Literal["FARGATE", "EC2"]
    gpu: int | None = None
    subnets: list[str] = []
    security_groups: list[str] = []
    assign_public_ip: bool = False
    platform_version: str | None = None
    task_role_arn: str | None = None
    execution_role_arn: str | None = None
    log_group: str | None = None
    log_retention_days: int = 7
    env: dict[str, str | Secret] = {}
    secrets: dict[str, str] = {}
    tags: dict[str, str] = {}
    python: str = "python3"
    task_definition: dict[str, Any]
    """RegisterTaskDefinition fields; the first container definition runs the runner."""

    env_fields = ("env", "secrets")
    runner_path = ("task_definition", "containerDefinitions")

    @model_validator(mode="after")
    def _check(self) -> EcsJob:
        spec = self.task_definition
        unknown = sorted(set(spec) - set(TASK_DEFINITION_FIELDS))
        if unknown:
            raise ValueError(
                f"task_definition fields {unknown} are not supported; use {sorted(TASK_DEFINITION_FIELDS)}"
            )
        if self.launch_type == "FARGATE":
            self._check_fargate(spec)
        elif self.platform_version or spec.get("ephemeralStorage"):
            raise ValueError("platform_version and ephemeral_storage apply to the FARGATE launch type only")
        return self

    def _check_fargate(self, spec: dict[str, Any]) -> None:
        if spec.get("networkMode") != "awsvpc":
            raise ValueError(f"FARGATE tasks need network_mode 'awsvpc', not {spec.get('networkMode')!r}")
        if self.gpu:
            raise ValueError("FARGATE tasks cannot have GPUs; use launch_type 'EC2' on a GPU cluster")
        cpu, memory = int(spec.get("cpu", 0)), int(spec.get("memory", 0))
        if cpu not in FARGATE_MEMORY:
            raise ValueError(f"FARGATE cpu must be one of {sorted(FARGATE_MEMORY)}, not {cpu}")
        sizes = FARGATE_MEMORY[cpu]
        if memory not in sizes:
            raise ValueError(
                f"FARGATE memory for cpu {cpu} must be {sizes.start}-{sizes.stop - 1} MiB in steps of "
                f"{sizes.step}, not {memory}"
            )
