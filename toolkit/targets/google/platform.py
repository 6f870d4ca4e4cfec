"""What the Google Cloud targets (Cloud Run, Vertex AI) share.

Per run: a GCS bucket that holds the bundle and result and is force-destroyed
with the stack (for a pool whose storage is a shared prefix, the run's
``<prefix>/<run-id>/`` of that bucket instead); a service account (unless the
pool names one) that gets object read + create on exactly that bucket (or prefix); and Secret Manager secrets for every
value that must not appear in the job's plain configuration (the run key and
``toolkit.secret`` env values), each readable by exactly that identity.
Also the Artifact Registry grant that lets a job's environment image be
pulled (the Cloud Logging reader both watchers use is ``logs``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_gcp as gcp

from toolkit.bundles import STORAGE_OPTIONS_ENV
from toolkit.errors import ConfigError
from toolkit.infra.flow import Bucket, Platform, PullAccess, SecretReferences
from toolkit.infra.image_registry import ImageRegistry
from toolkit.infra.pulling import refuse_loopback
from toolkit.infra.run import RunContext

BUCKET_OBJECT_ROLES = ("roles/storage.objectViewer", "roles/storage.objectCreator")
"""Read the bundle, create the result: nothing else, and only on the run's bucket."""
SECRET_ACCESSOR = "roles/secretmanager.secretAccessor"
ARTIFACT_REGISTRY_READER = "roles/artifactregistry.reader"


def bucket_name(run_id: str) -> str:
    return f"toolkit-run-{run_id}"


def storage_url(run_id: str) -> str:
    return f"gs://{bucket_name(run_id)}"


def gcp_labels(*layers: dict[str, str]) -> dict[str, str]:
    """Merged labels, lower-cased: GCP label keys and values allow only [a-z0-9_-]."""
    merged: dict[str, str] = {}
    for layer in layers:
        merged.update(layer)
    return {key.lower(): re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63] for key, value in merged.items()}


def resolve_project(project: str | None, target: str) -> str:
    """The job's project: the job variable, else the provider's configured default (``gcp:project``
    or ``GOOGLE_PROJECT``/``GOOGLE_CLOUD_PROJECT``/``GCLOUD_PROJECT``/``CLOUDSDK_CORE_PROJECT``)."""
    resolved = project or gcp.config.project
    if not resolved:
        raise ConfigError(
            f"{target} needs a Google Cloud project: set the 'project' job variable "
            "(or GOOGLE_CLOUD_PROJECT in the environment)"
        )
    return resolved


@dataclass
class RunIdentity:
    """The service account the job runs as, and how IAM bindings name it."""

    email: pulumi.Output[str]
    member: pulumi.Output[str]


def run_identity(run: RunContext, project: str, existing: str | None) -> RunIdentity:
    """A per-run service account, or the pool's ``service_account`` (granted only run-scoped access)."""
    if existing:
        email = pulumi.Output.from_input(existing)
    else:
        email = gcp.serviceaccount.Account(
            "job-identity",
            account_id=f"tk-run-{run.run_id}",
            display_name=f"toolkit run {run.run_id} ({run.function_name})"[:100],
            description=f"Identity of toolkit run {run.run_id} of pool {run.pool_name}; deleted with the run.",
            project=project,
        ).email
    return RunIdentity(email=email, member=pulumi.Output.concat("serviceAccount:", email))


def prefix_grants(run: RunContext, identity: RunIdentity) -> list[pulumi.Resource]:
    """Object read + create on the run's prefix of a shared bucket, for the run's identity only: a
    conditional binding named after the run, so removing it leaves other runs' bindings (even of the
    same service account) alone."""
    bucket, _, prefix = run.storage_url.split("://", 1)[-1].partition("/")
    objects = f"projects/_/buckets/{bucket}/objects/{prefix}/"
    expression = (
        f'resource.name.startsWith("{objects}") || '
        f'api.getAttribute("storage.googleapis.com/objectListPrefix", "").startsWith("{prefix}/")'
    )
    return [
        gcp.storage.BucketIAMMember(
            f"prefix-{role.rsplit('.', 1)[-1].lower()}",
            bucket=bucket,
            role=role,
            member=identity.member,
            condition={
                "title": f"toolkit-run-{run.run_id}",
                "description": f"toolkit run {run.run_id}: its own prefix only",
                "expression": expression,
            },
        )
        for role in BUCKET_OBJECT_ROLES
    ]


def check_registry(registry: ImageRegistry, target: str, pool_name: str) -> None:
    """Google's services pull with their own service agent, from Artifact Registry (or public images): a
    private registry elsewhere cannot be given credentials."""
    refuse_loopback(registry, target, pool_name)
    if registry.has_credentials and registry.artifact_registry() is None:
        raise ConfigError(
            f"pool {pool_name!r} ({target}) pushes environment images to {registry.url!r} with a password, but "
            f"{target} pulls private images only from Artifact Registry (with its service agent's access). Use an "
            "Artifact Registry repository ('LOCATION-docker.pkg.dev/PROJECT/REPOSITORY') as the pool's "
            "image_registry, or a remote repository there in front of this registry"
        )


