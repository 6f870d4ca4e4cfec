"""ECS target: conformance under mocks, the program's IAM and secrets, and launch/watch/storage on an AWS emulator.

Three kinds of evidence: the Pulumi program under ``set_mocks`` (what would be
created, with which inputs and which secrets); the boto3 launch, stop, watch
and S3 storage code against moto's server on loopback (``tests/emulators/aws.py``);
and, where moto cannot act like ECS (Fargate in ``awsvpc`` mode, placement
failures, recorded task failures), botocore's ``Stubber``, which checks every
request and response against the ECS API model.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import boto3
import fsspec
import pytest
from botocore.stub import Stubber

from tests.emulators.aws import CLUSTER, REGION, aws, aws_emulator, ecs_cluster, moto_api  # noqa: F401 - fixtures
from tests.infra.conformance import (
    DIGEST,
    RUN_KEY,
    SECRET_ENV,
    SECRET_VALUE,
    RemoteEnvironmentConformance,
    items_argument,
)
from tests.infra.mocking import ProgramRun, run_program
from tests.infra.storage_roundtrip import map_round_trip, round_trip
from toolkit.bundles import BUNDLE_NAME, RUN_KEY_ENV
from toolkit.errors import ConfigError, ProvisionError
from toolkit.infra.image_registry import ImageRegistry
from toolkit.infra.run import RunContext
from toolkit.storage_urls import URLS_ENV
from toolkit.targets.aws import ECR_PULL_ACTIONS
from toolkit.targets.ecs.target import EcsTarget, EcsWatcher, task_status
from toolkit.targets.ecs.task import _EcsTaskProvider, run_task

ACCOUNT = "123456789012"


def secret_arn(name: str) -> str:
    """As Secrets Manager names a secret: its name plus a random six-character suffix."""
    return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbCdEf"


SSM_ARN = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/ml/db-password"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/toolkit-run"
"""A role named in recorded ECS error messages."""
TASK_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/default/0f9e8d7c6b5a"
TASK = "pulumi-python:dynamic/toolkit:EcsTask"
TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"


def _containers(run: ProgramRun) -> list[dict[str, Any]]:
    return json.loads(run.one(TASK_DEFINITION).inputs["containerDefinitions"])


def _policy(run: ProgramRun, name: str) -> dict[str, Any]:
    return json.loads(next(r for r in run.of_type(ROLE_POLICY) if r.name == name).inputs["policy"])


def _run_task_outputs(count: int) -> dict[str, Any]:
    """A task ARN per task started, as run-task returns them (a map's workers are ``count`` tasks)."""
    arns = [TASK_ARN] + [f"{TASK_ARN}{number:02d}" for number in range(1, count)]
    return {"task_arn": arns[0], "task_arns": arns}


class TestEcsTarget(RemoteEnvironmentConformance):
    target_cls = EcsTarget
    pull_registry = {"url": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/ml"}
    sample_variables = {
        "image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/train:1",
        "cluster": "ml",
        "subnets": ["subnet-0a1b2c"],
        "security_groups": ["sg-0d1e2f"],
        "assign_public_ip": True,
        "cpu": 2048,
        "memory": 8192,
        "platform_version": "1.4.0",
        "ephemeral_storage": 50,
        "tags": {"team": "ml"},
        "env": {"MODE": "fast"},
        "secrets": {"DB_PASSWORD": SSM_ARN},
        "customizations": [
            {
                "op": "add",
                "path": "/containerDefinitions/0/ulimits",
                "value": [{"name": "nofile", "softLimit": 65536, "hardLimit": 65536}],
            }
        ],
    }
    mock_outputs = {
        # every role and secret gets its own ARN, so a job wired to the wrong one cannot pass
        "aws:iam/role:Role": lambda args: {"arn": f"arn:aws:iam::{ACCOUNT}:role/{args.inputs['name']}"},
        "aws:secretsmanager/secret:Secret": lambda args: {"arn": secret_arn(args.inputs["name"])},
        TASK_DEFINITION: {"arn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/toolkit-0123abcd4567:1"},
        TASK: lambda args: _run_task_outputs(int(args.inputs.get("count") or 1)),
    }
    job_type = TASK_DEFINITION
    shared_prefix_url = "s3://pool-bucket/runs"
    attempt_type = TASK
    expected_resources = {
        ("pulumi:providers:aws", "aws"),
        ("aws:s3/bucket:Bucket", "bucket"),
        ("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "bucket-public-access-block"),
        ("aws:s3/bucketObjectv2:BucketObjectv2", "bundle"),
        ("aws:secretsmanager/secret:Secret", f"secret-{SECRET_ENV}"),
        ("aws:secretsmanager/secret:Secret", "secret-TOOLKIT_RUN_KEY"),
        ("aws:secretsmanager/secretVersion:SecretVersion", f"secret-{SECRET_ENV}-value"),
        ("aws:secretsmanager/secretVersion:SecretVersion", "secret-TOOLKIT_RUN_KEY-value"),
        ("aws:iam/role:Role", "task-role"),
        ("aws:iam/rolePolicy:RolePolicy", "task-role-policy"),
        ("aws:iam/role:Role", "execution-role"),
        ("aws:iam/rolePolicy:RolePolicy", "execution-role-policy"),
        ("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "execution-role-ecs"),
        ("aws:cloudwatch/logGroup:LogGroup", "log-group"),
        (TASK_DEFINITION, "task-definition"),
        (TASK, "task"),
    }
    expected_exports = {
        "region": REGION,
        "cluster": "ml",
        "task_arn": TASK_ARN,
        "container": "runner",
        "log_group": "/toolkit/runs/0123abcd4567",
    }

    def program_on(self, url: str, *layers: dict[str, Any]) -> ProgramRun:
        """The program with the run's storage at a pool's shared ``url`` prefix."""
        context = dataclasses.replace(self.context(*layers), storage_url=url, shared_storage=True)
        return run_program(lambda: self.target.program(context), outputs=self.mock_outputs)

    def job_image(self, run: ProgramRun) -> str:
        return _containers(run)[0]["image"]

    def map_shape(self, run: ProgramRun) -> tuple[int, int]:
        task = run.one(TASK).inputs
        definition = run.one("aws:ecs/taskDefinition:TaskDefinition").inputs
        command = json.loads(definition["containerDefinitions"])[0]["command"]
        return items_argument(command), task["count"]

    def uploaded_names(self, run: ProgramRun) -> set[str]:
        return {r.inputs["key"] for r in run.of_type("aws:s3/bucketObjectv2:BucketObjectv2")}

    # -- pulling the environment image ------------------------------------------------------

    def test_the_execution_role_may_pull_from_exactly_the_environments_ecr_repository(self) -> None:
        statements = _policy(self.environment_program(self.sample()), "execution-role-policy")["Statement"]
        repository = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/ml/toolkit-env"
        assert {"Effect": "Allow", "Action": ECR_PULL_ACTIONS, "Resource": [repository]} in statements
        assert {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": ["*"]} in statements
        assert not any("ecr:" in str(s["Action"]) for s in _policy(self.program(self.sample()), "execution-role-policy")["Statement"])

    def test_an_existing_execution_role_gets_the_pull_permission_for_the_run(self) -> None:
        run = self.environment_program(self.sample(), {"execution_role_arn": ROLE_ARN})
        policy = next(r for r in run.of_type(ROLE_POLICY) if r.name == "execution-role-policy").inputs
        assert policy["role"] == "toolkit-run" and policy["name"] == f"toolkit-{self.run_id}-execution-run"
        assert any(s["Action"] == ECR_PULL_ACTIONS for s in json.loads(policy["policy"])["Statement"])

    def test_credentials_of_a_private_registry_become_repository_credentials(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("REGISTRY_TOKEN", "registry-password-never-in-plaintext")
        registry = ImageRegistry(url="registry.example.com/ml", username="robot", password_env="REGISTRY_TOKEN")
        context = dataclasses.replace(
            self.environment_context(self.sample()), image=f"{registry.repository}@{DIGEST}", image_registry=registry
        )
        run = run_program(lambda: self.target.program(context), outputs=self.mock_outputs)
        version = next(r for r in run.of_type("aws:secretsmanager/secretVersion:SecretVersion")
                       if r.name == "registry-credentials-value")
        assert json.loads(version.inputs["secretString"]) == {
            "username": "robot", "password": "registry-password-never-in-plaintext"
        }
        assert version.secret_paths() == {"secretString"}
        runner = _containers(run)[0]
        credentials = secret_arn(f"toolkit/{self.run_id}/registry")
        assert runner["repositoryCredentials"] == {"credentialsParameter": credentials}
        assert runner["image"] == f"registry.example.com/ml/toolkit-env@{DIGEST}"
        assert credentials in _policy(run, "execution-role-policy")["Statement"][0]["Resource"]  # may read it
        assert "registry-password-never-in-plaintext" not in json.dumps(run.one(TASK_DEFINITION).raw)

    # -- what the program creates ----------------------------------------------------------

    def test_overrides_reach_the_task_definition_and_the_launch(self) -> None:
        run = self.program(self.sample())
        definition = run.one(TASK_DEFINITION).inputs
        assert (definition["cpu"], definition["memory"]) == ("2048", "8192")
        assert definition["requiresCompatibilities"] == ["FARGATE"] and definition["networkMode"] == "awsvpc"
        assert definition["ephemeralStorage"] == {"sizeInGib": 50}
        runner = _containers(run)[0]
        assert runner["image"] == self.sample_variables["image"]
        assert (runner["cpu"], runner["memory"]) == (2048, 8192)
        assert runner["ulimits"] == [{"name": "nofile", "softLimit": 65536, "hardLimit": 65536}]
        assert runner["command"][-3:] == ["toolkit.runner", "--storage", f"s3://toolkit-run-{self.run_id}"]
        launch = run.one(TASK).inputs
        assert launch["cluster"] == "ml" and launch["launch_type"] == "FARGATE"
        assert launch["subnets"] == ["subnet-0a1b2c"] and launch["security_groups"] == ["sg-0d1e2f"]
        assert launch["assign_public_ip"] is True and launch["platform_version"] == "1.4.0"
        assert launch["tags"] == {"team": "ml", "toolkit-run": self.run_id, "toolkit-pool": "test-pool"}

    def test_gpus_go_to_the_container_on_ec2(self) -> None:
        ec2 = {"launch_type": "EC2", "gpu": 2, "platform_version": None, "ephemeral_storage": None}
        run = self.program(self.sample(), ec2)
        assert _containers(run)[0]["resourceRequirements"] == [{"type": "GPU", "value": "2"}]

    def test_per_run_bucket_is_private_force_destroyed_and_holds_the_bundle(self) -> None:
        run = self.program(self.sample())
        bucket = run.one("aws:s3/bucket:Bucket").inputs
        assert bucket["bucket"] == f"toolkit-run-{self.run_id}" and bucket["forceDestroy"] is True
        block = run.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
        assert all(
            block[k] is True
            for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
        )
        bundle = run.one("aws:s3/bucketObjectv2:BucketObjectv2").inputs
        assert bundle["key"] == BUNDLE_NAME and bundle["source"].path == "/tmp/toolkit-test-bundle.tkb"

    def test_task_role_may_use_the_run_bucket_and_nothing_else(self) -> None:
        run = self.program(self.sample())
        policy = _policy(run, "task-role-policy")
        resources = {arn for statement in policy["Statement"] for arn in statement["Resource"]}
        bucket = f"arn:aws:s3:::toolkit-run-{self.run_id}"
        assert resources == {bucket, f"{bucket}/*"}
        actions = {a for statement in policy["Statement"] for a in statement["Action"]}
        assert actions == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"}
        role = next(r for r in run.of_type("aws:iam/role:Role") if r.name == "task-role").inputs
        trust = json.loads(role["assumeRolePolicy"])["Statement"]
        assert trust == [
            {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ]

    def test_shared_prefix_storage_scopes_the_task_role_to_the_run_prefix(self) -> None:
        url = f"s3://pool-bucket/runs/{self.run_id}"
        run = self.program_on(url, self.sample())
        assert not run.of_type("aws:s3/bucket:Bucket")
        assert run.one("toolkit:index:RunStorage").inputs["url"] == url
        statements = _policy(run, "task-role-policy")["Statement"]
        assert statements[0]["Resource"] == [f"arn:aws:s3:::pool-bucket/runs/{self.run_id}/*"]
        assert statements[1]["Condition"] == {
            "StringLike": {"s3:prefix": [f"runs/{self.run_id}", f"runs/{self.run_id}/*"]}
        }

    def test_execution_role_reads_only_the_run_secrets_and_the_named_ones(self) -> None:
        run = self.program(self.sample())
        statements = _policy(run, "execution-role-policy")["Statement"]
        assert statements == [
            {
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue"],
                "Resource": [
                    secret_arn(f"toolkit/{self.run_id}/{SECRET_ENV}"),
                    secret_arn(f"toolkit/{self.run_id}/{RUN_KEY_ENV}"),
                ],
            },
            {"Effect": "Allow", "Action": ["ssm:GetParameters"], "Resource": [SSM_ARN]},
        ]
        definition = run.one(TASK_DEFINITION).inputs
        assert definition["taskRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/toolkit-{self.run_id}-task"
        assert definition["executionRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/toolkit-{self.run_id}-execution"
        managed = run.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment").inputs
        assert managed["policyArn"] == "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
        assert managed["role"] == f"toolkit-{self.run_id}-execution"

    def test_run_key_and_secret_env_reach_the_container_only_as_secret_references(self) -> None:
        run = self.program(self.sample())
        versions = run.of_type("aws:secretsmanager/secretVersion:SecretVersion")
        assert sorted(v.inputs["secretString"] for v in versions) == sorted([RUN_KEY, SECRET_VALUE])
        assert all(v.secret_paths() == {"secretString"} for v in versions)
        names = sorted(s.inputs["name"] for s in run.of_type("aws:secretsmanager/secret:Secret"))
        assert names == [f"toolkit/{self.run_id}/{SECRET_ENV}", f"toolkit/{self.run_id}/{RUN_KEY_ENV}"]
        assert all(s.inputs["recoveryWindowInDays"] == 0 for s in run.of_type("aws:secretsmanager/secret:Secret"))
        runner = _containers(run)[0]
        assert {s["name"]: s["valueFrom"] for s in runner["secrets"]} == {
            RUN_KEY_ENV: secret_arn(f"toolkit/{self.run_id}/{RUN_KEY_ENV}"),
            SECRET_ENV: secret_arn(f"toolkit/{self.run_id}/{SECRET_ENV}"),
            "DB_PASSWORD": SSM_ARN,
        }
        # each reference leads to the secret holding that variable's value
        secret_ids = {secret_arn(s.inputs["name"]): s.id for s in run.of_type("aws:secretsmanager/secret:Secret")}
        values = {v.inputs["secretId"]: v.inputs["secretString"] for v in versions}
        referenced = {s["name"]: values.get(secret_ids.get(s["valueFrom"])) for s in runner["secrets"]}
        assert referenced == {RUN_KEY_ENV: RUN_KEY, SECRET_ENV: SECRET_VALUE, "DB_PASSWORD": None}
        assert {e["name"] for e in runner["environment"]} == {"MODE", "TOOLKIT_STORAGE_OPTIONS"}
        definitions = run.one(TASK_DEFINITION).inputs["containerDefinitions"]
        assert RUN_KEY not in definitions and SECRET_VALUE not in definitions

    def test_existing_roles_get_run_scoped_policies_instead_of_new_roles(self) -> None:
        task_role = f"arn:aws:iam::{ACCOUNT}:role/ml/trainer"
        execution_role = f"arn:aws:iam::{ACCOUNT}:role/ecs-execution"
        run = self.program(self.sample(), {"task_role_arn": task_role, "execution_role_arn": execution_role})
        assert not run.of_type("aws:iam/role:Role") and not run.of_type(
            "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
        )
        definition = run.one(TASK_DEFINITION).inputs
        assert (definition["taskRoleArn"], definition["executionRoleArn"]) == (task_role, execution_role)
        policies = {r.inputs["role"]: r.inputs["name"] for r in run.of_type(ROLE_POLICY)}
        assert policies == {
            "trainer": f"toolkit-{self.run_id}-task-run",
            "ecs-execution": f"toolkit-{self.run_id}-execution-run",
        }

    def test_per_run_log_group_or_an_existing_one(self) -> None:
        run = self.program(self.sample())
        group = f"/toolkit/runs/{self.run_id}"
        assert run.one("aws:cloudwatch/logGroup:LogGroup").inputs == {"name": group, "retentionInDays": 7}
        options = _containers(run)[0]["logConfiguration"]["options"]
        assert options == {"awslogs-group": group, "awslogs-region": REGION, "awslogs-stream-prefix": "toolkit"}
        assert run.exports["log_group"] == group
        existing = self.program(self.sample(), {"log_group": "/ml/jobs"})
        assert not existing.of_type("aws:cloudwatch/logGroup:LogGroup") and existing.exports["log_group"] == "/ml/jobs"

    def test_provider_region_and_tags_apply_to_every_resource(self) -> None:
        provider = self.program(self.sample(), {"region": "eu-west-1"}).one("pulumi:providers:aws").inputs
        assert provider["region"] == "eu-west-1"
        assert json.loads(provider["defaultTags"]) == {
            "tags": {"team": "ml", "toolkit-run": self.run_id, "toolkit-pool": "test-pool"}
        }

    # -- bad input fails before anything is provisioned -------------------------------------

    @pytest.mark.parametrize(
        ("override", "variable"),
        [
            ({"launch_type": "LAMBDA"}, "launch_type"),
            ({"cpu": 64}, "cpu"),
            ({"memory": "lots"}, "memory"),
            ({"region": "mars"}, "region"),
            ({"ephemeral_storage": 500}, "ephemeral_storage"),
            ({"cpu_architecture": "RISCV"}, "cpu_architecture"),
            ({"subnets": "subnet-1"}, "subnets"),
        ],
    )
    def test_bad_overrides_fail_before_rendering(self, override: dict[str, Any], variable: str) -> None:
        with pytest.raises(ConfigError, match=f"job variable '{variable}'"):
            self.render(self.sample(), override)

    @pytest.mark.parametrize(
        ("override", "message"),
        [
            ({"cpu": 1024, "memory": 512}, "FARGATE memory for cpu 1024 must be 2048-8192 MiB"),
            ({"cpu": 3000}, "FARGATE cpu must be one of"),
            ({"network_mode": "bridge"}, "FARGATE tasks need network_mode 'awsvpc'"),
            ({"gpu": 1}, "FARGATE tasks cannot have GPUs"),
            ({"launch_type": "EC2", "ephemeral_storage": None}, "platform_version and ephemeral_storage apply to"),
            ({"launch_type": "EC2", "platform_version": None}, "platform_version and ephemeral_storage apply to"),
            ({"env": {RUN_KEY_ENV: "x"}}, "is set by the toolkit"),
            ({"env": {"DB_PASSWORD": "x"}}, "set in both env and secrets"),
            ({"customizations": [{"op": "add", "path": "/volumes", "value": []}]}, "not supported"),
        ],
    )
    def test_inconsistent_jobs_fail_before_provisioning(self, override: dict[str, Any], message: str) -> None:
        config, _ = self.render(self.sample(), override)
        with pytest.raises(ConfigError, match=message):
            self.target.parse_job(config, "test-pool")

    def test_secret_references_must_be_arns(self) -> None:
        with pytest.raises(ConfigError, match="'secrets.DB_PASSWORD'"):
            self.render(self.sample(), {"secrets": {"DB_PASSWORD": "db-password"}})

    def test_image_and_subnets_are_required_before_provisioning(self) -> None:
        _, variables = self.render({"subnets": ["subnet-1"]})
        with pytest.raises(ConfigError, match="needs the job variable 'image'"):
            self.target.check_capabilities(variables, "test-pool")
        _, variables = self.render({"image": "img"})
        with pytest.raises(ConfigError, match="needs the job variable 'subnets'"):
            self.target.check_capabilities(variables, "test-pool")
        _, variables = self.render({"image": "img", "launch_type": "EC2", "network_mode": "bridge"})
        self.target.check_capabilities(variables, "test-pool")

    def test_storage_is_a_per_run_bucket_or_an_s3_prefix(self) -> None:
        assert self.target.storage_url("abc", None) == ("s3://toolkit-run-abc", False)
        assert self.target.storage_url("abc", "s3://pool/runs") == ("s3://pool/runs/abc", True)
        with pytest.raises(ConfigError, match=r"cannot be reached by ecs jobs.*\(s3://\)"):
            self.target.storage_url("abc", "gs://pool/runs")


# -- launch, watch and stop against the emulator ------------------------------------------------


EC2_VARIABLES = {
    "image": "train:1",
    "launch_type": "EC2",
    "network_mode": "bridge",
    "cpu": 256,
    "memory": 512,
}


def _ec2_program(cluster: str) -> tuple[RunContext, ProgramRun]:
    suite = TestEcsTarget()
    context = suite.context({**EC2_VARIABLES, "cluster": cluster})
    return context, run_program(lambda: EcsTarget().program(context), outputs=TestEcsTarget.mock_outputs)


def _register(run: ProgramRun) -> str:
    """Register the program's task definition with the emulator, as ``aws.ecs.TaskDefinition`` would."""
    inputs = run.one(TASK_DEFINITION).inputs
    fields = ("family", "cpu", "memory", "networkMode", "requiresCompatibilities", "runtimePlatform")
    request = {field: inputs[field] for field in fields}
    request.update(
        containerDefinitions=json.loads(inputs["containerDefinitions"]),
        taskRoleArn=inputs["taskRoleArn"],
        executionRoleArn=inputs["executionRoleArn"],
    )
    ecs = boto3.client("ecs", region_name=REGION)
    return ecs.register_task_definition(**request)["taskDefinition"]["taskDefinitionArn"]


def _launch_props(run: ProgramRun, task_definition_arn: str) -> dict[str, Any]:
    props = {k: v for k, v in run.one(TASK).inputs.items() if k not in ("__provider", "task_arn", "cluster_arn")}
    return {**props, "task_definition_arn": task_definition_arn}


@pytest.mark.usefixtures("ecs_cluster")
def test_rendered_task_definition_registers_with_ecs() -> None:
    _, run = _ec2_program(CLUSTER)
    arn = _register(run)
    described = boto3.client("ecs", region_name=REGION).describe_task_definition(taskDefinition=arn)["taskDefinition"]
    runner = described["containerDefinitions"][0]
    assert {s["name"] for s in runner["secrets"]} == {RUN_KEY_ENV, URLS_ENV}  # the emulator's credentials sign
    assert runner["logConfiguration"]["logDriver"] == "awslogs"


@pytest.mark.usefixtures("ecs_cluster")
def test_task_is_launched_watched_to_completion_and_its_logs_streamed() -> None:
    context, run = _ec2_program(CLUSTER)
    provider = _EcsTaskProvider(wait_seconds=5, poll_seconds=0.01)
    # moto advances a task one lifecycle step per describe: RUNNING -> ... -> STOPPED.
    moto_api(
        "state-manager/set-transition", {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1}}
    )
    created = provider.create(_launch_props(run, _register(run)))
    task_arn = created.outs["task_arn"]
    ecs = boto3.client("ecs", region_name=REGION)
    task = ecs.describe_tasks(cluster=CLUSTER, tasks=[task_arn], include=["TAGS"])["tasks"][0]
    assert {t["key"]: t["value"] for t in task["tags"]}["toolkit-run"] == context.run_id
    assert task["startedBy"] == "toolkit"

    outputs = {
        "region": REGION,
        "cluster": CLUSTER,
        "task_arn": task_arn,
        "container": "runner",
        "log_group": run.exports["log_group"],
    }
    watcher = EcsTarget().watcher(context, outputs)
    assert watcher.read_logs() == ""  # no stream yet: the container has not logged
    logs = boto3.client("logs", region_name=REGION)
    stream = f"toolkit/runner/{task_arn.rsplit('/', 1)[-1]}"
    logs.create_log_group(logGroupName=outputs["log_group"])
    logs.create_log_stream(logGroupName=outputs["log_group"], logStreamName=stream)
    now = int(time.time() * 1000)
    events = [{"timestamp": now, "message": "epoch 1"}, {"timestamp": now + 1, "message": "epoch 2"}]
    logs.put_log_events(logGroupName=outputs["log_group"], logStreamName=stream, logEvents=events)
    assert watcher.read_logs() == "epoch 1\nepoch 2\n"
    assert watcher.read_logs() == ""
    logs.put_log_events(
        logGroupName=outputs["log_group"], logStreamName=stream, logEvents=[{"timestamp": now + 2, "message": "done"}]
    )
    assert watcher.read_logs() == "done\n"

    states = [watcher.status().state for _ in range(6)]
    finished = states.index("succeeded")
    assert finished >= 1 and set(states[:finished]) == {"running"} and set(states[finished:]) == {"succeeded"}


@pytest.mark.usefixtures("ecs_cluster")
def test_destroy_stops_a_running_task_and_waits_for_it() -> None:
    _, run = _ec2_program(CLUSTER)
    moto_api(
        "state-manager/set-transition",
        {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1000}},
    )
    provider = _EcsTaskProvider(wait_seconds=5, poll_seconds=0.01)
    created = provider.create(_launch_props(run, _register(run)))
    provider.delete(created.id, created.outs)
    task = boto3.client("ecs", region_name=REGION).describe_tasks(cluster=CLUSTER, tasks=[created.id])["tasks"][0]
    assert task["lastStatus"] == "STOPPED" and "stack is being destroyed" in task["stoppedReason"]
    provider.delete(created.id, created.outs)  # a second destroy of a stopped task is harmless


@pytest.mark.usefixtures("ecs_cluster")
def test_missing_cluster_fails_the_launch_with_its_name() -> None:
    _, run = _ec2_program(CLUSTER)
    props = {**_launch_props(run, _register(run)), "cluster": "no-such-cluster"}
    with pytest.raises(
        ProvisionError, match="ECS refused to run the task on cluster 'no-such-cluster': ClusterNotFoundException"
    ):
        _EcsTaskProvider(poll_seconds=0.01).create(props)


@pytest.mark.usefixtures("ecs_cluster")
def test_a_task_nothing_can_place_fails_the_launch() -> None:
    suite = TestEcsTarget()
    context = suite.context({**EC2_VARIABLES, "cluster": CLUSTER, "memory": 900_000})
    run = run_program(lambda: EcsTarget().program(context), outputs=TestEcsTarget.mock_outputs)
    with pytest.raises(ProvisionError, match="could not start the task on cluster 'toolkit-test': no task was placed"):
        _EcsTaskProvider(poll_seconds=0.01).create(_launch_props(run, _register(run)))


# -- the S3 storage path against the emulator -----------------------------------------------------


@pytest.mark.usefixtures("aws")
def test_bundle_and_result_travel_through_the_per_run_bucket() -> None:
    """The bundle object in ``s3://toolkit-run-<id>``, the runner in its own process, the result back."""
    url, shared = EcsTarget().storage_url("0123abcd4567", None)
    assert not shared
    bucket = url.removeprefix("s3://")
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=bucket)
    fs = fsspec.filesystem("s3")
    assert round_trip(url, {}, lambda bundle: fs.pipe_file(f"{bucket}/{BUNDLE_NAME}", bundle), "k" * 64) == 42


@pytest.mark.usefixtures("aws")
def test_a_maps_tasks_claim_each_item_once_through_s3_conditional_writes(tmp_path) -> None:
    """The map's items uploaded into the run's bucket, three runners claiming them at once (S3's
    If-None-Match), each result signed with its index and collected in order."""
    url, _ = EcsTarget().storage_url("0123abcd4567", None)
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=url.removeprefix("s3://"))
    results = map_round_trip(url, {}, "k" * 64, tmp_path)
    assert [value for value, _pid in results] == [x + 40 for x in range(12)]


# -- recorded ECS answers through botocore's Stubber -----------------------------------------------


def _stubbed(service: str) -> tuple[Any, Stubber]:
    client = boto3.client(service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    return client, Stubber(client)


FARGATE_PROPS = {
    "region": REGION,
    "cluster": "ml",
    "task_definition_arn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/toolkit-0123abcd4567:1",
    "launch_type": "FARGATE",
    "platform_version": "1.4.0",
    "subnets": ["subnet-0a1b2c"],
    "security_groups": ["sg-0d1e2f"],
    "assign_public_ip": True,
    "tags": {"toolkit-run": "0123abcd4567"},
}


def test_fargate_launch_request_is_valid_for_the_ecs_api() -> None:
    ecs, stub = _stubbed("ecs")
    expected = {
        "cluster": "ml",
        "taskDefinition": FARGATE_PROPS["task_definition_arn"],
        "launchType": "FARGATE",
        "count": 1,
        "startedBy": "toolkit",
        "enableECSManagedTags": True,
        "tags": [{"key": "toolkit-run", "value": "0123abcd4567"}],
        "platformVersion": "1.4.0",
        "networkConfiguration": {
            "awsvpcConfiguration": {
                "subnets": ["subnet-0a1b2c"],
                "securityGroups": ["sg-0d1e2f"],
                "assignPublicIp": "ENABLED",
            }
        },
    }
    stub.add_response(
        "run_task",
        {"tasks": [{"taskArn": TASK_ARN, "clusterArn": "arn:aws:ecs:::cluster/ml"}], "failures": []},
        expected,
    )
    with stub:
        assert run_task(ecs, FARGATE_PROPS)["task_arn"] == TASK_ARN
    stub.assert_no_pending_responses()


def test_placement_failures_are_reported_with_their_meaning() -> None:
    ecs, stub = _stubbed("ecs")
    failures = [{"arn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/ml/1", "reason": "RESOURCE:MEMORY"}]
    stub.add_response("run_task", {"tasks": [], "failures": failures})
    with stub, pytest.raises(ProvisionError) as info:
        run_task(ecs, {**FARGATE_PROPS, "launch_type": "EC2", "platform_version": None})
    assert "RESOURCE:MEMORY (no container instance has enough free memory; lower 'memory' or add capacity)" in str(
        info.value
    )


def test_a_role_iam_has_not_propagated_yet_is_retried() -> None:
    ecs, stub = _stubbed("ecs")
    message = f"ECS was unable to assume the role '{ROLE_ARN}' that was provided for this task."
    stub.add_client_error("run_task", "InvalidParameterException", message)
    stub.add_response("run_task", {"tasks": [{"taskArn": TASK_ARN}], "failures": []})
    with stub:
        assert run_task(ecs, FARGATE_PROPS, poll_seconds=0)["task_arn"] == TASK_ARN
    stub.add_client_error("run_task", "InvalidParameterException", message)
    with stub, pytest.raises(ProvisionError, match="unable to assume the role"):
        run_task(ecs, FARGATE_PROPS, retry_seconds=0, poll_seconds=0)


def _task(last_status: str, container: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "taskArn": TASK_ARN,
        "lastStatus": last_status,
        "desiredStatus": "STOPPED" if last_status == "STOPPED" else "RUNNING",
        "containers": [{"name": "runner", **container}],
        **fields,
    }


RECORDED_TASKS = {
    "provisioning": (_task("PROVISIONING", {"lastStatus": "PENDING"}), "pending", None, None),
    "running": (_task("RUNNING", {"lastStatus": "RUNNING"}), "running", None, None),
    "exited-0-deprovisioning": (
        _task("DEPROVISIONING", {"lastStatus": "STOPPED", "exitCode": 0}, stopCode="EssentialContainerExited"),
        "succeeded",
        0,
        None,
    ),
    "oom": (
        _task(
            "STOPPED",
            {
                "lastStatus": "STOPPED",
                "exitCode": 137,
                "reason": "OutOfMemoryError: Container killed due to memory usage",
            },
            stopCode="EssentialContainerExited",
            stoppedReason="Essential container in task exited",
        ),
        "failed",
        137,
        (
            "the container exited with code 137 (OutOfMemoryError: Container killed due to memory usage; "
            "Essential container in task exited); raise the 'memory' job variable"
        ),
    ),
    "image-pull": (
        _task(
            "STOPPED",
            {"lastStatus": "STOPPED"},
            stopCode="TaskFailedToStart",
            stoppedReason=(
                "CannotPullContainerError: pull image manifest has been retried 5 time(s): "
                "failed to resolve ref docker.io/library/train:404: not found"
            ),
        ),
        "failed",
        None,
        (
            "the task failed to start (CannotPullContainerError: pull image manifest has been retried 5 time(s): "
            "failed to resolve ref docker.io/library/train:404: not found); check the image name, that the "
            "execution role may pull it, and that the subnets reach the registry (assign_public_ip=True or a NAT "
            "gateway)"
        ),
    ),
    "secrets": (
        _task(
            "STOPPED",
            {"lastStatus": "STOPPED"},
            stopCode="TaskFailedToStart",
            stoppedReason=(
                "ResourceInitializationError: unable to pull secrets or registry auth: execution "
                "resource retrieval failed: unable to retrieve secret from asm"
            ),
        ),
        "failed",
        None,
        (
            "the task failed to start (ResourceInitializationError: unable to pull secrets or registry auth: "
            "execution resource retrieval failed: unable to retrieve secret from asm); the execution role could "
            "not read a secret or create the log stream, or the subnets cannot reach Secrets Manager and "
            "CloudWatch Logs"
        ),
    ),
    "exit-1": (
        _task("STOPPED", {"lastStatus": "STOPPED", "exitCode": 1}, stoppedReason="Essential container in task exited"),
        "failed",
        1,
        "the container exited with code 1 (Essential container in task exited)",
    ),
    "stopped-by-user": (
        _task("STOPPED", {"lastStatus": "STOPPED"}, stopCode="UserInitiated", stoppedReason="Task stopped by user"),
        "failed",
        None,
        "the task stopped before its container exited (Task stopped by user)",
    ),
}


@pytest.mark.parametrize("case", sorted(RECORDED_TASKS))
def test_watcher_explains_recorded_task_states(case: str) -> None:
    task, state, exit_code, reason = RECORDED_TASKS[case]
    ecs, stub = _stubbed("ecs")
    stub.add_response("describe_tasks", {"tasks": [task], "failures": []}, {"cluster": "ml", "tasks": [TASK_ARN]})
    watcher = EcsWatcher(ecs, None, "ml", TASK_ARN, "runner", None)
    with stub:
        status = watcher.status()
    assert (status.state, status.exit_code, status.reason) == (state, exit_code, reason)


def test_watcher_reports_a_task_ecs_no_longer_knows() -> None:
    ecs, stub = _stubbed("ecs")
    stub.add_response("describe_tasks", {"tasks": [], "failures": [{"arn": TASK_ARN, "reason": "MISSING"}]})
    with stub:
        status = EcsWatcher(ecs, None, "ml", TASK_ARN, "runner", None).status()
    assert status.state == "failed" and "no longer knows the task" in str(status.reason)
    assert task_status(None, "runner") == status
