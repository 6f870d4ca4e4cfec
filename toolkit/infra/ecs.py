"""The ``ecs`` target: the job is one Amazon ECS task (Fargate or EC2).

Bucket = a per-run S3 bucket ``toolkit-run-<run-id>`` (public access blocked,
force-destroyed with the stack) holding the bundle as an S3 object; with a
pool's shared ``s3://`` prefix, ``RunStorage`` uploads into ``<prefix>/<run-id>``
instead. IAM = a per-run task role whose only permissions are that bucket (or
prefix), and a per-run execution role with the managed ECS execution policy
plus read access to exactly the run's secrets and the ones the job names. The
run key and ``toolkit.secret`` env values become Secrets Manager secrets the
container receives through ``secrets``/``valueFrom``, so the task definition
never holds them; storage credentials come from the task role, never from env.
Job = a log group, the TaskDefinition and the task itself, a dynamic resource
over boto3: create calls ``run_task`` and turns its ``failures`` into an error
that says what to change; delete calls ``stop_task`` and waits for STOPPED so
no task outlives its stack.

The watcher reads ``describe_tasks`` (container exit code and reason, OOM,
stop code and stopped reason, including start failures such as an image that
cannot be pulled) and the task's CloudWatch log stream. Every boto3 client is
built with ``region_name`` only, so ``AWS_ENDPOINT_URL`` (an emulator in tests)
and the usual credential chain apply.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

import boto3
import pulumi
import pulumi_aws as aws
from botocore.exceptions import ClientError
from pulumi.dynamic import CreateResult, Resource, ResourceProvider
from pydantic import Field, StringConstraints, model_validator

from toolkit.bundles import FILES_NAME
from toolkit.environments.registry import EcrRepository, ImageRegistry
from toolkit.environments.variables import EnvironmentVariables
from toolkit.errors import ConfigError, ProvisionError
from toolkit.fanout.watch import WorkersWatcher
from toolkit.infra.base import (
    JobConfiguration,
    JobStatus,
    JobWatcher,
    RunContext,
    Target,
    placeholders,
    runner_command,
)
from toolkit.infra.pulling import refuse_loopback
from toolkit.infra.storage import RunStorage, item_uploads
from toolkit.infra.synonyms import (
    PREFECT_COMMON,
    Synonym,
    ecs_cpu_units,
    ecs_memory_mib,
    into_mapping,
    no_counterpart,
    prefect_retries,
    renamed,
)
from toolkit.runner import BUNDLE_NAME, RUN_KEY_ENV, STORAGE_OPTIONS_ENV
from toolkit.secretvalues import Secret

RESERVED_ENV = (RUN_KEY_ENV, STORAGE_OPTIONS_ENV)
EXECUTION_POLICY = "policy/service-role/AmazonECSTaskExecutionRolePolicy"
LOG_STREAM_PREFIX = "toolkit"
STOP_WAIT_SECONDS = 300.0
POLL_SECONDS = 3.0
ROLE_PROPAGATION_SECONDS = 60.0
"""How long ``run_task`` retries while ECS cannot yet assume a role IAM has just created."""
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

_NESTED_FIELDS = {
    "cpuArchitecture": "cpu_architecture",
    "operatingSystemFamily": "operating_system_family",
    "sizeInGiB": "size_in_gib",
    "type": "type",
    "expression": "expression",
}

_STARTING = ("PROVISIONING", "PENDING", "ACTIVATING")
"""Task states before the container runs; later ones (DEACTIVATING ...) follow a running container."""

_START_FAILURE_HINTS = {
    "CannotPullContainerError": "check the image name, that the execution role may pull it, and that the "
    "subnets reach the registry (assign_public_ip=True or a NAT gateway)",
    "ResourceInitializationError": "the execution role could not read a secret or create the log stream, or "
    "the subnets cannot reach Secrets Manager and CloudWatch Logs",
    "OutOfMemoryError": "raise the 'memory' job variable",
}

_PLACEMENT_HINTS = {
    "RESOURCE:MEMORY": "no container instance has enough free memory; lower 'memory' or add capacity",
    "RESOURCE:CPU": "no container instance has enough free CPU; lower 'cpu' or add capacity",
    "RESOURCE:GPU": "no container instance has a free GPU; add GPU capacity to the cluster",
    "AGENT": "the ECS agent of the container instances is disconnected",
    "ATTRIBUTE": "no container instance matches the task's requirements (cpu_architecture, GPU, placement)",
    "MISSING": "the cluster or task definition does not exist",
}


class EcsVariables(EnvironmentVariables):
    """Job variables of the ECS target."""

    region: str = Field(default="us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$", description="AWS region of the run.")
    cluster: str = Field(default="default", description="Name or ARN of the ECS cluster that runs the task.")
    image: str | None = Field(
        default=None,
        description="Container image with the job's Python, the toolkit, cloudpickle and s3fs installed (required).",
    )
    launch_type: Literal["FARGATE", "EC2"] = Field(default="FARGATE", description="Where the task runs.")
    cpu: int = Field(default=1024, ge=128, description="CPU units of the task (1024 = one vCPU).")
    memory: int = Field(default=2048, ge=128, description="Memory of the task in MiB (Fargate: a valid size for cpu).")
    gpu: int | None = Field(default=None, ge=1, description="GPUs for the container (EC2 launch type only).")
    cpu_architecture: Literal["X86_64", "ARM64"] = Field(default="X86_64", description="CPU architecture of the task.")
    ephemeral_storage: int | None = Field(
        default=None, ge=21, le=200, description="Ephemeral storage of a Fargate task in GiB (default 20)."
    )
    network_mode: Literal["awsvpc", "bridge", "host"] = Field(
        default="awsvpc", description="Task network mode (Fargate needs 'awsvpc')."
    )
    subnets: list[str] = Field(default_factory=list, description="Subnet IDs of the task (required for 'awsvpc').")
    security_groups: list[str] = Field(default_factory=list, description="Security group IDs of the task.")
    assign_public_ip: bool = Field(
        default=False, description="Give the task a public IP (needed in public subnets to reach S3 and registries)."
    )
    platform_version: str | None = Field(
        default=None, description="Fargate platform version, e.g. 'LATEST' or '1.4.0'."
    )
    task_role_arn: str | None = Field(
        default=None,
        description="An existing task role to run as (default: a per-run one); it gets an inline policy for "
        "the run's bucket for the run's lifetime.",
    )
    execution_role_arn: str | None = Field(
        default=None,
        description="An existing execution role (default: a per-run one); it gets an inline policy for the "
        "run's secrets for the run's lifetime.",
    )
    log_group: str | None = Field(
        default=None, description="An existing CloudWatch log group (default: /toolkit/runs/<run-id>, made per run)."
    )
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
    customizations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="JSON-6902 patches applied to the task definition (RegisterTaskDefinition shape), e.g. "
        "[{'op': 'add', 'path': '/containerDefinitions/0/ulimits', 'value': "
        "[{'name': 'nofile', 'softLimit': 65536, 'hardLimit': 65536}]}].",
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

    @model_validator(mode="after")
    def _check(self) -> EcsJob:
        spec = self.task_definition
        unknown = sorted(set(spec) - set(TASK_DEFINITION_FIELDS))
        if unknown:
            raise ValueError(
                f"task_definition fields {unknown} are not supported; use {sorted(TASK_DEFINITION_FIELDS)}"
            )
        containers = spec.get("containerDefinitions")
        if not isinstance(containers, list) or not containers or not isinstance(containers[0], dict):
            raise ValueError("task_definition.containerDefinitions must list the runner container first")
        for name in [*self.env, *self.secrets]:
            if name in RESERVED_ENV:
                raise ValueError(f"environment variable {name!r} is set by the toolkit; use another name")
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise ValueError(f"{both} are set in both env and secrets; keep one")
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


def partition(region: str) -> str:
    """The AWS partition of a region, for ARNs built before any resource exists."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def bucket_name(run_id: str) -> str:
    return f"toolkit-run-{run_id}"


