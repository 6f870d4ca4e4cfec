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

from typing import Any

import pulumi
import pulumi_aws as aws
from botocore.exceptions import ClientError

from toolkit.errors import ConfigError
from toolkit.infra.base import Target, placeholders
from toolkit.infra.flow import JobParts, Platform
from toolkit.infra.image_registry import ImageRegistry
from toolkit.infra.pulling import refuse_loopback
from toolkit.infra.run import JobConfiguration, RunContext
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
from toolkit.infra.watch import JobStatus, JobWatcher
from toolkit.targets.aws import AwsPlatform, bucket_name, partition
from toolkit.targets.ecs.definition import (
    LOG_STREAM_PREFIX,
    container_definitions,
    execution_policy,
    task_definition_args,
)
from toolkit.targets.ecs.models import EcsJob, EcsVariables
from toolkit.targets.ecs.task import EcsTask, client

EXECUTION_POLICY = "policy/service-role/AmazonECSTaskExecutionRolePolicy"

_STARTING = ("PROVISIONING", "PENDING", "ACTIVATING")
"""Task states before the container runs; later ones (DEACTIVATING ...) follow a running container."""

_START_FAILURE_HINTS = {
    "CannotPullContainerError": "check the image name, that the execution role may pull it, and that the "
    "subnets reach the registry (assign_public_ip=True or a NAT gateway)",
    "ResourceInitializationError": "the execution role could not read a secret or create the log stream, or "
    "the subnets cannot reach Secrets Manager and CloudWatch Logs",
    "OutOfMemoryError": "raise the 'memory' job variable",
}


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
    signed_storage = True
    environment = "image"
    images_from_registry = True

    def check_image_registry(self, registry: ImageRegistry, job: JobConfiguration, pool_name: str) -> None:
        refuse_loopback(registry, self.name, pool_name)

    @classmethod
    def default_job_configuration(cls) -> dict[str, Any]:
        return {
            **placeholders(
                "region", "cluster", "launch_type", "gpu", "subnets", "security_groups", "assign_public_ip",
                "platform_version", "task_role_arn", "execution_role_arn", "log_group", "log_retention_days",
                "env", "secrets", "tags", "python",
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

    def platform(self, run: RunContext) -> Platform:
        job = run.job
        assert isinstance(job, EcsJob)
        return AwsPlatform(run, job.region, {**job.tags, **run.labels}, job.task_role_arn, "ecs-tasks.amazonaws.com")

    def job(self, run: RunContext, parts: JobParts) -> dict[str, Any]:
        """The execution role (the run's secrets and image, nothing else), the log group, the task definition
        and the task: one, or for a map ``fanout.parallelism`` workers claiming items."""
        job = run.job
        platform = parts.platform
        assert isinstance(job, EcsJob) and isinstance(platform, AwsPlatform)
        pull = parts.pull or {}
        extra = [pull["secret"]] if "secret" in pull else []
        execution_role_arn, needs = _execution_role(job, parts, platform, extra)
        log_group = job.log_group or f"/toolkit/runs/{run.run_id}"
        if job.log_group is None:
            needs.append(
                aws.cloudwatch.LogGroup(
                    "log-group", name=log_group, retention_in_days=job.log_retention_days, opts=platform.opts
                )
            )
        names = list(parts.secrets)
        definitions = pulumi.Output.all(*parts.secrets.values(), *extra).apply(
            lambda arns: container_definitions(
                job, parts, dict(zip(names, arns)), log_group, arns[len(names)] if extra else None
            )
        )
        task_definition = aws.ecs.TaskDefinition(
            "task-definition",
            container_definitions=definitions,
            task_role_arn=parts.identity,
            execution_role_arn=execution_role_arn,
            **task_definition_args(job),
            opts=platform.opts,
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
                **({"count": parts.form.workers} if run.fanout else {}),  # a map: workers claiming items
            },
            opts=parts.options(task_definition, *needs),
        )
        runner = job.task_definition["containerDefinitions"][0]
        exports = {"region": job.region, "cluster": job.cluster, "task_arn": task.task_arn}
        if run.fanout:
            exports["task_arns"] = task.task_arns
        uses_awslogs = "logConfiguration" not in runner
        return {**exports, "container": runner.get("name", "runner"), "log_group": log_group if uses_awslogs else ""}

    def watch(self, run: RunContext, outputs: dict[str, Any]) -> JobWatcher | list[JobWatcher]:
        region = outputs["region"]
        ecs, logs = client("ecs", region), client("logs", region)
        watchers: list[JobWatcher] = [
            EcsWatcher(ecs, logs, outputs["cluster"], arn, outputs["container"], outputs["log_group"] or None)
            for arn in (outputs["task_arns"] if run.fanout else [outputs["task_arn"]])
        ]
        return watchers if run.fanout else watchers[0]


def _execution_role(
    job: EcsJob, parts: JobParts, platform: AwsPlatform, extra: list[pulumi.Output[str]]
) -> tuple[pulumi.Input[str], list[pulumi.Resource]]:
    """The role ECS starts the task with: read exactly the run's secrets (``extra``: the registry's
    credentials) and those the job names, pull the image; ``(arn, what it needs)``."""
    pull = parts.pull or {}
    readable = pulumi.Output.all(*parts.secrets.values(), *extra).apply(lambda arns: [*arns, *job.secrets.values()])
    policy = readable.apply(lambda arns: execution_policy(arns, pull.get("statements", [])))
    role, arn, inline = platform.role("execution-role", job.execution_role_arn, f"{platform.prefix}-execution", policy)
    needs: list[pulumi.Resource] = [inline]
    if job.execution_role_arn is None:
        needs.append(
            aws.iam.RolePolicyAttachment(
                "execution-role-ecs",
                role=role,
                policy_arn=f"arn:{partition(job.region)}:iam::aws:{EXECUTION_POLICY}",
                opts=platform.opts,
            )
        )
    return arn, needs
