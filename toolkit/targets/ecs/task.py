"""The task itself: a dynamic resource over boto3 (create runs the task, delete stops it and waits).

ECS has no retry of its own for run-task: a new attempt (``toolkit.retries``) runs
a new task. A map's workers are ``count`` tasks, started by RunTask calls of at
most ten; none gets an index, each claims items from run storage.
"""

from __future__ import annotations

import time
from typing import Any

import boto3
import pulumi
from botocore.exceptions import ClientError
from pulumi.dynamic import CreateResult, Resource, ResourceProvider

from toolkit.errors import ProvisionError

STOP_WAIT_SECONDS = 300.0
POLL_SECONDS = 3.0
ROLE_PROPAGATION_SECONDS = 60.0
"""How long ``run_task`` retries while ECS cannot yet assume a role IAM has just created."""

_PLACEMENT_HINTS = {
    "RESOURCE:MEMORY": "no container instance has enough free memory; lower 'memory' or add capacity",
    "RESOURCE:CPU": "no container instance has enough free CPU; lower 'cpu' or add capacity",
    "RESOURCE:GPU": "no container instance has a free GPU; add GPU capacity to the cluster",
    "AGENT": "the ECS agent of the container instances is disconnected",
    "ATTRIBUTE": "no container instance matches the task's requirements (cpu_architecture, GPU, placement)",
    "MISSING": "the cluster or task definition does not exist",
}


def client(service: str, region: str) -> Any:
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
        ecs = client("ecs", props["region"])
        count = int(props.get("count") or 1)
        if count == 1:
            started = run_task(ecs, props, poll_seconds=self.poll_seconds)
        else:
            started = run_tasks(ecs, props, count, poll_seconds=self.poll_seconds)
        started.pop("failures", None)
        return CreateResult(id_=started["task_arn"], outs={**props, **started})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        ecs = client("ecs", props["region"])
        for arn in props.get("task_arns") or [props["task_arn"]]:
            stop_task(ecs, props["cluster"], arn, self.wait_seconds, self.poll_seconds)


class EcsTask(Resource, module="toolkit", name="EcsTask"):
    """The ECS task of the run's task definition; for a map, ``count`` worker tasks."""

    task_arn: pulumi.Output[str]
    task_arns: pulumi.Output[list[str]]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        outputs = {"task_arn": None, "task_arns": None, "cluster_arn": None}
        super().__init__(_EcsTaskProvider(), name, {**props, **outputs}, opts)
