"""Vertex AI target: conformance under mocks, the CustomJob dynamic resource against a fake of the
Vertex REST surface, the watcher on recorded shapes, and the job side (secret bootstrap + runner)
against the fake Secret Manager and fake-gcs-server."""

# ruff: noqa: F401, F811 - emulator fixtures are imported by name and requested as parameters

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.emulators.gcp import (  # noqa: F401 - fixtures
    PROJECT_NUMBER,
    FakeGoogleApis,
    GatedGcs,
    fake_gcs,
    gcs_with_credentials,
    google_apis,
)
from tests.infra.conformance import RUN_KEY, SECRET_ENV, SECRET_VALUE, items_argument
from tests.infra.gcp_conformance import GoogleCloudConformance
from tests.infra.mocking import ProgramRun, secret_version_outputs
from tests.infra.storage_roundtrip import map_round_trip, round_trip, run_job
from toolkit.errors import ConfigError
from toolkit.gcp_secret_env import METADATA_HOST_ENV, SECRET_MANAGER_ENDPOINT_ENV
from toolkit.infra.rest import CloudApiError
from toolkit.targets.google.logs import LOGGING_ENDPOINT_ENV
from toolkit.targets.vertex_ai.custom_job import VERTEX_ENDPOINT_ENV, _CustomJobProvider, remove_custom_job, vertex_api
from toolkit.targets.vertex_ai.target import VertexAiTarget, VertexAiWatcher

CUSTOM_JOB = "pulumi-python:dynamic/toolkit:VertexCustomJob"
RUN_ID = "0123abcd4567"
EMAIL = f"tk-run-{RUN_ID}@proj-1.iam.gserviceaccount.com"
VERSION = f"projects/{PROJECT_NUMBER}/secrets/toolkit-{RUN_ID}-run/versions/1"
"""A version the fake Secret Manager does not hold."""
JOB_NAME = f"projects/{PROJECT_NUMBER}/locations/us-central1/customJobs/4711"


GET_PROJECT = "gcp:organizations/getProject:getProject"


