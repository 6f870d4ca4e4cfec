"""Cloud Run target: conformance under mocks, plus IAM scope, secrets, overrides, the execution
resource against a fake Cloud Run API, the watcher on recorded shapes, and storage on fake-gcs-server."""

# ruff: noqa: F401, F811 - emulator fixtures are imported by name and requested as parameters

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.emulators.gcp import (  # noqa: F401 - fixtures
    PROJECT_NUMBER,
    TOKEN,
    FakeGoogleApis,
    GatedGcs,
    fake_gcs,
    gcs_with_credentials,
    google_apis,
)
from tests.infra.conformance import RUN_KEY, SECRET_ENV, SECRET_VALUE, items_argument
from tests.infra.gcp_conformance import GoogleCloudConformance
from tests.infra.mocking import ProgramRun, secret_version_outputs
from tests.infra.storage_roundtrip import round_trip
from toolkit import settings
from toolkit.bundles import BUNDLE_NAME
from toolkit.errors import ConfigError
from toolkit.infra.rest import CloudApiError, RestClient, google_session
from toolkit.pools.registry import PoolRegistry, WorkPool
from toolkit.preparation import prepare
from toolkit.targets.cloud_run.execution import RUN_ENDPOINT_ENV, _ExecutionProvider, cancel_execution, run_api
from toolkit.targets.cloud_run.target import CloudRunTarget, CloudRunWatcher
from toolkit.targets.google.logs import LOGGING_ENDPOINT_ENV, CloudLogReader

JOB = "gcp:cloudrunv2/job:Job"
RUN_ID = "0123abcd4567"
EMAIL = f"tk-run-{RUN_ID}@proj-1.iam.gserviceaccount.com"
EXECUTION = f"projects/proj-1/locations/europe-west4/jobs/toolkit-{RUN_ID}/executions/toolkit-{RUN_ID}-x7k2p"


GET_PROJECT = "gcp:organizations/getProject:getProject"