def storage_policy(run: RunContext, region: str) -> dict[str, Any]:
    """Task-role policy: the run's bucket or shared prefix, nothing else."""
    bucket, _, prefix = run.storage_url.removeprefix("s3://").partition("/")
    bucket_arn = f"arn:{partition(region)}:s3:::{bucket}"
    objects = f"{bucket_arn}/{prefix}/*" if prefix else f"{bucket_arn}/*"
    listing: dict[str, Any] = {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [bucket_arn]}
    if prefix:
        listing["Condition"] = {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], "Resource": [objects]},
            listing,
        ],
    }


ECR_PULL_ACTIONS = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]


def execution_policy(arns: list[str], ecr: EcrRepository | None = None) -> str:
    """Execution-role policy: read exactly these Secrets Manager secrets and SSM parameters, and pull from
    the environment's ECR repository (``GetAuthorizationToken`` has no resource scope in IAM)."""
    secrets = sorted(a for a in arns if ":secretsmanager:" in a)
    parameters = sorted(a for a in arns if ":ssm:" in a)
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": secrets}
    ]
    if parameters:
        statements.append({"Effect": "Allow", "Action": ["ssm:GetParameters"], "Resource": parameters})
    if ecr is not None:
        statements.append({"Effect": "Allow", "Action": ECR_PULL_ACTIONS, "Resource": [ecr.arn]})
        statements.append({"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": ["*"]})
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def _assume_role_policy() -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        }
    )


