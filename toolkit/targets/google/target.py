"""What both Google targets are: their shared job variables and job fields, and the family's hooks.

``cloud_run`` and ``vertex_ai`` subclass these; each adds its own variables, its
job resource and its watcher, and names the service agent that pulls its image.
"""

from __future__ import annotations

import sys
from typing import ClassVar

from pydantic import Field

from toolkit.infra.base import Target
from toolkit.infra.fields import unset
from toolkit.infra.flow import Platform
from toolkit.infra.image_registry import ImageRegistry
from toolkit.infra.run import JobConfiguration, RunContext
from toolkit.infra.synonyms import PREFECT_COMMON, no_counterpart, renamed
from toolkit.infra.variables import EnvironmentVariables
from toolkit.secretvalues import Secret
from toolkit.targets.google.platform import GooglePlatform, check_registry, gcp_labels, resolve_project, storage_url

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
PREFECT_GOOGLE = {
    **PREFECT_COMMON,
    "service_account_name": renamed("service_account"),
    "credentials": no_counterpart("a Prefect block; credentials come from the caller's Google environment (ADC)"),
}
"""The names Prefect's Google workers (Cloud Run, Vertex AI) share, with those every Prefect worker has."""


class GoogleVariables(EnvironmentVariables):
    """Job variables every Google target has."""

    region: str = Field(
        default="us-central1", pattern=r"^[a-z]+-[a-z]+\d+$", description="Region of the job and its bucket."
    )
    project: str | None = unset("Google Cloud project (default: the provider's, e.g. GOOGLE_CLOUD_PROJECT).")
    image: str | None = unset(
        f"Container image with Python {PYTHON}, toolkit, cloudpickle and gcsfs installed (required).",
    )
    service_account: str | None = unset(
        "Email of an existing service account to run as (default: a per-run one). "
        "It is granted access to the run's bucket and secrets only.",
    )
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables of the container.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels on the job and every resource of the run.")


class GoogleJob(JobConfiguration):
    region: str
    project: str | None = None
    service_account: str | None = None
    env: dict[str, str | Secret] = {}
    labels: dict[str, str] = {}


class GoogleTarget(Target):
    """A job in one Google Cloud project: the family's platform, storage and registry rules."""

    service_agent: ClassVar[str]
    """The Google-managed identity that pulls the job's image (not the job's own service account)."""
    extra = "gcp"
    plugin_packages = ("pulumi_gcp",)
    required = ("image",)
    environment = "image"
    images_from_registry = True
    storage_schemes = ("gs", "gcs")
    signed_storage = True

    def check_image_registry(self, registry: ImageRegistry, job: JobConfiguration, pool_name: str) -> None:
        check_registry(registry, self.name, pool_name)

    def per_run_storage_url(self, run_id: str) -> str:
        return storage_url(run_id)

    def platform(self, run: RunContext) -> Platform:
        job = run.job
        assert isinstance(job, GoogleJob)
        project = resolve_project(job.project, self.name)
        labels = gcp_labels(job.labels, run.labels)
        return GooglePlatform(run, project, job.region, labels, job.service_account, self.service_agent)

