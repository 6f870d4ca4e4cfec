"""Each cloud target's job reaches its storage through the requests the client signed, with no storage driver.

Per target (ECS on moto, Cloud Run and Vertex AI on fake-gcs-server, ACI on
Azurite): the run's program under the Pulumi mocks, with the caller's
credentials for the emulator; the run storage it registers, created by the
toolkit's own provider (bundle, and a map's table of signed requests); then the
job exactly as the program defined it (its command, its plain environment, its
secrets resolved from the secret resources the program made) runs the real
runner with s3fs, gcsfs, adlfs (fsspec itself, and every cloud SDK) made
unimportable, and the client collects the result. The signed requests reach the
job only as a secret: no signature appears in any input outside a Pulumi secret.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from azure.storage.blob import BlobServiceClient

from tests.emulators.aws import REGION, aws, aws_emulator  # noqa: F401 - fixtures
from tests.emulators.azure import Azurite, azurite  # noqa: F401 - fixture
from tests.emulators.gcp import (  # noqa: F401 - fixtures
    FakeGoogleApis,
    GatedGcs,
    fake_gcs,
    gcs_with_credentials,
    google_apis,
)
from tests.infra import test_azure_container_instance, test_cloud_run, test_ecs, test_kubernetes, test_vertex_ai
from tests.infra.conformance import RUN_KEY, TargetConformance
from tests.infra.mocking import SECRET_SIG_KEY, ProgramRun, run_program
from tests.infra.storage_roundtrip import NO_STORAGE_DRIVERS, ROOT, collect, sealed_bundle
from tests.infra.test_signed_storage import _service_account
from toolkit.bundles import RUN_KEY_ENV, dump_call, seal
from toolkit.fanout.items import stage_items
from toolkit.fanout.results import ItemResults
from toolkit.gcp_secret_env import METADATA_HOST_ENV, SECRET_MANAGER_ENDPOINT_ENV
from toolkit.infra.run import FanOut
from toolkit.providers.run_storage import RunStorageProvider
from toolkit.storage_urls import URLS_ENV

SIGNATURES = ("X-Amz-Signature", "X-Goog-Signature", "sig=")
"""What a signed URL carries: none may appear in the program's inputs outside a Pulumi secret."""

_RUN = TargetConformance.run_id
AZURITE_ACCOUNTS = (f"tkrun{_RUN}",)
"""ACI's per-run storage account, served by Azurite with the key the program's mocks list for it."""
Job = tuple[list[str], dict[str, str]]
"""The runner's arguments (after ``-m toolkit.runner``) and the job's environment."""


def _program(
    suite: TargetConformance, url: str, options: dict[str, Any], tmp_path: Path, bundle: bytes,
    fanout: FanOut | None = None, signing_env: dict[str, str] | None = None,
) -> ProgramRun:
    """The target's program for a run in a pool's shared prefix ``url`` (fsspec ``options``), a timeout of
    ten minutes; the staged bundle is ``bundle``. ``signing_env``: the caller's credentials while the program
    runs (and signs), not while its storage is made."""
    staged = tmp_path / f"{suite.run_id}.tkb"
    staged.write_bytes(bundle)
    context = dataclasses.replace(
        suite.context(suite.sample()), storage_url=url, storage_options=options, shared_storage=True,
        bundle_path=staged, timeout=600, fanout=fanout,
    )
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (signing_env or {}).items():
            patch.setenv(name, value)
        run = run_program(lambda: suite.target.program(context), outputs=suite.mock_outputs, calls=suite.mock_calls)
    _no_signature_in_plaintext(run)
    storage = run.one("toolkit:index:RunStorage").inputs
    RunStorageProvider().create({key: value for key, value in storage.items() if key != "__provider"})
    return run


def _no_signature_in_plaintext(run: ProgramRun) -> None:
    for resource in run.resources:
        plain = json.dumps(_without_secrets(resource.raw))
        assert not any(mark in plain for mark in SIGNATURES), f"a signed URL in plaintext in {resource.name}"