class TestVertexAiTarget(GoogleCloudConformance):
    service_agent_domain = "gcp-sa-aiplatform"
    target_cls = VertexAiTarget
    map_workers_are_jobs = False  # one custom job runs the replicas
    run_id = RUN_ID
    sample_variables = {
        "project": "proj-1",
        "image": "us-docker.pkg.dev/proj-1/runners/toolkit:3.11",
        "machine_type": "a2-highgpu-1g",
        "accelerator_type": "NVIDIA_TESLA_A100",
        "accelerator_count": 1,
        "boot_disk_type": "pd-standard",
        "boot_disk_size_gb": 200,
        "network": "projects/123/global/networks/training",
        "maximum_run_time_hours": 6,
        "restart_job_on_worker_restart": True,
        "scheduling_strategy": "SPOT",
        "env": {"MODE": "fast"},
        "labels": {"team": "ml"},
    }
    mock_outputs = {
        CUSTOM_JOB: {"name": JOB_NAME},
        "gcp:secretmanager/secretVersion:SecretVersion": secret_version_outputs(PROJECT_NUMBER),
        "gcp:serviceaccount/account:Account": {"email": EMAIL},
    }
    job_type = CUSTOM_JOB
    shared_prefix_url = "gs://pool-bucket/runs"
    expected_resources = {
        ("gcp:serviceaccount/account:Account", "job-identity"),
        ("gcp:storage/bucket:Bucket", "bucket"),
        ("gcp:storage/bucketIAMMember:BucketIAMMember", "bucket-objectcreator"),
        ("gcp:storage/bucketIAMMember:BucketIAMMember", "bucket-objectviewer"),
        ("gcp:storage/bucketObject:BucketObject", "bundle"),
        ("gcp:secretmanager/secret:Secret", "secret-api-token"),
        ("gcp:secretmanager/secretVersion:SecretVersion", "secret-api-token"),
        ("gcp:secretmanager/secretIamMember:SecretIamMember", "secret-api-token-access"),
        ("gcp:secretmanager/secret:Secret", "secret-toolkit-run-key"),
        ("gcp:secretmanager/secretVersion:SecretVersion", "secret-toolkit-run-key"),
        ("gcp:secretmanager/secretIamMember:SecretIamMember", "secret-toolkit-run-key-access"),
        (CUSTOM_JOB, "job"),
    }
    expected_exports = {"custom_job": JOB_NAME, "region": "us-central1"}
    mock_calls = {GET_PROJECT: {"projectId": "proj-1", "number": PROJECT_NUMBER}}
    pull_registry = {"url": "us-docker.pkg.dev/proj-2/envs"}

    def job_image(self, run: ProgramRun) -> str:
        return run.one(CUSTOM_JOB).inputs["body"]["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["imageUri"]

    def map_shape(self, run: ProgramRun) -> tuple[int, int]:
        pools = run.one(CUSTOM_JOB).inputs["body"]["jobSpec"]["workerPoolSpecs"]
        primary, workers = pools[0], pools[1]
        assert primary["replicaCount"] == 1 and primary["containerSpec"]["command"][-1] == "--await-items"
        assert "--await-items" not in workers["containerSpec"]["command"]
        counts = {items_argument(pool["containerSpec"]["command"]) for pool in pools}
        assert len(counts) == 1
        return counts.pop(), sum(pool["replicaCount"] for pool in pools)

    def body(self, *layers: dict[str, Any]) -> dict[str, Any]:
        return self.program(*layers).one(CUSTOM_JOB).inputs["body"]

    def test_overrides_reach_the_custom_job(self) -> None:
        body = self.body(self.sample())
        spec = body["jobSpec"]
        pool = spec["workerPoolSpecs"][0]
        assert pool["machineSpec"] == {
            "machineType": "a2-highgpu-1g",
            "acceleratorType": "NVIDIA_TESLA_A100",
            "acceleratorCount": 1,
        }
        assert pool["diskSpec"] == {"bootDiskType": "pd-standard", "bootDiskSizeGb": 200}
        assert pool["replicaCount"] == 1
        assert pool["containerSpec"]["imageUri"] == self.sample_variables["image"]
        assert spec["network"] == "projects/123/global/networks/training"
        assert spec["scheduling"] == {
            "timeout": "21600s",
            "restartJobOnWorkerRestart": True,
            "strategy": "SPOT",
            "disableRetries": False,
        }
        assert spec["serviceAccount"] == EMAIL
        assert body["labels"] == {"team": "ml", "toolkit-run": RUN_ID, "toolkit-pool": "test-pool"}
        assert body["displayName"] == f"toolkit-{RUN_ID}-train"

    def test_defaults_give_a_cpu_machine_for_an_hour(self) -> None:
        spec = self.body({"project": "proj-1", "image": "img"})["jobSpec"]
        assert spec["workerPoolSpecs"][0]["machineSpec"] == {"machineType": "n1-standard-4"}
        assert spec["scheduling"]["timeout"] == "3600s" and "network" not in spec

    def test_an_accelerator_type_alone_gets_one_accelerator(self) -> None:
        config, _ = self.render({"image": "img", "accelerator_type": "NVIDIA_L4"})
        job = self.target.parse_job(config, "test-pool")
        assert job.job_spec["workerPoolSpecs"][0]["machineSpec"]["acceleratorCount"] == 1

    def test_secrets_travel_as_secret_version_names_only(self) -> None:
        run = self.program(self.sample())
        job = run.one(CUSTOM_JOB)
        text = json.dumps(job.inputs)
        assert RUN_KEY not in text and SECRET_VALUE not in text
        container = job.inputs["body"]["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]
        command = container["command"]
        split = command.index("--")
        assert command[:3] == ["python3", "-m", "toolkit.gcp_secret_env"]
        versions = {v.name: v for v in run.of_type("gcp:secretmanager/secretVersion:SecretVersion")}
        run_key, token = versions["secret-toolkit-run-key"], versions["secret-api-token"]
        assert command[3:split] == [
            f"TOOLKIT_RUN_KEY={run_key.extra_outputs['name']}",
            f"{SECRET_ENV}={token.extra_outputs['name']}",
        ]
        assert run_key.extra_outputs["name"] != token.extra_outputs["name"]
        assert (run_key.inputs["secretData"], token.inputs["secretData"]) == (RUN_KEY, SECRET_VALUE)
        assert command[split + 1 :] == [
            "python3",
            "-u",
            "-m",
            "toolkit.runner",
            "--storage",
            f"gs://toolkit-run-{RUN_ID}",
        ]
        assert container["env"] == [{"name": "MODE", "value": "fast"}]
        assert all(v.secret_paths() == {"secretData"} for v in versions.values())
        grants = run.of_type("gcp:secretmanager/secretIamMember:SecretIamMember")
        assert {g.inputs["secretId"] for g in grants} == {"secret-toolkit-run-key-id", "secret-api-token-id"}
        assert {g.inputs["member"] for g in grants} == {f"serviceAccount:{EMAIL}"}

    def test_iam_is_scoped_to_exactly_the_runs_bucket(self) -> None:
        run = self.program(self.sample())
        bucket = run.one("gcp:storage/bucket:Bucket").inputs["name"]
        grants = run.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
        assert {g.inputs["bucket"] for g in grants} == {bucket} == {f"toolkit-run-{RUN_ID}"}
        assert {g.inputs["member"] for g in grants} == {f"serviceAccount:{EMAIL}"}
        assert not [t for t in run.types() if "projects/" in t or "organizations/" in t]
        custom_job = run.one(CUSTOM_JOB).inputs
        assert custom_job["parent"] == "projects/proj-1/locations/us-central1" and custom_job["region"] == "us-central1"

    def test_customizations_patch_the_job_spec(self) -> None:
        patch = [
            {"op": "add", "path": "/enableWebAccess", "value": True},
            {"op": "replace", "path": "/workerPoolSpecs/0/replicaCount", "value": 1},
        ]
        assert self.body({**self.sample(), "customizations": patch})["jobSpec"]["enableWebAccess"] is True

    @pytest.mark.parametrize(
        ("override", "words"),
        [
            ({"accelerator_type": "nvidia-tesla-t4"}, ["'accelerator_type'", "'nvidia-tesla-t4'"]),
            ({"accelerator_count": 0}, ["'accelerator_count'", "0"]),
            ({"boot_disk_size_gb": 10}, ["'boot_disk_size_gb'", "10"]),
            ({"boot_disk_type": "ssd"}, ["'boot_disk_type'", "pd-ssd"]),
            ({"scheduling_strategy": "CHEAP"}, ["'scheduling_strategy'", "SPOT"]),
            ({"maximum_run_time_hours": "2h"}, ["'maximum_run_time_hours'", "integer"]),
        ],
    )
    def test_bad_overrides_are_rejected_before_rendering(self, override: dict[str, Any], words: list[str]) -> None:
        with pytest.raises(ConfigError) as info:
            self.render(override)
        assert all(word in str(info.value) for word in words), str(info.value)

    def test_accelerator_count_without_type_is_rejected_when_parsed(self) -> None:
        config, _ = self.render({"image": "img", "accelerator_count": 2})
        with pytest.raises(ConfigError, match="accelerator_count is set without accelerator_type"):
            self.target.parse_job(config, "test-pool")

    def test_a_run_without_image_is_refused_before_provisioning(self) -> None:
        _, variables = self.render({"project": "p"})
        with pytest.raises(ConfigError, match="needs the job variable 'image'"):
            self.target.check_capabilities(variables, "test-pool")


# -- the CustomJob dynamic resource against the fake Vertex AI REST API ---------------------------------


@pytest.fixture
def vertex(google_apis: FakeGoogleApis, monkeypatch: pytest.MonkeyPatch) -> FakeGoogleApis:
    monkeypatch.setenv(VERTEX_ENDPOINT_ENV, google_apis.url)
    monkeypatch.setenv(LOGGING_ENDPOINT_ENV, google_apis.url)
    return google_apis


def _props() -> dict[str, Any]:
    suite = TestVertexAiTarget()
    inputs = suite.program(suite.sample()).one(CUSTOM_JOB).inputs
    return {**{k: v for k, v in inputs.items() if k != "__provider"}, "poll_seconds": 0.01, "cancel_wait_seconds": 5}


def test_create_submits_the_custom_job(vertex: FakeGoogleApis) -> None:
    props = _props()
    result = _CustomJobProvider().create(props)
    sent = vertex.server.calls("POST")[0]
    assert sent.path == "/v1/projects/proj-1/locations/us-central1/customJobs"
    assert sent.body == props["body"]
    assert result.id == result.outs["name"] and result.id.startswith(
        f"projects/{PROJECT_NUMBER}/locations/us-central1/customJobs/"
    )
    assert vertex.custom_jobs[result.id]["state"] == "JOB_STATE_PENDING"


def test_create_surfaces_the_apis_rejection(vertex: FakeGoogleApis) -> None:
    props = _props()
    del props["body"]["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["imageUri"]
    with pytest.raises(CloudApiError) as info:
        _CustomJobProvider().create(props)
    assert info.value.status == 400 and info.value.code == "INVALID_ARGUMENT" and "image_uri" in str(info.value)


def test_delete_cancels_waits_for_the_final_state_then_deletes(vertex: FakeGoogleApis) -> None:
    vertex.cancel_polls = 3
    props = _props()
    name = _CustomJobProvider().create(props).id
    vertex.set_job_state(name, "JOB_STATE_RUNNING")
    _CustomJobProvider().delete(name, props)
    calls = [(r.method, r.path.rsplit("/", 1)[-1]) for r in vertex.api_requests()[1:]]
    job_id = name.rsplit("/", 1)[-1]
    assert calls[:2] == [("GET", job_id), ("POST", f"{job_id}:cancel")]
    deletes = [i for i, call in enumerate(calls) if call[0] == "DELETE"]
    assert len(deletes) == 1 and calls[deletes[0] - 1] == ("GET", job_id)  # deleted only once it read final
    assert calls[-1][0] == "GET" and "operations" in vertex.api_requests()[-1].path
    assert name not in vertex.custom_jobs


def test_delete_of_a_finished_job_does_not_cancel(vertex: FakeGoogleApis) -> None:
    props = _props()
    name = _CustomJobProvider().create(props).id
    vertex.set_job_state(name, "JOB_STATE_SUCCEEDED")
    _CustomJobProvider().delete(name, props)
    assert not vertex.server.calls("POST", ":cancel") and name not in vertex.custom_jobs


def test_delete_of_a_job_already_gone_succeeds(vertex: FakeGoogleApis) -> None:
    _CustomJobProvider().delete(JOB_NAME, _props())
    assert [r.method for r in vertex.api_requests()] == ["GET"]


def test_a_job_that_will_not_stop_fails_the_delete_loudly(vertex: FakeGoogleApis) -> None:
    vertex.cancel_polls = 10_000
    props = _props()
    name = _CustomJobProvider().create(props).id
    with pytest.raises(CloudApiError, match="not cancelled"):
        remove_custom_job(vertex_api("us-central1"), name, poll_seconds=0.01, wait_seconds=0.2)
    assert name in vertex.custom_jobs


# -- the watcher on recorded CustomJob shapes ---------------------------------------------------------------

OOM = (
    "The replica workerpool0-0 ran out-of-memory and exited with a non-zero status of 137. "
    "To find out more about why your job exited please check the logs: https://console.cloud.google.com/logs"
)
EXIT_1 = (
    "The replica workerpool0-0 exited with a non-zero status of 1. To find out more about why your job "
    "exited please check the logs: https://console.cloud.google.com/logs"
)


@pytest.mark.parametrize(
    ("state", "error", "expected", "exit_code", "words"),
    [
        ("JOB_STATE_QUEUED", None, "pending", None, []),
        ("JOB_STATE_PENDING", None, "pending", None, []),
        ("JOB_STATE_RUNNING", None, "running", None, []),
        ("JOB_STATE_CANCELLING", None, "running", None, []),
        ("JOB_STATE_SUCCEEDED", None, "succeeded", 0, []),
        ("JOB_STATE_FAILED", {"code": 3, "message": EXIT_1}, "failed", 1, ["non-zero status of 1"]),
        ("JOB_STATE_FAILED", {"code": 3, "message": OOM}, "failed", 137, ["larger 'machine_type'"]),
        (
            "JOB_STATE_FAILED",
            {"code": 8, "message": "The resources required for the job are not available in us-central1."},
            "failed",
            None,
            ["not available"],
        ),
        ("JOB_STATE_CANCELLED", {"code": 1, "message": "CANCELED"}, "failed", None, ["cancelled"]),
        ("JOB_STATE_EXPIRED", {"code": 4, "message": "Job expired."}, "failed", None, ["expired"]),
    ],
)
def test_watcher_maps_job_states(
    vertex: FakeGoogleApis,
    state: str,
    error: dict[str, Any] | None,
    expected: str,
    exit_code: int | None,
    words: list[str],
) -> None:
    name = _CustomJobProvider().create(_props()).id
    vertex.set_job_state(name, state, error)
    status = VertexAiTarget().watcher(None, {"custom_job": name, "region": "us-central1"}).status()  # type: ignore[arg-type]
    assert (status.state, status.exit_code) == (expected, exit_code)
    assert all(word in (status.reason or "") for word in words), status.reason


def test_watcher_reads_the_jobs_log_entries(vertex: FakeGoogleApis) -> None:
    name = _CustomJobProvider().create(_props()).id
    job_id = name.rsplit("/", 1)[-1]
    vertex.add_log(
        "hello from the replica", {"type": "ml_job", "labels": {"job_id": job_id, "task_name": "workerpool0-0"}}
    )
    vertex.add_log("another job", {"type": "ml_job", "labels": {"job_id": "999"}})
    watcher = VertexAiWatcher(name, "us-central1", min_interval=0)
    assert watcher.read_logs() == "hello from the replica\n"
    assert vertex.server.calls("POST", "entries:list")[0].body["resourceNames"] == [f"projects/{PROJECT_NUMBER}"]


# -- the job side: secret bootstrap + runner, on the fake Secret Manager and fake-gcs-server -------------------


def test_the_jobs_command_reads_its_secrets_and_runs_the_bundle(
    google_apis: FakeGoogleApis,
    gcs_with_credentials: GatedGcs,
) -> None:
    gcs = gcs_with_credentials
    suite = TestVertexAiTarget()
    run = suite.program(suite.sample())
    command = run.one(CUSTOM_JOB).inputs["body"]["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["command"]
    bundle = run.one("gcp:storage/bucketObject:BucketObject").inputs
    versions = run.of_type("gcp:secretmanager/secretVersion:SecretVersion")
    for version in versions:  # each version holds its own value: a job reading the wrong one fails
        google_apis.secrets[version.extra_outputs["name"]] = version.inputs["secretData"]
    gcs.fake.create_bucket(bundle["bucket"])
    host = google_apis.url.removeprefix("http://")
    env = {METADATA_HOST_ENV: host, SECRET_MANAGER_ENDPOINT_ENV: google_apis.url}
    result = round_trip(
        VertexAiTarget().per_run_storage_url(RUN_ID),
        gcs.storage_options,
        lambda data: gcs.fake.upload(bundle["bucket"], bundle["name"], data),
        RUN_KEY,
        argv=command,
        env=env,
    )
    assert result == 42
    assert gcs.refused() == [] and gcs.admitted()  # the job's storage calls carried the metadata server's token
    accessed = google_apis.server.calls("GET", ":access")
    assert sorted(r.path for r in accessed) == sorted(f"/v1/{v.extra_outputs['name']}:access" for v in versions)


def test_a_maps_replicas_claim_each_item_once_on_gcs(gcs_with_credentials: GatedGcs, tmp_path) -> None:  # noqa: ANN001
    """Items in the run's bucket, three runners claiming them at once (GCS's ifGenerationMatch=0), with credentials."""
    gcs = gcs_with_credentials
    url = VertexAiTarget().per_run_storage_url("fedcba987654")  # a run of its own on fake-gcs-server
    gcs.fake.create_bucket(url.removeprefix("gs://"))
    results = map_round_trip(url, gcs.storage_options, RUN_KEY, tmp_path)
    assert [value for value, _pid in results] == [x + 40 for x in range(12)]
    assert gcs.refused() == [] and gcs.admitted()


def test_the_bootstrap_refuses_to_start_without_its_secret(google_apis: FakeGoogleApis) -> None:
    env = {METADATA_HOST_ENV: google_apis.url.removeprefix("http://"), SECRET_MANAGER_ENDPOINT_ENV: google_apis.url}
    done = run_job(["python3", "-m", "toolkit.gcp_secret_env", f"TOOLKIT_RUN_KEY={VERSION}", "--", "true"], env)
    assert done.returncode == 3
    assert "could not read TOOLKIT_RUN_KEY" in done.stderr and "secretAccessor" in done.stderr
