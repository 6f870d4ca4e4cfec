"""What the Google Cloud targets (Cloud Run, Vertex AI) share.

Per run: a GCS bucket that holds the bundle and result and is force-destroyed
with the stack; a service account (unless the pool names one) that gets object
read + create on exactly that bucket; and Secret Manager secrets for every
value that must not appear in the job's plain configuration (the run key and
``toolkit.secret`` env values), each readable by exactly that identity.
Also the Cloud Logging reader both watchers use for job output, and the
Artifact Registry grant that lets a job's environment image be pulled.
"""

from __future__ import annotations

import functools
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp as gcp

from toolkit.bundles import FILES_NAME
from toolkit.environments.registry import ImageRegistry
from toolkit.errors import ConfigError
from toolkit.infra.base import RunContext
from toolkit.infra.pulling import refuse_loopback
from toolkit.infra.rest import CloudApiError, RestClient, endpoint, google_session
from toolkit.runner import BUNDLE_NAME, STORAGE_OPTIONS_ENV

LOGGING_ENDPOINT_ENV = "TOOLKIT_CLOUD_LOGGING_ENDPOINT"
LOGGING_ENDPOINT = "https://logging.googleapis.com"
BUCKET_OBJECT_ROLES = ("roles/storage.objectViewer", "roles/storage.objectCreator")
"""Read the bundle, create the result: nothing else, and only on the run's bucket."""
SECRET_ACCESSOR = "roles/secretmanager.secretAccessor"
ARTIFACT_REGISTRY_READER = "roles/artifactregistry.reader"
LOG_POLL_SECONDS = 5.0
"""Cloud Logging allows 60 entries.list calls a minute per project; several runs share that."""


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


def run_bucket(
    run: RunContext, project: str, location: str, identity: RunIdentity, labels: dict[str, str]
) -> list[pulumi.Resource]:
    """The run's bucket with the bundle in it and the identity's object access; returns what the job needs."""
    bucket = gcp.storage.Bucket(
        "bucket",
        name=bucket_name(run.run_id),
        location=location.upper(),
        project=project,
        force_destroy=True,  # the result and logs go with the stack
        uniform_bucket_level_access=True,
        public_access_prevention="enforced",
        labels=labels,
    )
    uploads = [
        gcp.storage.BucketObject(
            logical,
            bucket=bucket.name,
            name=name,
            source=pulumi.FileAsset(str(path)),
            content_type="application/octet-stream",
        )
        for logical, name, path in (("bundle", BUNDLE_NAME, run.bundle_path), ("files", FILES_NAME, run.files_path))
        if path is not None
    ]
    grants = [
        gcp.storage.BucketIAMMember(
            f"bucket-{role.rsplit('.', 1)[-1].lower()}",
            bucket=bucket.name,
            role=role,
            member=identity.member,
        )
        for role in BUCKET_OBJECT_ROLES
    ]
    return [bucket, *uploads, *grants]


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


def image_pull_grant(run: RunContext, project: str, service_agent: str) -> list[pulumi.Resource]:
    """Let the Google service agent that pulls the job's image (``service-{number}@...``, of the job's
    project) read the environment's Artifact Registry repository.

    The binding (repository, reader, service agent) is the same for every run of the project, so it
    is kept when the stack goes: removing it at one run's end would break the pulls of runs still
    starting. It grants read access to that one repository, nothing else.
    """
    registry = run.image_registry
    repository = registry.artifact_registry() if registry else None
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


class CloudLogReader:
    """Incremental reads of Cloud Logging entries matching a filter, oldest first.

    Entries arrive in Cloud Logging a few seconds late and out of order within
    the same second, so each read asks for ``timestamp >= last seen`` and drops
    entries already returned (by ``insertId``). Reads are throttled to the API's
    quota; a failed read is reported once in the log text and never fails the run.
    """

    def __init__(
        self, project: str, log_filter: str, client: RestClient | None = None, min_interval: float = LOG_POLL_SECONDS
    ) -> None:
        self._given_client = client
        self._project = project
        self._filter = log_filter
        self._min_interval = min_interval
        self._last_read = float("-inf")
        self._since: str | None = None
        self._seen: set[str] = set()
        self._failure_reported = False

    @functools.cached_property
    def _client(self) -> RestClient:
        if self._given_client is not None:
            return self._given_client
        base = endpoint(LOGGING_ENDPOINT_ENV, LOGGING_ENDPOINT)
        return RestClient(base, google_session())

    def read(self, force: bool = False) -> str:
        now = time.monotonic()
        if not force and now - self._last_read < self._min_interval:
            return ""
        self._last_read = now
        try:
            entries = self._entries()
        except CloudApiError as exc:
            if self._failure_reported:
                return ""
            self._failure_reported = True
            return f"[toolkit] job logs are unavailable: {exc}. Grant roles/logging.viewer to see them\n"
        lines = []
        for entry in entries:
            insert_id = entry.get("insertId", "")
            if insert_id in self._seen:
                continue
            timestamp = entry.get("timestamp", "")
            if timestamp != self._since:
                self._seen = set()
                self._since = timestamp
            self._seen.add(insert_id)
            lines.append(_entry_text(entry))
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines)

    def _entries(self) -> list[dict[str, Any]]:
        log_filter = self._filter if self._since is None else f'{self._filter} AND timestamp>="{self._since}"'
        body: dict[str, Any] = {
            "resourceNames": [f"projects/{self._project}"],
            "filter": log_filter,
            "orderBy": "timestamp asc",
            "pageSize": 1000,
        }
        entries: list[dict[str, Any]] = []
        while True:
            page = self._client.call("POST", "/v2/entries:list", body)
            entries.extend(page.get("entries", []))
            token = page.get("nextPageToken")
            if not token:
                return entries
            body = {**body, "pageToken": token}


def _entry_text(entry: dict[str, Any]) -> str:
    if "textPayload" in entry:
        return str(entry["textPayload"])
    payload = entry.get("jsonPayload")
    if isinstance(payload, dict):
        return str(payload.get("message") or json.dumps(payload))
    return json.dumps(entry.get("protoPayload", ""))