def _without_secrets(node: Any) -> Any:
    if isinstance(node, dict):
        return "[secret]" if SECRET_SIG_KEY in node else {key: _without_secrets(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_without_secrets(value) for value in node]
    return node


def _runner_args(command: list[str]) -> list[str]:
    return command[command.index("toolkit.runner") + 1 :]


def _start(job: Job, extra_env: dict[str, str] | None = None, argv: list[str] | None = None) -> subprocess.Popen[str]:
    """The job: ``python -c NO_STORAGE_DRIVERS`` with its runner arguments (or ``argv``, which runs it), and
    nothing of this process's environment that could reach storage (credentials, endpoints)."""
    args, env = job
    base = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("TOOLKIT_", "PULUMI_", "AWS_", "AZURE_", "GOOGLE_", "STORAGE_EMULATOR"))
    }
    return subprocess.Popen(
        argv or [sys.executable, "-c", NO_STORAGE_DRIVERS, *args],
        env={**base, "PYTHONPATH": str(ROOT), **env, **(extra_env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _finish(job: subprocess.Popen[str]) -> str:
    output = job.communicate(timeout=120)[0]
    assert job.returncode == 0, output
    return output


# -- each target's job, as its program defined it ------------------------------------------------------------


def _ecs_job(run: ProgramRun) -> Job:
    container = json.loads(run.one(test_ecs.TASK_DEFINITION).inputs["containerDefinitions"])[0]
    arns = {test_ecs.secret_arn(s.inputs["name"]): s.id for s in run.of_type("aws:secretsmanager/secret:Secret")}
    values = {
        v.inputs["secretId"]: v.inputs["secretString"] for v in run.of_type("aws:secretsmanager/secretVersion:SecretVersion")
    }
    env = {e["name"]: e["value"] for e in container["environment"]}
    env.update({s["name"]: values[arns[s["valueFrom"]]] for s in container["secrets"] if s["valueFrom"] in arns})
    return _runner_args(container["command"]), env


def _kubernetes_job(run: ProgramRun) -> Job:
    """The Job's runner: plain values inline, the run Secret's values by their ``secretKeyRef``."""
    container = run.one(test_kubernetes.JOB).inputs["spec"]["template"]["spec"]["containers"][0]
    [secret] = run.of_type("kubernetes:core/v1:Secret")
    data = secret.inputs["stringData"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    for entry in container["env"]:
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["key"] in data:
            env[entry["name"]] = data[ref["key"]]
    return _runner_args(container["command"]), env


def _google_secrets(run: ProgramRun) -> dict[tuple[str, str], str]:
    """(secret id, version number) and the version's full name -> the value the program stored."""
    ids = {s.id: s.inputs["secretId"] for s in run.of_type("gcp:secretmanager/secret:Secret")}
    found = {}
    for version in run.of_type("gcp:secretmanager/secretVersion:SecretVersion"):
        found[(ids[version.inputs["secret"]], version.extra_outputs["version"])] = version.inputs["secretData"]
    return found


def _cloud_run_job(run: ProgramRun) -> Job:
    container = run.one(test_cloud_run.JOB).inputs["template"]["template"]["containers"][0]
    secrets = _google_secrets(run)
    env = {e["name"]: e["value"] for e in container["envs"] if "value" in e}
    for entry in container["envs"]:
        ref = entry.get("valueSource", {}).get("secretKeyRef")
        if ref and (ref["secret"], ref["version"]) in secrets:
            env[entry["name"]] = secrets[(ref["secret"], ref["version"])]
    return _runner_args([*container["commands"], *container["args"]]), env


def _aci_job(container: dict[str, Any]) -> Job:
    """One container of the group (a map's worker): its command and environment, secure values included."""
    env = {e["name"]: e.get("value", e.get("secureValue")) for e in container["environmentVariables"]}
    return _runner_args(container["command"]), env


def _aci_containers(run: ProgramRun) -> list[dict[str, Any]]:
    return run.one("azure-native:containerinstance:ContainerGroup").inputs["containers"]


# -- single calls -------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("aws")
@pytest.mark.parametrize(("suite", "job_of"), [
    pytest.param(test_ecs.TestEcsTarget, _ecs_job, id="ecs task"),
    pytest.param(test_kubernetes.TestKubernetesTarget, _kubernetes_job, id="kubernetes pod"),
])
def test_a_job_on_s3_reads_its_bundle_and_writes_its_result_through_presigned_requests(
    suite: type[TargetConformance], job_of: Callable[[ProgramRun], Job], tmp_path: Path
) -> None:
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="signed-runs")
    url = f"s3://signed-runs/pool/{suite.run_id}"
    run = _program(suite(), url, {}, tmp_path, sealed_bundle(RUN_KEY))
    args, env = job_of(run)
    assert URLS_ENV in env and RUN_KEY_ENV in env
    _finish(_start((args, env)))
    assert collect(url, {}, RUN_KEY) == 42


def test_a_cloud_run_job_reads_its_bundle_and_writes_its_result_through_signed_urls(
    gcs_with_credentials: GatedGcs, tmp_path: Path  # noqa: F811
) -> None:
    gcs = gcs_with_credentials
    url, signing_env = _signing_gcs(gcs, tmp_path, "signed-cloud-run")
    run = _program(test_cloud_run.TestCloudRunTarget(), url, gcs.storage_options, tmp_path, sealed_bundle(RUN_KEY), signing_env=signing_env)
    args, env = _cloud_run_job(run)
    _finish(_start((args, env)))
    assert collect(url, gcs.storage_options, RUN_KEY) == 42
    _only_bundle_and_result_signed(gcs, url)


def test_a_vertex_ai_job_reads_its_secrets_then_its_bundle_through_signed_urls(
    gcs_with_credentials: GatedGcs, google_apis: FakeGoogleApis, tmp_path: Path  # noqa: F811
) -> None:
    """The whole command: ``gcp_secret_env`` reads the run's secrets (the signed requests among them) from
    Secret Manager with the job's token, then starts the runner, here with no storage driver importable."""
    gcs = gcs_with_credentials
    url, signing_env = _signing_gcs(gcs, tmp_path, "signed-vertex")
    run = _program(test_vertex_ai.TestVertexAiTarget(), url, gcs.storage_options, tmp_path, sealed_bundle(RUN_KEY), signing_env=signing_env)
    spec = run.one(test_vertex_ai.CUSTOM_JOB).inputs["body"]["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]
    for version in run.of_type("gcp:secretmanager/secretVersion:SecretVersion"):
        google_apis.secrets[version.extra_outputs["name"]] = version.inputs["secretData"]
    assert any(ref.startswith(f"{URLS_ENV}=") for ref in spec["command"])
    command = spec["command"]
    runner = command.index("toolkit.runner") - 3  # python3 -u -m toolkit.runner ...
    argv = [sys.executable if part == "python3" else part for part in command[:runner]]
    argv += [sys.executable, "-c", NO_STORAGE_DRIVERS, *_runner_args(command)]
    env = {e["name"]: e["value"] for e in spec["env"]}
    apis = {METADATA_HOST_ENV: google_apis.url.removeprefix("http://"), SECRET_MANAGER_ENDPOINT_ENV: google_apis.url}
    _finish(_start(([], env), apis, argv))
    assert collect(url, gcs.storage_options, RUN_KEY) == 42
    _only_bundle_and_result_signed(gcs, url)


def test_an_aci_container_reads_its_bundle_and_writes_its_result_through_sas_urls(
    azurite: Azurite, tmp_path: Path  # noqa: F811
) -> None:
    suite = test_azure_container_instance.TestAzureContainerInstanceTarget()
    url, options = _azurite_prefix(azurite, "signed-runs")
    run = _program(suite, url, options, tmp_path, sealed_bundle(RUN_KEY))
    args, env = _aci_job(_aci_containers(run)[0])
    assert URLS_ENV in env
    _finish(_start((args, env)))
    assert collect(url, options, RUN_KEY) == 42


def test_an_aci_container_on_the_runs_own_account_gets_requests_signed_with_its_key(
    azurite: Azurite, tmp_path: Path  # noqa: F811
) -> None:
    """ACI's default storage, an account per run, whose key exists only once it is made: the program signs a
    single call's requests with it (``Bucket.signing_options``), in the account key's apply."""
    suite = test_azure_container_instance.TestAzureContainerInstanceTarget()
    account = f"tkrun{_RUN}"
    service = BlobServiceClient.from_connection_string(azurite.connection_string(account))
    service.create_container("run")
    staged = tmp_path / f"{_RUN}.tkb"
    staged.write_bytes(sealed_bundle(RUN_KEY))
    options = {"account_host": f"{azurite.blob_endpoint}/{account}"}  # the pool's: where the account is served
    context = dataclasses.replace(
        suite.context(suite.sample()), storage_options=options, bundle_path=staged, timeout=600
    )
    assert not context.shared_storage
    run = run_program(lambda: suite.target.program(context), outputs=suite.mock_outputs, calls=suite.mock_calls)
    _no_signature_in_plaintext(run)
    service.get_blob_client("run", run.one("azure-native:storage:Blob").inputs["blobName"]).upload_blob(
        staged.read_bytes()
    )
    args, env = _aci_job(_aci_containers(run)[0])
    assert env[URLS_ENV]
    _finish(_start((args, env)))
    assert collect(context.storage_url, {"connection_string": azurite.connection_string(account)}, RUN_KEY) == 42


def _azurite_prefix(emulator: Azurite, container: str) -> tuple[str, dict[str, Any]]:
    """A new ``container`` of Azurite's account (shared by the module's tests): the run's URL in it, and the
    fsspec options whose account key the program signs with."""
    options = {"connection_string": emulator.connection_string()}
    BlobServiceClient.from_connection_string(options["connection_string"]).create_container(container)
    return f"az://{container}@devstoreaccount1.blob.core.windows.net/pool/{_RUN}", options


def _signing_gcs(gcs: GatedGcs, tmp_path: Path, bucket: str) -> tuple[str, dict[str, str]]:
    """A new ``bucket`` on the gated fake-gcs-server (shared by the module's tests), the run's URL in it, and
    the caller's service account key (trusted by the gate) as its application default credentials, for the
    program to sign with."""
    gcs.fake.create_bucket(bucket)
    key_file = _service_account(tmp_path)["path"]
    gcs.trust(key_file)
    return f"gs://{bucket}/pool/{_RUN}", {"GOOGLE_APPLICATION_CREDENTIALS": key_file}


def _only_bundle_and_result_signed(gcs: GatedGcs, url: str) -> None:
    """The job's requests (signed ones; the client's carry a token): its bundle in, its result out."""
    prefix = url.removeprefix("gs:/")
    assert sorted(gcs.admitted("signed")) == [("GET", f"{prefix}/bundle.tkb"), ("PUT", f"{prefix}/result.tkb")]


# -- maps ---------------------------------------------------------------------------------------------------


def _map_program(
    suite: TargetConformance, url: str, options: dict[str, Any], tmp_path: Path, count: int, workers: int,
    signing_env: dict[str, str] | None = None,
) -> tuple[ProgramRun, Callable[[], list[Any]]]:
    """A map of ``count`` items run by ``workers``; the program and how to collect its results in order."""

    def add_forty(x: int) -> int:
        print(f"ran item {x}", flush=True)
        return x + 40

    staged = tmp_path / "items"
    assert stage_items(add_forty, (range(count),), RUN_KEY, staged) == count
    bundle = seal("bundle", dump_call(add_forty, (), {}), RUN_KEY, function="add_forty")
    fanout = FanOut(count=count, parallelism=workers, items_path=staged)
    run = _program(suite, url, options, tmp_path, bundle, fanout, signing_env)

    def results() -> list[Any]:
        collected = ItemResults(url, options, count, RUN_KEY, tmp_path / "spool")
        assert collected.poll(), collected.counts()
        return [collected.value(index) for index in range(count)]

    return run, results


def _ran_once_each(outputs: list[str], count: int) -> None:
    ran = sorted(line for output in outputs for line in output.splitlines() if line.startswith("ran item"))
    assert ran == sorted(f"ran item {x}" for x in range(count)), ran


@pytest.mark.usefixtures("aws")
def test_an_ecs_maps_tasks_claim_items_through_presigned_conditional_creates(tmp_path: Path) -> None:
    """Three tasks of the task definition the program made, racing for six items through the signed table."""
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="signed-runs")
    suite = test_ecs.TestEcsTarget()
    url = f"s3://signed-runs/pool/{suite.run_id}"
    run, results = _map_program(suite, url, {}, tmp_path, count=6, workers=3)
    assert run.one(test_ecs.TASK).inputs["count"] == 3
    job = _ecs_job(run)
    outputs = [_finish(worker) for worker in [_start(job) for _ in range(3)]]
    _ran_once_each(outputs, 6)
    assert results() == [x + 40 for x in range(6)]


def test_an_aci_maps_containers_claim_items_through_sas_conditional_creates(
    azurite: Azurite, tmp_path: Path  # noqa: F811
) -> None:
    suite = test_azure_container_instance.TestAzureContainerInstanceTarget()
    url, options = _azurite_prefix(azurite, "signed-map")
    run, results = _map_program(suite, url, options, tmp_path, count=6, workers=3)
    containers = _aci_containers(run)
    assert len(containers) == 3
    jobs = [_aci_job(container) for container in containers]
    outputs = [_finish(worker) for worker in [_start(job) for job in jobs]]
    _ran_once_each(outputs, 6)
    assert results() == [x + 40 for x in range(6)]


def test_a_cloud_run_maps_tasks_run_their_index_through_signed_urls(
    gcs_with_credentials: GatedGcs, tmp_path: Path  # noqa: F811
) -> None:
    """Cloud Run's tasks run the item their index names: no claim to race for, so GCS signs a map too."""
    gcs = gcs_with_credentials
    url, signing_env = _signing_gcs(gcs, tmp_path, "signed-cloud-run-map")
    run, results = _map_program(test_cloud_run.TestCloudRunTarget(), url, gcs.storage_options, tmp_path, 3, 3, signing_env)
    job = _cloud_run_job(run)
    outputs = [_finish(_start(job, {"CLOUD_RUN_TASK_INDEX": str(index)})) for index in range(3)]
    _ran_once_each(outputs, 3)
    assert results() == [40, 41, 42]
    prefix = url.removeprefix("gs:/")
    expected = {("GET", f"{prefix}/{name}") for name in ("bundle.tkb", "urls.tkb", *(f"items/{i}.tkb" for i in range(3)))}
    expected |= {("PUT", f"{prefix}/{name}") for i in range(3) for name in (f"claims/{i}", f"results/{i}.tkb")}
    assert set(gcs.admitted("signed")) == expected  # the job's every request: signed, none with a token