def image_pull_grant(registry: ImageRegistry, project: str, service_agent: str) -> list[pulumi.Resource]:
    """Let the Google service agent that pulls the job's image (``service-{number}@...``, of the job's
    project) read the environment's Artifact Registry repository.

    The binding (repository, reader, service agent) is the same for every run of the project, so it
    is kept when the stack goes: removing it at one run's end would break the pulls of runs still
    starting. It grants read access to that one repository, nothing else.
    """
    repository = registry.artifact_registry()
    if repository is None:
        return []
    number = gcp.organizations.get_project_output(project_id=project).number
    return [
        gcp.artifactregistry.RepositoryIamMember(
            "image-pull",
            project=repository.project,
            location=repository.location,
            repository=repository.repository,
            role=ARTIFACT_REGISTRY_READER,
            member=number.apply(lambda value: "serviceAccount:" + service_agent.format(number=value)),
            opts=pulumi.ResourceOptions(retain_on_delete=True),
        )
    ]


@dataclass
class RunSecret:
    """A Secret Manager secret created for one value, readable by the run's identity only."""

    secret: gcp.secretmanager.Secret
    version: gcp.secretmanager.SecretVersion
    grant: gcp.secretmanager.SecretIamMember


def run_secret(
    run: RunContext, key: str, value: str, project: str, identity: RunIdentity, labels: dict[str, str]
) -> RunSecret:
    """Store ``value`` as a secret named after the run and ``key``; the value travels as a Pulumi secret."""
    slug = re.sub(r"[^a-z0-9-]", "-", key.lower())
    secret = gcp.secretmanager.Secret(
        f"secret-{slug}",
        secret_id=f"toolkit-{run.run_id}-{slug}",
        project=project,
        replication={"auto": {}},
        labels=labels,
    )
    version = gcp.secretmanager.SecretVersion(
        f"secret-{slug}",
        secret=secret.id,
        secret_data=pulumi.Output.secret(value),
    )
    grant = gcp.secretmanager.SecretIamMember(
        f"secret-{slug}-access",
        secret_id=secret.id,
        project=project,
        role=SECRET_ACCESSOR,
        member=identity.member,
    )
    return RunSecret(secret=secret, version=version, grant=grant)


def parse_secret_reference(reference: str) -> tuple[str, str]:
    """``NAME``, ``NAME:VERSION`` or ``projects/P/secrets/NAME[/versions/V]`` -> ``(secret, version)``."""
    match = re.fullmatch(r"(projects/[^/]+/secrets/[^/]+)(?:/versions/([^/]+))?", reference)
    if match:
        return match.group(1), match.group(2) or "latest"
    name, _, version = reference.partition(":")
    return name, version or "latest"


def grant_secret_access(name: str, reference: str, project: str, identity: RunIdentity) -> pulumi.Resource:
    """Let the run's identity read one existing secret the pool references (that secret only)."""
    secret, _version = parse_secret_reference(reference)
    return gcp.secretmanager.SecretIamMember(
        f"secret-ref-{re.sub(r'[^a-z0-9-]', '-', name.lower())}-access",
        secret_id=secret,
        project=project,
        role=SECRET_ACCESSOR,
        member=identity.member,
    )


def storage_options_env(run: RunContext) -> dict[str, str]:
    """``TOOLKIT_STORAGE_OPTIONS`` for the job when the pool sets fsspec options (never credentials)."""
    return {STORAGE_OPTIONS_ENV: json.dumps(run.storage_options)} if run.storage_options else {}


class GooglePlatform(Platform):
    """One project's primitives for a run; ``service_agent``: the Google identity that pulls the image."""

    def __init__(self, run: RunContext, project: str, location: str, labels: dict[str, str],
                 service_account: str | None, service_agent: str) -> None:
        self._run = run
        self.project = project
        self._location = location
        self.labels = labels
        self._service_account = service_account
        self._service_agent = service_agent

    def identity(self) -> RunIdentity:
        return run_identity(self._run, self.project, self._service_account)

    def bucket(self, identity: RunIdentity) -> Bucket:
        """The run's bucket (force-destroyed: the result and logs go with the stack) and the identity's
        object access on exactly it."""
        bucket = gcp.storage.Bucket(
            "bucket",
            name=bucket_name(self._run.run_id),
            location=self._location.upper(),
            project=self.project,
            force_destroy=True,
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            labels=self.labels,
        )

        def upload(logical: str, key: str, path: Path) -> pulumi.Resource:
            return gcp.storage.BucketObject(
                logical, bucket=bucket.name, name=key, source=pulumi.FileAsset(str(path)),
                content_type="application/octet-stream",
            )

        grants = [
            gcp.storage.BucketIAMMember(
                f"bucket-{role.rsplit('.', 1)[-1].lower()}", bucket=bucket.name, role=role, member=identity.member
            )
            for role in BUCKET_OBJECT_ROLES
        ]
        return Bucket(bucket, upload, guards=grants)

    def prefix_access(self, identity: RunIdentity) -> list[pulumi.Resource]:
        return prefix_grants(self._run, identity)

    def secret_references(self, values: Mapping[str, str], identity: RunIdentity) -> SecretReferences:
        """A Secret Manager secret per value, readable by the run's identity only; referenced as ``RunSecret``."""
        found = SecretReferences()
        for name, value in values.items():
            secret = run_secret(self._run, name, value, self.project, identity, self.labels)
            found.references[name] = secret
            found.needs += [secret.version, secret.grant]
        return found

    def pull_access(self, registry: ImageRegistry, identity: RunIdentity) -> PullAccess:
        return PullAccess(needs=image_pull_grant(registry, self.project, self._service_agent))
