"""The AWS family's primitives (ecs uses them): a bucket, a role, a secret reference, a pull grant.

Per run: an S3 bucket ``toolkit-run-<run-id>`` (public access blocked,
force-destroyed with the stack) holding the bundle as S3 objects, unless the
pool's storage is a shared ``s3://`` prefix; a role the job runs as whose only
permissions are that bucket (or prefix); the run key and ``toolkit.secret`` env
values as Secrets Manager secrets, referenced by ARN, so no resource holds them;
and pulling from ECR, or with the pool registry's credentials as a secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from toolkit.infra.flow import Bucket, Platform, PullAccess, SecretReferences
from toolkit.infra.image_registry import EcrRepository, ImageRegistry
from toolkit.infra.run import RunContext

ECR_PULL_ACTIONS = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]


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
    """The job role's policy: the run's bucket or shared prefix, nothing else."""
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


def pull_statements(ecr: EcrRepository | None) -> list[dict[str, Any]]:
    """Pulling from the environment's ECR repository (``GetAuthorizationToken`` has no resource scope in IAM)."""
    if ecr is None:
        return []
    return [
        {"Effect": "Allow", "Action": ECR_PULL_ACTIONS, "Resource": [ecr.arn]},
        {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": ["*"]},
    ]


def assume_role_policy(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
        }
    )


class AwsPlatform(Platform):
    """One region's provider (tags on everything) and the run's primitives in it.

    ``identity()`` is the role the job runs as (``role_arn``: an existing one, given a policy for the
    run; else a per-run role ``<prefix>-task`` that ``service`` may assume).
    """

    def __init__(self, run: RunContext, region: str, tags: dict[str, str], role_arn: str | None, service: str) -> None:
        self._run = run
        self.region = region
        self._role_arn = role_arn
        self._service = service
        self.prefix = f"toolkit-{run.run_id}"
        provider = aws.Provider("aws", region=region, default_tags={"tags": tags})
        self.opts = pulumi.ResourceOptions(provider=provider)
        self._made: list[pulumi.Resource] = []

    def role(
        self, logical: str, existing_arn: str | None, name: str, policy: pulumi.Input[str]
    ) -> tuple[pulumi.Input[str], pulumi.Input[str], pulumi.Resource]:
        """``(name, arn, policy)`` of a per-run role with ``policy`` inline, or of an existing role given
        ``policy`` for the run."""
        if existing_arn:
            role_name: pulumi.Input[str] = existing_arn.rsplit("/", 1)[-1]
            arn: pulumi.Input[str] = existing_arn
            policy_name = f"{name}-run"
        else:
            made = aws.iam.Role(logical, name=name, assume_role_policy=assume_role_policy(self._service), opts=self.opts)
            role_name, arn, policy_name = made.name, made.arn, "run"
        inline = aws.iam.RolePolicy(f"{logical}-policy", name=policy_name, role=role_name, policy=policy, opts=self.opts)
        return role_name, arn, inline

    def identity(self) -> pulumi.Input[str]:
        """The job's role: the run's bucket or shared prefix, nothing else."""
        policy = json.dumps(storage_policy(self._run, self.region))
        _, arn, inline = self.role("task-role", self._role_arn, f"{self.prefix}-task", policy)
        self._made.append(inline)
        return arn

    def job_needs(self) -> list[pulumi.Resource]:
        return self._made

    def bucket(self, identity: Any) -> Bucket:
        bucket = aws.s3.Bucket("bucket", bucket=bucket_name(self._run.run_id), force_destroy=True, opts=self.opts)
        block = aws.s3.BucketPublicAccessBlock(
            "bucket-public-access-block",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=self.opts,
        )

        def upload(logical: str, key: str, path: Path) -> pulumi.Resource:
            return aws.s3.BucketObjectv2(
                logical, bucket=bucket.id, key=key, source=pulumi.FileAsset(str(path)), opts=self.opts
            )

        return Bucket(bucket, upload, guards=[block])

    def secret(self, logical: str, name: str, value: str) -> tuple[pulumi.Output[str], pulumi.Resource]:
        """``(ARN, version)`` of a Secrets Manager secret holding ``value`` (passed on only as a Pulumi secret)."""
        secret = aws.secretsmanager.Secret(logical, name=name, recovery_window_in_days=0, opts=self.opts)
        version = aws.secretsmanager.SecretVersion(
            f"{logical}-value", secret_id=secret.id, secret_string=pulumi.Output.secret(value), opts=self.opts
        )
        return secret.arn, version

    def secret_references(self, values: Mapping[str, str], identity: Any) -> SecretReferences:
        """One secret per value, named ``toolkit/<run-id>/<NAME>``, referenced by ARN."""
        found = SecretReferences()
        for name, value in values.items():
            arn, version = self.secret(f"secret-{name}", f"toolkit/{self._run.run_id}/{name}", value)
            found.references[name] = arn
            found.needs.append(version)
        return found

    def pull_access(self, registry: ImageRegistry, identity: Any) -> PullAccess:
        """ECR: statements for the role that pulls. Another registry with credentials: those, as a secret
        in the shape ECS's ``repositoryCredentials`` reads. Else (a public image) nothing."""
        ecr = registry.ecr()
        if ecr is not None:
            return PullAccess({"statements": pull_statements(ecr)})
        if not registry.has_credentials:
            return PullAccess()
        value = json.dumps({"username": registry.username, "password": registry.password()})
        arn, version = self.secret("registry-credentials", f"toolkit/{self._run.run_id}/registry", value)
        return PullAccess({"secret": arn}, [version])
