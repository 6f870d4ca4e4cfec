"""What both Google Cloud targets (cloud_run, vertex_ai) must do with the pool's Artifact Registry.

They differ only in the Google-managed service agent that pulls the job's image
(``service_agent_domain``); the run's storage is a bucket of the run's own objects.
"""

from __future__ import annotations

from typing import ClassVar

import pytest

from tests.emulators.gcp import PROJECT_NUMBER
from tests.infra.conformance import RemoteEnvironmentConformance
from tests.infra.mocking import ProgramRun
from toolkit.errors import ConfigError
from toolkit.infra.image_registry import ImageRegistry

REPOSITORY_IAM_MEMBER = "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember"


class GoogleCloudConformance(RemoteEnvironmentConformance):
    service_agent_domain: ClassVar[str]
    """The service agent that pulls images: ``service-<project number>@<domain>.iam.gserviceaccount.com``."""

    def uploaded_names(self, run: ProgramRun) -> set[str]:
        return {r.inputs["name"] for r in run.of_type("gcp:storage/bucketObject:BucketObject")}

    def test_the_service_agent_that_pulls_may_read_exactly_the_environments_repository(self) -> None:
        grant = self.environment_program(self.sample()).one(REPOSITORY_IAM_MEMBER).inputs
        assert (grant["project"], grant["location"], grant["repository"]) == ("proj-2", "us", "envs")
        assert grant["role"] == "roles/artifactregistry.reader"
        agent = f"service-{PROJECT_NUMBER}@{self.service_agent_domain}.iam.gserviceaccount.com"
        assert grant["member"] == f"serviceAccount:{agent}"
        assert not self.program(self.sample()).of_type(REPOSITORY_IAM_MEMBER)

    def test_a_private_registry_outside_artifact_registry_is_refused(self) -> None:
        config, _ = self.render(self.sample())
        job = self.target.parse_job(config, "test-pool")
        private = ImageRegistry(url="registry.example.com/ml", username="robot", password_env="REGISTRY_TOKEN")
        with pytest.raises(ConfigError, match="pulls private images only from Artifact Registry"):
            self.target.check_image_registry(private, job, "test-pool")
        self.target.check_image_registry(ImageRegistry(url="registry.example.com/public"), job, "test-pool")

    def test_a_shared_prefix_run_may_use_only_its_own_prefix(self) -> None:
        grants = self.shared_prefix_program().of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
        assert sorted(g.inputs["role"] for g in grants) == ["roles/storage.objectCreator", "roles/storage.objectViewer"]
        for grant in grants:
            condition = grant.inputs["condition"]
            assert grant.inputs["bucket"] == "pool-bucket" and condition["title"] == f"toolkit-run-{self.run_id}"
            assert f'startsWith("projects/_/buckets/pool-bucket/objects/runs/{self.run_id}/")' in condition["expression"]
            assert f'objectListPrefix", "").startsWith("runs/{self.run_id}/")' in condition["expression"]

    def test_pool_storage_must_be_cloud_storage(self) -> None:
        with pytest.raises(ConfigError, match="gs://"):
            self.target_cls.check_storage_url("/srv/runs")
        self.target_cls.check_storage_url("gs://pool-bucket/runs")