def container_definitions(
    job: EcsJob, run: RunContext, secret_arns: dict[str, str], log_group: str, registry_secret: str | None = None
) -> str:
    """The task's container definitions as ECS takes them: the runner first, secrets only as ``valueFrom``.

    ``registry_secret``: the Secrets Manager ARN of the pool registry's credentials (a private registry
    other than ECR), given to ECS as the runner's ``repositoryCredentials``.
    """
    containers = json.loads(json.dumps(job.task_definition["containerDefinitions"]))
    runner = containers[0]
    runner["command"] = runner_command(run.storage_url, job.python, fanout=run.fanout)
    if run.image:  # the call's environment, pushed to the pool's registry: pulled by digest
        runner["image"] = run.image
    if registry_secret:
        runner["repositoryCredentials"] = {"credentialsParameter": registry_secret}
    plain = {name: value for name, value in job.env.items() if not isinstance(value, Secret)}
    plain[STORAGE_OPTIONS_ENV] = json.dumps(run.storage_options, sort_keys=True)
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


def _nested_args(value: Any) -> Any:
    if isinstance(value, dict):
        return {_NESTED_FIELDS.get(k, k): _nested_args(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nested_args(v) for v in value]
    return value


def task_definition_args(job: EcsJob) -> dict[str, Any]:
    """``aws.ecs.TaskDefinition`` arguments from the RegisterTaskDefinition-shaped template (containers apart)."""
    args: dict[str, Any] = {}
    for field, arg in TASK_DEFINITION_FIELDS.items():
        value = job.task_definition.get(field)
        if field == "containerDefinitions" or value in (None, {}, []):
            continue
        args[arg] = str(value) if field in ("cpu", "memory") else _nested_args(value)
    return args


# -- launching and stopping the task --------------------------------------------------------


def _client(service: str, region: str) -> Any:
    return boto3.client(service, region_name=region)


def _describe_failure(failure: dict[str, Any]) -> str:
    """One entry of RunTask's ``failures``, with what it usually means."""
    reason = str(failure.get("reason"))
    text = f"{reason}: {failure['detail']}" if failure.get("detail") else reason
    return f"{text} ({_PLACEMENT_HINTS[reason]})" if reason in _PLACEMENT_HINTS else text


def run_task(
    ecs: Any, props: dict[str, Any], retry_seconds: float = ROLE_PROPAGATION_SECONDS, poll_seconds: float = POLL_SECONDS
) -> dict[str, Any]:
    """``run_task`` for the run; a task ECS could not place is an error naming the reason and the fix.

    IAM is eventually consistent: for a few seconds after the roles are created
    RunTask may answer that ECS cannot assume them, so that answer is retried.
    """
    request: dict[str, Any] = {
        "cluster": props["cluster"],
        "taskDefinition": props["task_definition_arn"],
        "launchType": props["launch_type"],
        "count": int(props.get("count") or 1),
        "startedBy": "toolkit",
        "enableECSManagedTags": True,
        "tags": [{"key": k, "value": v} for k, v in sorted(props["tags"].items())],
    }
    if props.get("platform_version"):
        request["platformVersion"] = props["platform_version"]
    if props.get("subnets"):
        request["networkConfiguration"] = {
            "awsvpcConfiguration": {
                "subnets": props["subnets"],
                "securityGroups": props.get("security_groups") or [],
                "assignPublicIp": "ENABLED" if props.get("assign_public_ip") else "DISABLED",
            }
        }
    deadline = time.monotonic() + retry_seconds
    while True:
        try:
            response = ecs.run_task(**request)
            break
        except ClientError as exc:
            error = exc.response.get("Error", {})
            propagating = "unable to assume the role" in str(error.get("Message"))
            if propagating and time.monotonic() < deadline:
                time.sleep(poll_seconds)
                continue
            raise ProvisionError(
                f"ECS refused to run the task on cluster {props['cluster']!r}: {error.get('Code')}: "
                f"{error.get('Message')}. Check the cluster name, subnets and security groups of the pool"
            ) from None
    tasks, failures = response.get("tasks") or [], response.get("failures") or []
    if not tasks:
        reasons = "; ".join(_describe_failure(failure) for failure in failures)
        raise ProvisionError(
            f"ECS could not start the task on cluster {props['cluster']!r}: "
            f"{reasons or 'no task was placed and ECS gave no reason'}. Add capacity to the cluster or "
            "lower cpu/memory"
        )
    task = tasks[0]
    return {
        "task_arn": task["taskArn"],
        "task_arns": [started["taskArn"] for started in tasks],
        "cluster_arn": task.get("clusterArn", props["cluster"]),
        "failures": "; ".join(_describe_failure(failure) for failure in failures),
    }


RUN_TASK_MAX_COUNT = 10
"""The most tasks one RunTask call starts."""


def run_tasks(ecs: Any, props: dict[str, Any], count: int, poll_seconds: float = POLL_SECONDS) -> dict[str, Any]:
    """A map's ``count`` worker tasks, started by RunTask calls of at most ten tasks each.

    ECS gives tasks started together no index, so each task claims items from run
    storage (conditional writes); a batch ECS could place only partly stops what
    was started and fails, since a failed create leaves nothing in the stack to destroy.
    """
    arns: list[str] = []
    started: dict[str, Any] = {}
    try:
        while len(arns) < count:
            batch = min(RUN_TASK_MAX_COUNT, count - len(arns))
            started = run_task(ecs, {**props, "count": batch}, poll_seconds=poll_seconds)
            arns += started["task_arns"]
            if len(started["task_arns"]) < batch:
                raise ProvisionError(
                    f"ECS started only {len(arns)} of the map's {count} tasks on cluster {props['cluster']!r}: "
                    f"{started['failures'] or 'no reason given'}. Add capacity to the cluster or lower max_parallel"
                )
    except BaseException:
        for arn in arns:
            stop_task(ecs, props["cluster"], arn, 0, poll_seconds)
        raise
    return {"task_arn": arns[0], "task_arns": arns, "cluster_arn": started["cluster_arn"]}


def stop_task(ecs: Any, cluster: str, task_arn: str, wait_seconds: float, poll_seconds: float) -> None:
    """Stop the task and wait until ECS reports it STOPPED (or ``wait_seconds`` pass)."""
    try:
        ecs.stop_task(cluster=cluster, task=task_arn, reason="toolkit: the run's stack is being destroyed")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("InvalidParameterException", "ClusterNotFoundException"):
            return  # the task (or its cluster) is already gone
        raise
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        tasks = ecs.describe_tasks(cluster=cluster, tasks=[task_arn]).get("tasks") or []
        if not tasks or tasks[0].get("lastStatus") == "STOPPED":
            return
        time.sleep(poll_seconds)


class _EcsTaskProvider(ResourceProvider):
    """Runs the task on create; stops it and waits for STOPPED on delete."""

    def __init__(self, wait_seconds: float = STOP_WAIT_SECONDS, poll_seconds: float = POLL_SECONDS) -> None:
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds

    def create(self, props: dict[str, Any]) -> CreateResult:
        ecs = _client("ecs", props["region"])
        count = int(props.get("count") or 1)
        if count == 1:
            started = run_task(ecs, props, poll_seconds=self.poll_seconds)
        else:
            started = run_tasks(ecs, props, count, poll_seconds=self.poll_seconds)
        started.pop("failures", None)
        return CreateResult(id_=started["task_arn"], outs={**props, **started})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        ecs = _client("ecs", props["region"])
        for arn in props.get("task_arns") or [props["task_arn"]]:
            stop_task(ecs, props["cluster"], arn, self.wait_seconds, self.poll_seconds)


class EcsTask(Resource, module="toolkit", name="EcsTask"):
    """The ECS task of the run's task definition; for a map, ``count`` worker tasks."""

    task_arn: pulumi.Output[str]
    task_arns: pulumi.Output[list[str]]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        outputs = {"task_arn": None, "task_arns": None, "cluster_arn": None}
        super().__init__(_EcsTaskProvider(), name, {**props, **outputs}, opts)


# -- watching --------------------------------------------------------------------------------


def task_status(task: dict[str, Any] | None, container: str) -> JobStatus:
    """The run's state from one ``describe_tasks`` entry (None: ECS no longer knows the task)."""
    if task is None:
        return JobStatus(state="failed", reason="ECS no longer knows the task (it stopped long ago or was deleted)")
    runner = next((c for c in task.get("containers", []) if c.get("name") == container), {})
    exited = runner.get("lastStatus") == "STOPPED" and runner.get("exitCode") is not None
    if not exited and task.get("lastStatus") != "STOPPED":
        return JobStatus(state="pending" if task.get("lastStatus") in _STARTING else "running")
    code = runner.get("exitCode")
    if code == 0:
        return JobStatus(state="succeeded", exit_code=0)
    causes = [text for text in (runner.get("reason"), task.get("stoppedReason")) if text]
    hints = [hint for key, hint in _START_FAILURE_HINTS.items() if any(key in text for text in causes)]
    if task.get("stopCode") == "TaskFailedToStart":
        what = "the task failed to start"
    elif code is None:
        what = "the task stopped before its container exited"
    else:
        what = f"the container exited with code {code}"
    detail = f" ({'; '.join(causes)})" if causes else ""
    return JobStatus(state="failed", exit_code=code, reason=what + detail + (f"; {'; '.join(hints)}" if hints else ""))


class EcsWatcher(JobWatcher):
    """Follows one task through ``describe_tasks`` and its CloudWatch log stream."""

    def __init__(self, ecs: Any, logs: Any, cluster: str, task_arn: str, container: str, log_group: str | None) -> None:
        self._ecs = ecs
        self._logs = logs
        self._cluster = cluster
        self._task_arn = task_arn
        self._container = container
        self._log_group = log_group
        task_id = task_arn.rsplit("/", 1)[-1]
        self._log_stream = f"{LOG_STREAM_PREFIX}/{container}/{task_id}"
        self._token: str | None = None

    def status(self) -> JobStatus:
        response = self._ecs.describe_tasks(cluster=self._cluster, tasks=[self._task_arn])
        tasks = response.get("tasks") or []
        return task_status(tasks[0] if tasks else None, self._container)

    def read_logs(self) -> str:
        if not self._log_group:
            return ""
        lines: list[str] = []
        while True:
            request = {"logGroupName": self._log_group, "logStreamName": self._log_stream, "startFromHead": True}
            if self._token:
                request["nextToken"] = self._token
            try:
                page = self._logs.get_log_events(**request)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                    return "".join(lines)  # the container has not started logging yet
                raise
            lines.extend(event["message"].rstrip("\n") + "\n" for event in page.get("events", []))
            token = page.get("nextForwardToken")
            if token == self._token or not page.get("events"):
                self._token = token or self._token
                return "".join(lines)
            self._token = token


# -- the target ---------------------------------------------------------------------------------


class EcsTarget(Target):
    """Run the function as an Amazon ECS task."""

    name = "ecs"
    plugin_packages = ("pulumi_aws",)
    synonyms = {
        **PREFECT_COMMON,
        **prefect_retries(),
        "cpu": renamed("cpu", "ECS CPU units (1024 = 1 vCPU); '1 vCPU' is accepted too", ecs_cpu_units),
        "memory": renamed("memory", "MiB, as ECS counts it; '2 GB' is accepted too", ecs_memory_mib),
        "labels": renamed("tags", "tags on the task and every resource of the run"),
        "prefect_api_key_secret_arn": Synonym(
            "secrets", "becomes secrets={'PREFECT_API_KEY': ARN}", into_mapping("PREFECT_API_KEY")
        ),
        "prefect_api_auth_string_secret_arn": Synonym(
            "secrets", "becomes secrets={'PREFECT_API_AUTH_STRING': ARN}", into_mapping("PREFECT_API_AUTH_STRING")
        ),
        "aws_credentials": no_counterpart(
            "a Prefect block; credentials come from the caller's AWS environment (profile, role, AWS_* variables)"
        ),
        "task_definition_arn": no_counterpart(
            "every run registers its own task definition from the variables; use customizations for other fields"
        ),
        "family": no_counterpart("task definition families are named per run"),
        "capacity_provider_strategy": no_counterpart("choose launch_type ('FARGATE' or 'EC2')"),
        "container_name": no_counterpart("the task's one container is named by the toolkit"),
        "vpc_id": no_counterpart("give the task's subnets and security_groups"),
        "network_configuration": no_counterpart("use subnets, security_groups and assign_public_ip"),
        "configure_cloudwatch_logs": no_counterpart("the job's output always goes to CloudWatch (log_group)"),
        "cloudwatch_logs_options": no_counterpart("logs go to log_group, kept log_retention_days"),
        "cloudwatch_logs_prefix": no_counterpart("logs go to log_group, kept log_retention_days"),
        "auto_deregister_task_definition": no_counterpart("a run's task definition is always deregistered at teardown"),
        "match_latest_revision_in_family": no_counterpart("every run registers its own task definition"),
    }
    extra = "aws"
    variables_model = EcsVariables
    job_model = EcsJob
    customization_root = "/task_definition"
    required = ("image",)
    storage_schemes = ("s3",)
    unsupported = {}
    environment = "image"
    images_from_registry = True

    def environment_base(self, job: JobConfiguration) -> str | None:
        assert isinstance(job, EcsJob)
        return job.task_definition["containerDefinitions"][0].get("image")

    def check_image_registry(self, registry: ImageRegistry, job: JobConfiguration, pool_name: str) -> None:
        refuse_loopback(registry, self.name, pool_name)

    @classmethod
    def default_job_configuration(cls) -> dict[str, Any]:
        return {
            **placeholders(
                "region",
                "cluster",
                "launch_type",
                "gpu",
                "subnets",
                "security_groups",
                "assign_public_ip",
                "platform_version",
                "task_role_arn",
                "execution_role_arn",
                "log_group",
                "log_retention_days",
                "env",
                "secrets",
                "tags",
                "python",
            ),
            "task_definition": {
                "family": "toolkit-{{ run_id }}",
                "cpu": "{{ cpu }}",
                "memory": "{{ memory }}",
                "networkMode": "{{ network_mode }}",
                "requiresCompatibilities": ["{{ launch_type }}"],
                "runtimePlatform": {"cpuArchitecture": "{{ cpu_architecture }}", "operatingSystemFamily": "LINUX"},
                "ephemeralStorage": {"sizeInGiB": "{{ ephemeral_storage }}"},
                "containerDefinitions": [
                    {
                        "name": "runner",
                        "image": "{{ image }}",
                        "essential": True,
                        "cpu": "{{ cpu }}",
                        "memory": "{{ memory }}",
                    }
                ],
            },
        }

    @classmethod
    def check_capabilities(cls, variables: dict[str, Any], pool_name: str) -> None:
        super().check_capabilities(variables, pool_name)
        if variables.get("network_mode", "awsvpc") == "awsvpc" and not variables.get("subnets"):
            raise ConfigError(
                f"pool {pool_name!r} (ecs) runs tasks in 'awsvpc' network mode, which needs the job variable "
                "'subnets' (subnet IDs of the cluster's VPC). Set it in the pool's template or pass subnets=[...]"
            )

    def per_run_storage_url(self, run_id: str) -> str:
        return f"s3://{bucket_name(run_id)}"

    def program(self, run: RunContext) -> None:
        job = run.job
        assert isinstance(job, EcsJob)
        prefix = f"toolkit-{run.run_id}"
        provider = aws.Provider("aws", region=job.region, default_tags={"tags": {**job.tags, **run.labels}})
        opts = pulumi.ResourceOptions(provider=provider)
        needs: list[pulumi.Resource] = self._storage(run, opts)

        secret_arns: dict[str, pulumi.Output[str]] = {}
        values = {RUN_KEY_ENV: run.run_key, **{k: v.reveal() for k, v in job.env.items() if isinstance(v, Secret)}}
        for env_name, value in values.items():
            logical = f"secret-{env_name}"
            secret = aws.secretsmanager.Secret(
                logical, name=f"toolkit/{run.run_id}/{env_name}", recovery_window_in_days=0, opts=opts
            )
            needs.append(
                aws.secretsmanager.SecretVersion(
                    f"{logical}-value", secret_id=secret.id, secret_string=pulumi.Output.secret(value), opts=opts
                )
            )
            secret_arns[env_name] = secret.arn

        registry = run.image_registry
        ecr = registry.ecr() if registry else None
        registry_secret: pulumi.Output[str] | None = None
        if registry is not None and registry.has_credentials and ecr is None:
            registry_secret = self._registry_credentials(run, registry, opts, needs)
        extra = [registry_secret] if registry_secret is not None else []
        readable = pulumi.Output.all(*secret_arns.values(), *extra).apply(lambda arns: [*arns, *job.secrets.values()])
        _, task_role = self._role(
            "task-role", job.task_role_arn, f"{prefix}-task", json.dumps(storage_policy(run, job.region)), opts, needs
        )
        execution_role_name, execution_role = self._role(
            "execution-role",
            job.execution_role_arn,
            f"{prefix}-execution",
            readable.apply(lambda arns: execution_policy(arns, ecr)),
            opts,
            needs,
        )
        if job.execution_role_arn is None:
            needs.append(
                aws.iam.RolePolicyAttachment(
                    "execution-role-ecs",
                    role=execution_role_name,
                    policy_arn=f"arn:{partition(job.region)}:iam::aws:{EXECUTION_POLICY}",
                    opts=opts,
                )
            )

        log_group = job.log_group or f"/toolkit/runs/{run.run_id}"
        if job.log_group is None:
            needs.append(
                aws.cloudwatch.LogGroup(
                    "log-group", name=log_group, retention_in_days=job.log_retention_days, opts=opts
                )
            )
        names = list(secret_arns)
        definitions = pulumi.Output.all(*secret_arns.values(), *extra).apply(
            lambda arns: container_definitions(
                job, run, dict(zip(names, arns)), log_group, arns[len(names)] if extra else None
            )
        )
        task_definition = aws.ecs.TaskDefinition(
            "task-definition",
            container_definitions=definitions,
            task_role_arn=task_role,
            execution_role_arn=execution_role,
            **task_definition_args(job),
            opts=opts,
        )
        task = EcsTask(
            "task",
            {
                "region": job.region,
                "cluster": job.cluster,
                "task_definition_arn": task_definition.arn,
                "launch_type": job.launch_type,
                "platform_version": job.platform_version,
                "subnets": job.subnets,
                "security_groups": job.security_groups,
                "assign_public_ip": job.assign_public_ip,
                "tags": {**job.tags, **run.labels},
                **({"count": run.fanout.parallelism} if run.fanout else {}),  # a map: workers claiming items
            },
            # ECS has no retry of its own for run-task: a new attempt (toolkit.retries) runs a new task
            opts=pulumi.ResourceOptions(depends_on=[task_definition, *needs], replacement_trigger=run.attempt),
        )
        pulumi.export("region", job.region)
        pulumi.export("cluster", job.cluster)
        pulumi.export("task_arn", task.task_arn)
        if run.fanout:
            pulumi.export("task_arns", task.task_arns)
        pulumi.export("container", job.task_definition["containerDefinitions"][0].get("name", "runner"))
        uses_awslogs = "logConfiguration" not in job.task_definition["containerDefinitions"][0]
        pulumi.export("log_group", log_group if uses_awslogs else "")

    @staticmethod
    def _storage(run: RunContext, opts: pulumi.ResourceOptions) -> list[pulumi.Resource]:
        """The bundle (and include_files archive) in the run's bucket (made here) or in the pool's shared prefix."""
        if run.shared_storage:
            return [RunStorage.of_run("run-storage", run)]
        bucket = aws.s3.Bucket("bucket", bucket=bucket_name(run.run_id), force_destroy=True, opts=opts)
        aws.s3.BucketPublicAccessBlock(
            "bucket-public-access-block",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=opts,
        )
        objects = {BUNDLE_NAME: run.bundle_path, FILES_NAME: run.files_path}
        uploads: list[pulumi.Resource] = [
            aws.s3.BucketObjectv2(
                "bundle" if key == BUNDLE_NAME else "files", bucket=bucket.id, key=key,
                source=pulumi.FileAsset(str(path)), opts=opts,
            )
            for key, path in objects.items()
            if path is not None
        ]
        return uploads + item_uploads(run, bucket)

    @staticmethod
    def _registry_credentials(
        run: RunContext, registry: ImageRegistry, opts: pulumi.ResourceOptions, needs: list[pulumi.Resource]
    ) -> pulumi.Output[str]:
        """The pool registry's credentials as a Secrets Manager secret, in the shape ``repositoryCredentials``
        reads; the execution role may read it (and only this run's)."""
        secret = aws.secretsmanager.Secret(
            "registry-credentials", name=f"toolkit/{run.run_id}/registry", recovery_window_in_days=0, opts=opts
        )
        value = json.dumps({"username": registry.username, "password": registry.password()})
        needs.append(
            aws.secretsmanager.SecretVersion(
                "registry-credentials-value", secret_id=secret.id, secret_string=pulumi.Output.secret(value), opts=opts
            )
        )
        return secret.arn

    @staticmethod
    def _role(
        logical: str,
        existing_arn: str | None,
        name: str,
        policy: str | pulumi.Output[str],
        opts: pulumi.ResourceOptions,
        needs: list[pulumi.Resource],
    ) -> tuple[pulumi.Input[str], pulumi.Input[str]]:
        """``(name, arn)`` of a per-run role with ``policy`` inline, or of an existing role given ``policy`` for the run."""
        if existing_arn:
            role_name: pulumi.Input[str] = existing_arn.rsplit("/", 1)[-1]
            arn: pulumi.Input[str] = existing_arn
            policy_name = f"{name}-run"
        else:
            role = aws.iam.Role(logical, name=name, assume_role_policy=_assume_role_policy(), opts=opts)
            role_name, arn, policy_name = role.name, role.arn, "run"
        needs.append(
            aws.iam.RolePolicy(f"{logical}-policy", name=policy_name, role=role_name, policy=policy, opts=opts)
        )
        return role_name, arn

    def watcher(self, run: RunContext, outputs: dict[str, Any]) -> JobWatcher:
        region = outputs["region"]
        ecs, logs = _client("ecs", region), _client("logs", region)
        watchers = [
            EcsWatcher(ecs, logs, outputs["cluster"], arn, outputs["container"], outputs["log_group"] or None)
            for arn in (outputs["task_arns"] if run.fanout else [outputs["task_arn"]])
        ]
        return WorkersWatcher(watchers) if run.fanout else watchers[0]