class TestCloudRunTarget(GoogleCloudConformance):
    service_agent_domain = "serverless-robot-prod"
    target_cls = CloudRunTarget
    map_workers_are_jobs = False  # one execution runs the tasks
    run_id = RUN_ID
    sample_variables = {
        "project": "proj-1",
        "region": "europe-west4",
        "image": "europe-docker.pkg.dev/proj-1/runners/toolkit:3.11",
        "cpu": "2",
        "memory": "4Gi",
        "max_retries": 1,
        "timeout": 900,
        "vpc_connector": "projects/proj-1/locations/europe-west4/connectors/egress",
        "env": {"MODE": "fast"},
        "secrets": {"DB_PASSWORD": "db-password:3"},
        "labels": {"team": "ml"},
    }
    mock_outputs = {
        "pulumi-python:dynamic/toolkit:CloudRunExecution": {"execution": EXECUTION},
        "gcp:secretmanager/secretVersion:SecretVersion": secret_version_outputs(PROJECT_NUMBER),
        "gcp:serviceaccount/account:Account": {"email": EMAIL},
    }
    job_type = JOB
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
        ("gcp:secretmanager/secretIamMember:SecretIamMember", "secret-ref-db-password-access"),
        (JOB, "job"),
        ("pulumi-python:dynamic/toolkit:CloudRunExecution", "execution"),
    }
    expected_exports = {"execution": EXECUTION, "project": "proj-1"}
    mock_calls = {GET_PROJECT: {"projectId": "proj-1", "number": PROJECT_NUMBER}}
    pull_registry = {"url": "us-docker.pkg.dev/proj-2/envs"}

    def job_image(self, run: ProgramRun) -> str:
        return run.one(JOB).inputs["template"]["template"]["containers"][0]["image"]

    def map_shape(self, run: ProgramRun) -> tuple[int, int]:
        template = run.one(JOB).inputs["template"]
        args = template["template"]["containers"][0]["args"]
        assert args[args.index("--index-env") + 1] == "CLOUD_RUN_TASK_INDEX"
        assert items_argument(args) == template["taskCount"]
        return template["taskCount"], template["parallelism"]

    # -- what the program registers ------------------------------------------------------

    def test_overrides_reach_the_job_resource(self) -> None:
        job = self.program(self.sample()).one(JOB).inputs
        task = job["template"]["template"]
        container = task["containers"][0]
        assert container["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
        assert container["image"] == self.sample_variables["image"]
        assert task["maxRetries"] == 1 and task["timeout"] == "900s"
        assert task["vpcAccess"] == {"connector": self.sample_variables["vpc_connector"]}
        assert task["serviceAccount"] == EMAIL
        assert job["location"] == "europe-west4" and job["project"] == "proj-1"
        assert job["deletionProtection"] is False
        assert job["labels"] == {"team": "ml", "toolkit-run": RUN_ID, "toolkit-pool": "test-pool"}
        assert container["commands"] == ["python3"]
        assert container["args"] == ["-u", "-m", "toolkit.runner", "--storage", f"gs://toolkit-run-{RUN_ID}"]

    def assert_native_retries(self, run: ProgramRun, retries: int) -> None:
        assert run.one(JOB).inputs["template"]["template"]["maxRetries"] == retries

    def test_defaults_leave_cloud_runs_own_timeout(self) -> None:
        job = self.program({"image": "img", "project": "proj-1"}).one(JOB).inputs
        assert "timeout" not in job["template"]["template"]
        assert job["template"]["template"]["containers"][0]["resources"]["limits"] == {
            "cpu": "1000m",
            "memory": "512Mi",
        }

    def test_iam_is_scoped_to_exactly_the_runs_bucket(self) -> None:
        run = self.program(self.sample())
        bucket = run.one("gcp:storage/bucket:Bucket").inputs
        assert bucket["name"] == f"toolkit-run-{RUN_ID}" and bucket["forceDestroy"] is True
        assert bucket["uniformBucketLevelAccess"] is True and bucket["publicAccessPrevention"] == "enforced"
        grants = run.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
        assert {g.inputs["role"] for g in grants} == {"roles/storage.objectViewer", "roles/storage.objectCreator"}
        assert {g.inputs["bucket"] for g in grants} == {bucket["name"]}
        assert {g.inputs["member"] for g in grants} == {f"serviceAccount:{EMAIL}"}
        project_wide = [t for t in run.types() if "projects/" in t or "organizations/" in t]
        assert not project_wide, f"project-wide IAM registered: {project_wide}"
        bundle = run.one("gcp:storage/bucketObject:BucketObject").inputs
        assert bundle["bucket"] == bucket["name"] and bundle["name"] == BUNDLE_NAME

    def test_secrets_reach_the_job_only_as_secret_manager_references(self) -> None:
        run = self.program(self.sample())
        envs = {e["name"]: e for e in run.one(JOB).inputs["template"]["template"]["containers"][0]["envs"]}
        assert envs["MODE"] == {"name": "MODE", "value": "fast"}
        secrets = {s.name: s for s in run.of_type("gcp:secretmanager/secret:Secret")}
        versions = {v.name: v for v in run.of_type("gcp:secretmanager/secretVersion:SecretVersion")}
        numbers = {name: version.extra_outputs["version"] for name, version in versions.items()}
        assert len(set(numbers.values())) == len(numbers)  # a wrong reference cannot pass by chance
        expected = (("TOOLKIT_RUN_KEY", "toolkit-run-key", RUN_KEY), (SECRET_ENV, "api-token", SECRET_VALUE))
        for env_name, slug, value in expected:
            assert "value" not in envs[env_name]
            ref = envs[env_name]["valueSource"]["secretKeyRef"]
            secret = secrets[f"secret-{slug}"]
            assert ref == {"secret": secret.inputs["secretId"], "version": numbers[f"secret-{slug}"]}
            # that version belongs to that secret and holds this variable's value
            assert versions[f"secret-{slug}"].inputs == {"secret": secret.id, "secretData": value}
        assert all(v.secret_paths() == {"secretData"} for v in versions.values())
        grants = run.of_type("gcp:secretmanager/secretIamMember:SecretIamMember")
        by_secret = {g.inputs["secretId"]: g.inputs for g in grants}
        assert set(by_secret) == {"secret-toolkit-run-key-id", "secret-api-token-id", "db-password"}
        assert {g["role"] for g in by_secret.values()} == {"roles/secretmanager.secretAccessor"}
        assert {g["member"] for g in by_secret.values()} == {f"serviceAccount:{EMAIL}"}
        assert envs["DB_PASSWORD"]["valueSource"]["secretKeyRef"] == {"secret": "db-password", "version": "3"}

    def test_an_existing_service_account_is_used_and_only_granted_run_access(self) -> None:
        run = self.program({**self.sample(), "service_account": "runner@proj-1.iam.gserviceaccount.com"})
        assert not run.of_type("gcp:serviceaccount/account:Account")
        assert run.one(JOB).inputs["template"]["template"]["serviceAccount"] == "runner@proj-1.iam.gserviceaccount.com"
        members = {g.inputs["member"] for g in run.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")}
        assert members == {"serviceAccount:runner@proj-1.iam.gserviceaccount.com"}

    def test_customizations_patch_the_job_arguments(self) -> None:
        patch = [
            {"op": "add", "path": "/template/template/execution_environment", "value": "EXECUTION_ENVIRONMENT_GEN2"},
            {"op": "add", "path": "/launch_stage", "value": "BETA"},
        ]
        job = self.program({**self.sample(), "customizations": patch}).one(JOB).inputs
        assert job["template"]["template"]["executionEnvironment"] == "EXECUTION_ENVIRONMENT_GEN2"
        assert job["launchStage"] == "BETA"

    def test_project_comes_from_the_provider_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("GOOGLE_PROJECT", "env-project")
        job = self.program({"image": "img"}).one(JOB).inputs
        assert job["project"] == "env-project"

    # -- bad input fails before anything is provisioned -------------------------------

    @pytest.mark.parametrize(
        ("override", "words"),
        [
            ({"memory": "lots"}, ["'memory'", "'lots'"]),
            ({"cpu": "two"}, ["'cpu'", "'two'"]),
            ({"region": "Europe West"}, ["'region'"]),
            ({"max_retries": -1}, ["'max_retries'", "-1"]),
            ({"secrets": {"A": 1}}, ["'secrets.A'", "string"]),
        ],
    )
    def test_bad_overrides_are_rejected_before_rendering(self, override: dict[str, Any], words: list[str]) -> None:
        with pytest.raises(ConfigError) as info:
            self.render(override)
        assert all(word in str(info.value) for word in words), str(info.value)

    def test_a_run_without_image_is_refused_before_provisioning(self) -> None:
        _, variables = self.render({"project": "p"})
        with pytest.raises(ConfigError, match="needs the job variable 'image'"):
            self.target.check_capabilities(variables, "test-pool")

    @pytest.mark.parametrize(
        ("override", "message"),
        [
            ({"env": {"TOOLKIT_RUN_KEY": "x"}}, "set by the toolkit"),
            ({"env": {"A": "1"}, "secrets": {"A": "s"}}, "both in 'env' and in 'secrets'"),
            (
                {"customizations": [{"op": "add", "path": "/no_such_argument", "value": 1}]},
                "no argument 'no_such_argument'",
            ),
        ],
    )
    def test_inconsistent_jobs_are_rejected_when_parsed(self, override: dict[str, Any], message: str) -> None:
        config, _ = self.render({"image": "img", **override})
        with pytest.raises(ConfigError, match=message):
            self.target.parse_job(config, "test-pool")

    def test_a_missing_project_names_the_fix(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("GOOGLE_PROJECT", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"):
            monkeypatch.delenv(name, raising=False)
        with pytest.raises(ConfigError, match="set the 'project' job variable"):
            self.program({"image": "img"})


# -- the execution resource against the fake Cloud Run Admin API ---------------------------------------

JOB_NAME = f"projects/proj-1/locations/europe-west4/jobs/toolkit-{RUN_ID}"


@pytest.fixture
def cloud_run_api(google_apis: FakeGoogleApis, monkeypatch: pytest.MonkeyPatch) -> FakeGoogleApis:
    monkeypatch.setenv(RUN_ENDPOINT_ENV, google_apis.url)
    monkeypatch.setenv(LOGGING_ENDPOINT_ENV, google_apis.url)
    return google_apis


def _props() -> dict[str, Any]:
    return {"job": JOB_NAME, "execution": None, "poll_seconds": 0.01, "cancel_wait_seconds": 5}


def test_create_runs_the_job_and_names_the_execution(cloud_run_api: FakeGoogleApis) -> None:
    result = _ExecutionProvider().create(_props())
    assert [r.path for r in cloud_run_api.server.calls("POST")] == [f"/v2/{JOB_NAME}:run"]
    assert result.id == result.outs["execution"]
    assert result.id in cloud_run_api.executions and result.id.startswith(f"{JOB_NAME}/executions/toolkit-{RUN_ID}-")


def test_delete_cancels_a_running_execution_and_waits_for_it(cloud_run_api: FakeGoogleApis) -> None:
    cloud_run_api.cancel_polls = 3
    execution = _ExecutionProvider().create(_props()).id
    _ExecutionProvider().delete(execution, _props())
    assert cloud_run_api.server.calls("POST", ":cancel")[0].path == f"/v2/{execution}:cancel"
    assert cloud_run_api.executions[execution]["completionTime"]
    assert cloud_run_api.executions[execution]["cancelledCount"] == 1


def test_delete_of_a_finished_or_vanished_execution_cancels_nothing(cloud_run_api: FakeGoogleApis) -> None:
    execution = _ExecutionProvider().create(_props()).id
    cloud_run_api.executions[execution]["completionTime"] = "2026-11-24T10:00:00Z"
    _ExecutionProvider().delete(execution, _props())
    _ExecutionProvider().delete(f"{JOB_NAME}/executions/gone-12345", _props())
    assert not cloud_run_api.server.calls("POST", ":cancel")


def test_a_cancel_that_never_completes_fails_loudly(cloud_run_api: FakeGoogleApis) -> None:
    cloud_run_api.cancel_polls = 10_000
    execution = _ExecutionProvider().create(_props()).id
    with pytest.raises(CloudApiError, match="still running"):
        cancel_execution(run_api(), execution, poll_seconds=0.01, wait_seconds=0.2)


# -- the watcher on recorded Execution/Task shapes --------------------------------------------------------


def _execution(conditions: list[dict[str, Any]], **counts: Any) -> dict[str, Any]:
    return {"name": EXECUTION, "job": f"toolkit-{RUN_ID}", "taskCount": 1, "conditions": conditions, **counts}


def _cond(kind: str, state: str, **more: Any) -> dict[str, Any]:
    return {"type": kind, "state": state, "lastTransitionTime": "2026-11-24T10:00:00Z", **more}


def _task(exit_code: int, message: str, retried: int = 0) -> dict[str, Any]:
    return {
        "name": f"{EXECUTION}/tasks/toolkit-{RUN_ID}-x7k2p-task0",
        "index": 0,
        "retried": retried,
        "conditions": [_cond("Completed", "CONDITION_FAILED", message=message)],
        "lastAttemptResult": {"status": {"code": 2, "message": message}, "exitCode": exit_code},
    }


FAILED = _cond(
    "Completed",
    "CONDITION_FAILED",
    message="Task toolkit-x-task0 failed with message: see logs.",
    executionReason="NON_ZERO_EXIT_CODE",
)


@pytest.mark.parametrize(
    ("execution", "tasks", "state", "exit_code", "reason_words"),
    [
        (
            _execution([_cond("Completed", "CONDITION_PENDING"), _cond("ResourcesAvailable", "CONDITION_PENDING")]),
            [],
            "pending",
            None,
            [],
        ),
        (
            _execution(
                [_cond("Completed", "CONDITION_PENDING"), _cond("Started", "CONDITION_SUCCEEDED")], runningCount=1
            ),
            [],
            "running",
            None,
            [],
        ),
        (
            _execution([_cond("Completed", "CONDITION_SUCCEEDED")], succeededCount=1, completionTime="t"),
            [],
            "succeeded",
            0,
            [],
        ),
        (
            _execution([FAILED], failedCount=1, completionTime="t"),
            [_task(1, "The container exited with an error.")],
            "failed",
            1,
            ["task 0", "exit code 1"],
        ),
        (
            _execution([FAILED], failedCount=1, completionTime="t"),
            [_task(137, "Memory limit of 512 MiB exceeded with 530 MiB used. Consider increasing the memory limit.", 2)],
            "failed",
            137,
            ["Memory limit", "raise the 'memory' job variable"],
        ),
        (
            _execution(
                [
                    _cond("Completed", "CONDITION_PENDING"),
                    _cond(
                        "ResourcesAvailable",
                        "CONDITION_FAILED",
                        reason="CONTAINER_MISSING",
                        message="Image 'gcr.io/p/missing:1' not found.",
                    ),
                ]
            ),
            [],
            "failed",
            None,
            ["could not start", "not found"],
        ),
        (
            _execution(
                [_cond("Completed", "CONDITION_FAILED", executionReason="CANCELLED")],
                cancelledCount=1,
                completionTime="t",
            ),
            [],
            "failed",
            None,
            ["cancelled"],
        ),
    ],
    ids=["pending", "running", "succeeded", "exit-1", "oom", "image-missing", "cancelled"],
)
def test_watcher_maps_execution_states(
    cloud_run_api: FakeGoogleApis,
    execution: dict[str, Any],
    tasks: list[dict[str, Any]],
    state: str,
    exit_code: int | None,
    reason_words: list[str],
) -> None:
    cloud_run_api.executions[EXECUTION] = execution
    cloud_run_api.tasks[EXECUTION] = tasks
    watcher = CloudRunTarget().watcher(None, {"execution": EXECUTION, "project": "proj-1"})  # type: ignore[arg-type]
    status = watcher.status()
    assert (status.state, status.exit_code) == (state, exit_code)
    assert all(word in (status.reason or "") for word in reason_words), status.reason
    if tasks:  # a failed task says how often Cloud Run ran it (max_retries = `retries`)
        assert status.attempt == tasks[0]["retried"] + 1


def test_api_calls_carry_the_token_of_the_metadata_server(cloud_run_api: FakeGoogleApis) -> None:
    """google-auth's Compute Engine credentials: token from the (fake) metadata server, sent as a bearer."""
    cloud_run_api.executions[EXECUTION] = _execution([_cond("Completed", "CONDITION_SUCCEEDED")], completionTime="t")
    cloud_run_api.tasks[EXECUTION] = []
    watcher = CloudRunTarget().watcher(None, {"execution": EXECUTION, "project": "proj-1"})  # type: ignore[arg-type]
    assert watcher.status().state == "succeeded"
    assert cloud_run_api.server.calls("GET", "/computeMetadata/v1/instance/service-accounts/default/token")
    api = cloud_run_api.api_requests()
    assert api and {r.headers.get("Authorization") for r in api} == {f"Bearer {TOKEN}"}
    # the fake refuses a call without that token, so the test above cannot pass without it
    with pytest.raises(CloudApiError, match="HTTP 401 UNAUTHENTICATED"):
        RestClient(cloud_run_api.url, requests.Session()).call("GET", f"/v2/{EXECUTION}")


def test_watcher_reads_each_log_entry_once(cloud_run_api: FakeGoogleApis) -> None:
    resource = {"type": "cloud_run_job", "labels": {"job_name": f"toolkit-{RUN_ID}", "location": "europe-west4"}}
    mine = {"run.googleapis.com/execution_name": f"toolkit-{RUN_ID}-x7k2p"}
    cloud_run_api.add_log(
        "other execution", resource, {"run.googleapis.com/execution_name": "other"}, "2026-11-24T10:00:00Z"
    )
    cloud_run_api.add_log("line 1", resource, mine, "2026-11-24T10:00:01Z")
    cloud_run_api.add_log("line 2", resource, mine, "2026-11-24T10:00:01Z")
    client = RestClient(cloud_run_api.url, google_session())
    watcher = CloudRunWatcher(EXECUTION, "proj-1", client=client, min_interval=0)
    watcher._logs = CloudLogReader("proj-1", watcher._logs._filter, client=client, min_interval=0)
    assert watcher.read_logs() == "line 1\nline 2\n"
    assert watcher.read_logs() == ""
    cloud_run_api.add_log("line 3", resource, mine, "2026-11-24T10:00:02Z")
    assert watcher.read_logs() == "line 3\n"
    sent = cloud_run_api.server.calls("POST", "entries:list")[-1].body
    assert sent["resourceNames"] == ["projects/proj-1"] and 'timestamp>="2026-11-24T10:00:01Z"' in sent["filter"]


def test_log_failures_are_reported_once_and_never_fail_the_run(cloud_run_api: FakeGoogleApis) -> None:
    client = RestClient(cloud_run_api.url + "/broken", __import__("requests").Session())
    reader = CloudLogReader("proj-1", 'resource.type="cloud_run_job"', client=client, min_interval=0)
    assert "job logs are unavailable" in reader.read()
    assert reader.read() == ""


# -- storage: the per-run bucket on fake-gcs-server ------------------------------------------------------


def test_bundle_and_result_travel_through_the_runs_bucket(gcs_with_credentials: GatedGcs) -> None:
    """The job and the client reach the bucket with the credentials the metadata server gives, never anonymously."""
    gcs = gcs_with_credentials
    target = CloudRunTarget()
    suite = TestCloudRunTarget()
    bundle = suite.program(suite.sample()).one("gcp:storage/bucketObject:BucketObject").inputs
    url = target.per_run_storage_url(RUN_ID)
    assert url == f"gs://{bundle['bucket']}"
    gcs.fake.create_bucket(bundle["bucket"])
    result = round_trip(
        url, gcs.storage_options, lambda data: gcs.fake.upload(bundle["bucket"], bundle["name"], data), RUN_KEY
    )
    assert result == 42
    assert gcs.refused() == [] and gcs.admitted()  # the job and the client reached it only through the gate, as themselves


# -- the whole submission path -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "message"),
    [({"memory": "lots"}, "job variable 'memory'"), ({"project": "p"}, "needs the job variable 'image'")],
)
def test_prepare_refuses_bad_input_before_staging_anything(layer: dict[str, Any], message: str) -> None:
    registry = PoolRegistry()
    registry.save(WorkPool(name="cloud-run-checks", type="cloud_run"), overwrite=True)
    staging = settings.home() / "staging"
    before = set(staging.glob("*")) if staging.exists() else set()
    with pytest.raises(ConfigError, match=message):
        prepare(lambda: 1, (), {}, "cloud-run-checks", [layer], expected_type="cloud_run")
    assert (set(staging.glob("*")) if staging.exists() else set()) == before
