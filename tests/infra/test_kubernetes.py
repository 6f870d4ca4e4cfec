"""Kubernetes target: conformance under mocks, manifests against the official schemas, the watcher, S3 storage.

Evidence by kind: the Pulumi program under ``set_mocks`` (resources, inputs,
secrets); every manifest it would send validated with ``kubernetes-validate``
(the Kubernetes OpenAPI schemas, strict) for two Kubernetes versions; the
watcher's decisions on Job and Pod objects in the shape the API returns them
(``data/kubernetes_api_objects.json``), deserialized by the kubernetes client
itself; and ``RunStorage`` plus the runner on ``s3://`` against an AWS emulator.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
import fsspec
import kubernetes_validate
import pytest
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from tests.emulators.aws import REGION, aws, aws_emulator  # noqa: F401 - fixtures
from tests.infra.conformance import RUN_KEY, SECRET_ENV, SECRET_VALUE, RemoteEnvironmentConformance, items_argument
from tests.infra.mocking import ProgramRun, run_program
from tests.infra.storage_roundtrip import round_trip
from toolkit.bundles import BUNDLE_NAME, FILES_NAME, RUN_KEY_ENV, STORAGE_OPTIONS_ENV
from toolkit.errors import ConfigError, TargetUnavailableError
from toolkit.infra.image_registry import ImageRegistry
from toolkit.infra.watch import WorkersWatcher
from toolkit.providers.run_storage import RunStorageProvider
from toolkit.targets.kubernetes.cluster import connect
from toolkit.targets.kubernetes.status import PULL_SECRET_GRACE_SECONDS
from toolkit.targets.kubernetes.target import JobReader, KubernetesTarget, KubernetesWatcher, WorkerWatcher

KUBERNETES_VERSIONS = ("1.30", "1.33")
IRSA = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/toolkit-runs"}
JOB = "kubernetes:batch/v1:Job"
OBJECTS = json.loads((Path(__file__).parent / "data" / "kubernetes_api_objects.json").read_text())


def _integral(node: Any) -> Any:
    """Whole numbers back to ints: Pulumi's wire format (protobuf Struct) carries every number as a double."""
    if isinstance(node, float) and node.is_integer():
        return int(node)
    if isinstance(node, dict):
        return {key: _integral(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_integral(value) for value in node]
    return node


def manifests(run: ProgramRun) -> list[dict[str, Any]]:
    """Every Kubernetes object the program sends to the cluster, as the provider receives it."""
    return [_integral(r.inputs) for r in run.resources if r.type.startswith("kubernetes:")]


def _container(run: ProgramRun) -> dict[str, Any]:
    return run.one(JOB).inputs["spec"]["template"]["spec"]["containers"][0]


def _env(run: ProgramRun) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in _container(run)["env"]}


class TestKubernetesTarget(RemoteEnvironmentConformance):
    target_cls = KubernetesTarget
    map_workers_are_jobs = False  # one Indexed Job, whose workers are followed by completion index (see below)
    pool_storage_url = "s3://pool-bucket/runs"
    shared_prefix_url = "s3://pool-bucket/runs"
    pull_registry = {"url": "registry.example.com/ml"}
    reaches_loopback = True
    sample_variables = {
        "image": "reg.example.com/train:1",
        "namespace": "ml",
        "memory": "64Gi",
        "cpu": "8",
        "gpu": 1,
        "image_pull_policy": "Always",
        "image_pull_secrets": ["regcred"],
        "service_account_annotations": IRSA,
        "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "labels": {"team": "ml"},
        "annotations": {"owner": "ml-platform"},
        "backoff_limit": 1,
        "active_deadline_seconds": 7200,
        "ttl_seconds_after_finished": 600,
        "env": {"MODE": "fast"},
        "secret_env": {"DB_PASSWORD": "db-credentials/password"},
        "customizations": [{"op": "add", "path": "/spec/template/spec/priorityClassName", "value": "batch-low"}],
    }
    job_type = JOB
    expected_resources = {
        ("pulumi:providers:kubernetes", "cluster"),
        ("toolkit:index:RunStorage", "run-storage"),
        ("kubernetes:core/v1:Secret", "run-secret"),
        ("kubernetes:core/v1:ServiceAccount", "service-account"),
        ("kubernetes:rbac.authorization.k8s.io/v1:Role", "run-role"),
        ("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding", "run-role-binding"),
        (JOB, "job"),
    }
    expected_exports = {"namespace": "ml", "job_name": "toolkit-0123abcd4567", "container": "runner"}

    def job_image(self, run: ProgramRun) -> str:
        return _container(run)["image"]

    def map_shape(self, run: ProgramRun) -> tuple[int, int]:
        """One Indexed Job of ``parallelism`` pods, each a worker claiming items, its completion index its
        number; no pod is ever replaced (items are retried through the claims), whatever backoff_limit says."""
        spec = _integral(run.one(JOB).inputs["spec"])
        assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
        assert spec["backoffLimitPerIndex"] == 0 and "backoffLimit" not in spec
        command = _container(run)["command"]
        assert "--index-env" not in command
        worker = "$(JOB_COMPLETION_INDEX)"  # the kubelet expands it from the env the Job controller adds
        assert command[command.index("--worker") + 1] == worker and "--await-items" in command
        assert command[command.index("--stripe") + 1] == f"{worker}/{spec['parallelism']}"
        return items_argument(command), spec["parallelism"]

    def test_a_maps_watcher_follows_each_worker_the_program_made(self) -> None:
        """Each worker of the map's one Job is followed by its completion index, all through one reader
        of the exported Job (one read of the Job and its pods per poll, however many workers)."""
        context = self.map_context(self.sample())
        run = run_program(lambda: self.target.program(context), outputs=self.mock_outputs)
        watcher = self.target.watcher(context, run.exports)
        assert isinstance(watcher, WorkersWatcher)
        workers = watcher.workers
        assert all(isinstance(worker, WorkerWatcher) for worker in workers)
        assert [worker._index for worker in workers] == list(range(self.map_parallelism))
        [reader] = {id(worker._reader): worker._reader for worker in workers}.values()
        assert (reader.namespace, reader.job_name, reader.container) == ("ml", "toolkit-0123abcd4567", "runner")

    def test_a_maps_fresh_job_has_a_name_of_its_own(self) -> None:
        """The Job it replaces may still be being deleted (its pods' grace period) under the first name."""
        context = dataclasses.replace(self.map_context(self.sample(), {"retries": 1}), attempt=2)
        run = run_program(lambda: self.target.program(context), outputs=self.mock_outputs)
        assert run.one(JOB).inputs["metadata"]["name"] == "toolkit-0123abcd4567-2"
        assert run.exports["job_name"] == "toolkit-0123abcd4567-2"

    def test_a_maps_items_are_retried_by_the_engine_a_calls_by_the_job(self) -> None:
        """``retries`` of a call is the Job's backoffLimit; a map's workers are never replaced, so its
        items' retries are the engine's (the count still read from backoff_limit, which holds it)."""
        target = self.target
        assert target.retried_natively(None)
        assert not target.retried_natively(self.map_context(self.sample()).fanout)

    def uploaded_names(self, run: ProgramRun) -> set[str]:
        storage = run.one("toolkit:index:RunStorage").inputs
        return {BUNDLE_NAME} | ({FILES_NAME} if storage.get("files_path") else set())

    # -- what the program creates ------------------------------------------------------------

    def test_pool_registry_credentials_become_a_pull_secret_of_the_run(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REGISTRY_TOKEN", "registry-password-never-in-plaintext")
        registry = ImageRegistry(url="registry.example.com/ml", username="robot", password_env="REGISTRY_TOKEN")
        context = dataclasses.replace(self.environment_context(self.sample()), image_registry=registry)
        run = run_program(lambda: self.target.program(context), outputs=self.mock_outputs)
        name = f"toolkit-{self.run_id}-pull"
        secret = next(r for r in run.of_type("kubernetes:core/v1:Secret") if r.inputs["metadata"]["name"] == name)
        assert secret.inputs["type"] == "kubernetes.io/dockerconfigjson"
        assert "stringData" in secret.secret_paths()  # a Pulumi secret: encrypted in state, masked in previews
        config = json.loads(secret.inputs["stringData"][".dockerconfigjson"])
        assert config["auths"]["registry.example.com"]["password"] == "registry-password-never-in-plaintext"
        assert secret.inputs["metadata"]["labels"] == {"toolkit-run": self.run_id, "toolkit-pool": "test-pool"}
        pod = run.one(JOB).inputs["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": name}]
        assert "registry-password-never-in-plaintext" not in json.dumps(run.one(JOB).raw)

    def test_a_registry_without_pool_credentials_adds_no_pull_secret(self) -> None:
        run = self.environment_program(self.sample())
        assert [r.inputs["metadata"]["name"] for r in run.of_type("kubernetes:core/v1:Secret")] == [
            f"toolkit-{self.run_id}"
        ]
        assert run.one(JOB).inputs["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]

    def test_overrides_reach_the_job_manifest(self) -> None:
        run = self.program(self.sample())
        job = _integral(run.one(JOB).inputs)
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": 1}
        assert container["resources"]["requests"] == {}  # Kubernetes copies limits into unset requests
        assert container["image"] == "reg.example.com/train:1" and container["imagePullPolicy"] == "Always"
        pod = job["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["priorityClassName"] == "batch-low" and pod["restartPolicy"] == "Never"
        spec = job["spec"]
        assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (1, 7200, 600)
        run_labels = {"toolkit-run": self.run_id, "toolkit-pool": "test-pool"}
        assert job["metadata"]["labels"] == {"team": "ml", **run_labels}
        assert job["spec"]["template"]["metadata"]["labels"] == {"team": "ml", **run_labels}
        assert job["metadata"]["annotations"] == {
            "owner": "ml-platform",
            "pulumi.com/skipAwait": "true",
            "pulumi.com/deletionPropagationPolicy": "foreground",
        }
        assert container["command"][-3:] == ["toolkit.runner", "--storage", f"s3://pool-bucket/runs/{self.run_id}"]
        assert {m["metadata"]["namespace"] for m in manifests(run)} == {"ml"}

    def assert_native_retries(self, run: ProgramRun, retries: int) -> None:
        assert _integral(run.one(JOB).inputs)["spec"]["backoffLimit"] == retries

    def test_separate_requests_are_honoured(self) -> None:
        run = self.program(self.sample(), {"cpu_request": "2", "memory_request": "32Gi"})
        assert _container(run)["resources"]["requests"] == {"cpu": "2", "memory": "32Gi"}

    def test_bundle_goes_to_the_pools_storage_prefix(self) -> None:
        storage = self.program(self.sample()).one("toolkit:index:RunStorage").inputs
        assert storage["url"] == f"s3://pool-bucket/runs/{self.run_id}"

    def test_identity_is_a_run_service_account_that_may_read_only_its_secret(self) -> None:
        run = self.program(self.sample())
        name = f"toolkit-{self.run_id}"
        account = run.one("kubernetes:core/v1:ServiceAccount").inputs
        assert account["metadata"]["name"] == name and account["metadata"]["annotations"] == IRSA
        assert account["automountServiceAccountToken"] is False
        role = run.one("kubernetes:rbac.authorization.k8s.io/v1:Role").inputs
        assert role["rules"] == [
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [name], "verbs": ["get"]}
        ]
        binding = run.one("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding").inputs
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": "ml"}]
        pod = run.one(JOB).inputs["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == name and pod["automountServiceAccountToken"] is False
        assert run.one("kubernetes:core/v1:Secret").inputs["metadata"]["name"] == name

    def test_an_existing_service_account_is_used_not_created(self) -> None:
        variables = {**self.sample(), "service_account_annotations": {}, "service_account_name": "trainer"}
        run = self.program(variables)
        assert not run.of_type("kubernetes:core/v1:ServiceAccount")
        assert run.one(JOB).inputs["spec"]["template"]["spec"]["serviceAccountName"] == "trainer"
        subjects = run.one("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding").inputs["subjects"]
        assert subjects == [{"kind": "ServiceAccount", "name": "trainer", "namespace": "ml"}]

    def test_run_key_and_secret_env_reach_the_pod_only_through_the_run_secret(self) -> None:
        run = self.program(self.sample())
        secret = run.one("kubernetes:core/v1:Secret")
        assert secret.secret_paths() == {"stringData"}
        assert secret.inputs["stringData"] == {"run-key": RUN_KEY, f"env.{SECRET_ENV}": SECRET_VALUE}
        env = _env(run)
        name = f"toolkit-{self.run_id}"
        assert env[RUN_KEY_ENV] == {
            "name": RUN_KEY_ENV,
            "valueFrom": {"secretKeyRef": {"name": name, "key": "run-key"}},
        }
        assert env[SECRET_ENV]["valueFrom"] == {"secretKeyRef": {"name": name, "key": f"env.{SECRET_ENV}"}}
        assert env["DB_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "db-credentials", "key": "password"}}
        assert env["MODE"] == {"name": "MODE", "value": "fast"}
        assert json.loads(env[STORAGE_OPTIONS_ENV]["value"]) == {}
        job = json.dumps(run.one(JOB).inputs)
        assert RUN_KEY not in job and SECRET_VALUE not in job

    def test_provider_uses_the_named_kubeconfig_context(self) -> None:
        run = self.program(self.sample(), {"context": "gke_ml_us-central1_training"})
        assert run.one("pulumi:providers:kubernetes").inputs == {"context": "gke_ml_us-central1_training"}
        assert {r.type for r in run.resources if r.type.startswith("kubernetes:")} == {
            "kubernetes:core/v1:Secret",
            "kubernetes:core/v1:ServiceAccount",
            "kubernetes:rbac.authorization.k8s.io/v1:Role",
            "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding",
            JOB,
        }

    # -- the official schemas ---------------------------------------------------------------

    @pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
    def test_every_manifest_validates_against_the_kubernetes_schema(self, version: str) -> None:
        for variables in (
            self.sample(),
            {"image": "train:1"},
            {**self.sample(), "service_account_name": "trainer", "service_account_annotations": {}},
        ):
            run = self.program(variables)
            found = manifests(run)
            assert len(found) >= 4
            for manifest in found:
                kubernetes_validate.validate(manifest, version, strict=True)

    @pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
    def test_schema_validation_catches_a_misspelled_field(self, version: str) -> None:
        typo = [{"op": "add", "path": "/spec/template/spec/containers/0/imagePullPolicyy", "value": "Always"}]
        run = self.program({**self.sample(), "customizations": typo})
        with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolicyy"):
            kubernetes_validate.validate(_integral(run.one(JOB).inputs), version, strict=True)

    # -- bad input fails before anything is provisioned --------------------------------------

    @pytest.mark.parametrize(
        ("override", "variable"),
        [
            ({"memory": "64gi"}, "memory"),
            ({"memory": "lots"}, "memory"),
            ({"cpu": "eight"}, "cpu"),
            ({"gpu": 0}, "gpu"),
            ({"image_pull_policy": "Sometimes"}, "image_pull_policy"),
            ({"namespace": "ML_Team"}, "namespace"),
            ({"tolerations": [{"key": "gpu", "operater": "Exists"}]}, "tolerations.0"),
            ({"tolerations": [{"key": "gpu", "effect": "NoRun"}]}, "tolerations.0.effect"),
            ({"backoff_limit": -1}, "backoff_limit"),
        ],
    )
    def test_bad_overrides_fail_before_rendering(self, override: dict[str, Any], variable: str) -> None:
        with pytest.raises(ConfigError, match=f"job variable '{variable}'"):
            self.render(self.sample(), override)

    @pytest.mark.parametrize(
        ("override", "message"),
        [
            ({"env": {RUN_KEY_ENV: "x"}}, "is set by the toolkit"),
            ({"env": {"1BAD": "x"}}, "not a valid environment variable name"),
            ({"env": {"DB_PASSWORD": "x"}}, "set in both env and secret_env"),
            ({"secret_env": {"TOKEN": "no-key-given"}}, "must be 'secret-name/key'"),
            ({"service_account_name": "trainer"}, "annotate your existing ServiceAccount 'trainer'"),
            ({"customizations": [{"op": "replace", "path": "/kind", "value": "CronJob"}]}, "must be a batch/v1 Job"),
            ({"customizations": [{"op": "remove", "path": "/spec/template/spec/containers/0"}]}, "runner container"),
        ],
    )
    def test_inconsistent_jobs_fail_before_provisioning(self, override: dict[str, Any], message: str) -> None:
        config, _ = self.render(self.sample(), override)
        with pytest.raises(ConfigError, match=message):
            self.target.parse_job(config, "test-pool")

    def test_customizations_that_do_not_apply_are_rejected(self) -> None:
        with pytest.raises(ConfigError, match="does not apply to the job at /job_manifest"):
            self.render(self.sample(), {"customizations": [{"op": "replace", "path": "/spec/nope/x", "value": 1}]})

    def test_image_is_required_before_provisioning(self) -> None:
        _, variables = self.render({})
        with pytest.raises(ConfigError, match="needs the job variable 'image'"):
            self.target.check_capabilities(variables, "test-pool")
        _, variables = self.render({"image": "train:1"})
        self.target.check_capabilities(variables, "test-pool")

    def test_pool_object_storage_is_required(self) -> None:
        with pytest.raises(ConfigError, match="mode 'shared-prefix'.*--storage s3://bucket/prefix"):
            self.target.storage_url("abc", None)
        with pytest.raises(ConfigError, match=r"cannot be reached by kubernetes jobs; use object storage they can reach \(s3://, gs://"):
            self.target.storage_url("abc", "/srv/toolkit")
        for url in ("s3://b/p", "gs://b/p", "az://c/p"):
            assert self.target.storage_url("abc", url) == (f"{url}/abc", True)


# -- the watcher, on objects as the Kubernetes API returns them ---------------------------------


class _Response:
    def __init__(self, data: Any) -> None:
        self.data = json.dumps(data)


def _api(data: dict[str, Any], kind: str) -> Any:
    """Deserialize recorded JSON with the kubernetes client, exactly as it does an API answer."""
    return ApiClient().deserialize(_Response(data), kind)


class FakeCluster:
    """The calls of CoreV1Api and BatchV1Api the watcher makes, answered from recorded objects."""

    def __init__(self, job: str | None, pods: list[str], logs: dict[str, str] | None = None) -> None:
        self.job, self.pods, self.logs = job, pods, logs or {}
        self.log_reads: list[str] = []
        self.job_reads = 0

    def read_namespaced_job_status(self, name: str, namespace: str) -> Any:
        assert (name, namespace) == ("toolkit-0123abcd4567", "ml")
        self.job_reads += 1
        if self.job is None:
            raise ApiException(status=404, reason="Not Found")
        return _api(OBJECTS["jobs"][self.job], "V1Job")

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> Any:
        assert (namespace, label_selector) == ("ml", "job-name=toolkit-0123abcd4567")
        return _api(
            {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [OBJECTS["pods"][p] for p in self.pods]},
            "V1PodList",
        )

    def read_namespaced_pod_log(self, name: str, namespace: str, container: str) -> str:
        assert (namespace, container) == ("ml", "runner")
        self.log_reads.append(name)
        if name not in self.logs:
            raise ApiException(status=400, reason='container "runner" in pod is waiting to start: ContainerCreating')
        return self.logs[name]


def _reader(cluster: FakeCluster) -> JobReader:
    return JobReader("ml", "toolkit-0123abcd4567", "runner", lambda: (cluster, cluster))


def _watcher(cluster: FakeCluster) -> KubernetesWatcher:
    return KubernetesWatcher(_reader(cluster))


def test_watcher_follows_a_job_from_unschedulable_to_success() -> None:
    cluster = FakeCluster("active", [])
    watcher = _watcher(cluster)
    assert watcher.status().state == "pending"
    cluster.pods = ["unschedulable"]
    status = watcher.status()
    assert status.state == "pending" and "Insufficient nvidia.com/gpu" in str(status.reason)
    cluster.pods = ["creating"]
    assert watcher.status().state == "pending"
    cluster.pods = ["running"]
    assert watcher.status().state == "running"
    cluster.pods = ["succeeded"]
    assert watcher.status().model_dump(include={"state", "exit_code", "reason", "attempt"}) == {
        "state": "succeeded", "exit_code": 0, "reason": None, "attempt": 1
    }
    cluster.job = "complete"
    assert watcher.status().state == "succeeded"


FAILURES = {
    "oomkilled": (
        "backoff-exceeded",
        ["oomkilled"],
        137,
        "killed for exceeding its memory limit (OOMKilled); raise the 'memory'",
    ),
    "exit-code": ("backoff-exceeded", ["error-exit"], 3, "the container exited with code 3 (Error)"),
    "evicted": ("backoff-exceeded", ["evicted"], 137, "the pod failed (Evicted: The node was low on resource: memory."),
    "image-pull": (
        "active",
        ["image-pull-backoff"],
        None,
        "could not pull its image 'reg.example.com/train:404' from registry 'reg.example.com' (ImagePullBackOff",
    ),
    "missing-secret": (
        "active",
        ["config-error"],
        None,
        '(CreateContainerConfigError: secret "db-credentials" not found). A Secret or key named in secret_env',
    ),
    "deadline": (
        "deadline-exceeded",
        [],
        None,
        "the Job failed (DeadlineExceeded: Job was active longer than specified deadline); raise active_deadline_seconds",
    ),
    "deleted": (None, [], None, "the Job ml/toolkit-0123abcd4567 was deleted before it finished"),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_watcher_explains_failures(case: str) -> None:
    job, pods, exit_code, reason = FAILURES[case]
    status = _watcher(FakeCluster(job, pods)).status()
    assert status.state == "failed" and status.exit_code == exit_code
    assert reason in str(status.reason)


def test_watcher_keeps_waiting_while_the_kubelet_secret_cache_lags(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen on the real cluster under load: the Secret exists, the kubelet's cache sync timed out, and it retries."""
    lagging = json.loads(json.dumps(OBJECTS["pods"]["config-error"]))
    lagging["status"]["containerStatuses"][0]["state"]["waiting"]["message"] = (
        "failed to sync secret cache: timed out waiting for the condition"
    )
    monkeypatch.setitem(OBJECTS["pods"], "config-sync-lag", lagging)
    assert _watcher(FakeCluster("active", ["config-sync-lag"])).status().state != "failed"
    assert _watcher(FakeCluster("active", ["config-error"])).status().state == "failed"


def test_an_unauthorized_pull_with_pull_secrets_is_final_only_after_the_kubelets_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seen on the real cluster under load: the pull Secret exists, the kubelet could not read it yet and
    pulled without it (401). It pulls again after its back-off, so the run waits that long, no longer."""
    refused = json.loads(json.dumps(OBJECTS["pods"]["image-pull-backoff"]))
    refused["status"]["containerStatuses"][0]["state"]["waiting"]["message"] = (
        'Back-off pulling image "reg.example.com/train:404": ErrImagePull: failed to resolve reference: '
        "pulling from host reg.example.com failed with status code [manifests 404]: 401 Unauthorized"
    )
    refused["spec"]["imagePullSecrets"] = [{"name": "toolkit-0123abcd4567-pull"}]
    young = time.time() - PULL_SECRET_GRACE_SECONDS / 3
    old = time.time() - PULL_SECRET_GRACE_SECONDS * 2
    without_secrets = json.loads(json.dumps(refused))
    del without_secrets["spec"]["imagePullSecrets"]
    for name, pod, created in (("young", refused, young), ("old", refused, old), ("bare", without_secrets, young)):
        aged = json.loads(json.dumps(pod))
        aged["metadata"]["creationTimestamp"] = datetime.fromtimestamp(created, timezone.utc).isoformat()
        monkeypatch.setitem(OBJECTS["pods"], f"unauthorized-{name}", aged)
    assert _watcher(FakeCluster("active", ["unauthorized-young"])).status().state != "failed"
    status = _watcher(FakeCluster("active", ["unauthorized-old"])).status()
    assert status.state == "failed" and "401 Unauthorized" in str(status.reason)
    assert _watcher(FakeCluster("active", ["unauthorized-bare"])).status().state == "failed"  # no Secret to wait for


def test_watcher_waits_for_a_retry_and_fails_once_retries_are_exhausted() -> None:
    cluster = FakeCluster("retrying", ["error-exit"])
    status = _watcher(cluster).status()
    assert status.state == "pending" and "retrying after: the container exited with code 3" in str(status.reason)
    cluster.pods = ["error-exit", "retry-running"]
    assert _watcher(cluster).status().state == "running"
    cluster.job, cluster.pods = "retries-exhausted-pending-condition", ["error-exit"]
    status = _watcher(cluster).status()
    assert (status.state, status.exit_code, status.attempt) == ("failed", 3, 2)


def test_watcher_counts_the_jobs_own_attempts_and_explains_a_vanished_pod() -> None:
    """retries on Kubernetes are the Job's backoffLimit: each failed pod is an attempt; a deleted pod
    leaves the API before the watcher may see it fail, so its disappearance is the reason."""
    cluster = FakeCluster("active", ["running"])
    watcher = _watcher(cluster)
    assert (watcher.status().attempt, watcher.status().previous_failure) == (1, None)
    cluster.job, cluster.pods = "retrying", ["retry-running"]
    status = watcher.status()
    assert (status.state, status.attempt) == ("running", 2)
    assert "its pod toolkit-0123abcd4567-x7k2p vanished before it finished" in str(status.previous_failure)


def test_watcher_streams_each_pods_log_once() -> None:
    pod = OBJECTS["pods"]["running"]["metadata"]["name"]
    cluster = FakeCluster("active", ["creating"])
    watcher = _watcher(cluster)
    assert watcher.read_logs() == ""  # container still being created: the API answers 400
    cluster.pods, cluster.logs = ["running"], {pod: "epoch 1\n"}
    assert watcher.read_logs() == "epoch 1\n"
    cluster.logs[pod] = "epoch 1\nepoch 2\n"
    assert watcher.read_logs() == "epoch 2\n"
    cluster.pods, cluster.logs[pod] = ["succeeded"], "epoch 1\nepoch 2\ndone\n"
    assert watcher.read_logs() == "done\n"
    reads = len(cluster.log_reads)
    assert watcher.read_logs() == "" and len(cluster.log_reads) == reads  # a finished pod's log is complete


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster: {server: "https://10.0.0.1:6443", insecure-skip-tls-verify: true}
users:
- name: lab-user
  user: {token: not-a-real-token}
contexts:
- name: lab
  context: {cluster: lab, user: lab-user, namespace: ml}
current-context: lab
"""


def test_connect_uses_the_kubeconfig_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config"
    path.write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(path))
    core, batch = connect("lab")
    assert core.api_client.configuration.host == "https://10.0.0.1:6443"
    assert batch.api_client is core.api_client
    with pytest.raises(TargetUnavailableError, match="context 'staging' cannot be loaded"):
        connect("staging")


@pytest.mark.parametrize(("no_proxy", "proxied"), [("10.0.0.1,.internal", False), ("", True)])
def test_connect_bypasses_the_proxy_for_no_proxy_hosts(
    no_proxy: str, proxied: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY is used for the API server unless NO_PROXY names it (the kubernetes package drops NO_PROXY)."""
    import urllib3

    path = tmp_path / "config"
    path.write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(path))
    for name in ("HTTP_PROXY", "http_proxy", "https_proxy", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    if no_proxy:
        monkeypatch.setenv("NO_PROXY", no_proxy)
    core, _ = connect("lab")
    assert isinstance(core.api_client.rest_client.pool_manager, urllib3.ProxyManager) is proxied


def test_connect_without_any_cluster_says_how_to_configure_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(TargetUnavailableError, match="Set KUBECONFIG or the 'context' job variable"):
        connect(None)


def test_target_watcher_connects_lazily() -> None:
    suite = TestKubernetesTarget()
    context = suite.context(suite.sample())
    outputs = {"namespace": "ml", "job_name": "toolkit-0123abcd4567", "container": "runner"}
    watcher = KubernetesTarget().watcher(context, outputs)
    assert isinstance(watcher, KubernetesWatcher)


# -- pool storage on S3, against the emulator ---------------------------------------------------------


@pytest.mark.usefixtures("aws")
def test_run_storage_on_an_s3_prefix_carries_bundle_and_result(tmp_path: Path) -> None:
    """Upload as the program's RunStorage does, run the job side, collect the result, destroy the prefix."""
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="pool-bucket")
    fs = fsspec.filesystem("s3")
    fs.pipe_file("pool-bucket/runs/other-run/bundle.tkb", b"another run's data")
    url, shared = KubernetesTarget().storage_url("0123abcd4567", "s3://pool-bucket/runs")
    assert shared
    props = {"url": url, "bundle_path": str(tmp_path / "bundle.tkb"), "options": {}, "mode": "700", "bundle_name": BUNDLE_NAME}
    provider = RunStorageProvider()

    def upload(bundle: bytes) -> None:
        Path(props["bundle_path"]).write_bytes(bundle)
        provider.create(dict(props))
        assert fs.cat_file(f"pool-bucket/runs/0123abcd4567/{BUNDLE_NAME}") == bundle

    assert round_trip(url, {}, upload, "k" * 64) == 42
    provider.delete(url, props)
    fs.invalidate_cache()
    assert not fs.exists("pool-bucket/runs/0123abcd4567")
    assert fs.cat_file("pool-bucket/runs/other-run/bundle.tkb") == b"another run's data"


def test_watcher_names_a_deleted_pod_as_the_cause_of_the_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    deleted = copy.deepcopy(OBJECTS["pods"]["error-exit"])
    deleted["metadata"]["deletionTimestamp"] = "2026-11-24T10:00:05Z"
    monkeypatch.setitem(OBJECTS["pods"], "deleted-error-exit", deleted)
    status = _watcher(FakeCluster("backoff-exceeded", ["deleted-error-exit"])).status()
    assert status.state == "failed"
    assert str(status.reason).startswith("its pod toolkit-0123abcd4567-x7k2p was deleted while it ran")
    assert "the container exited with code 3" in str(status.reason)
    deadline = _watcher(FakeCluster("deadline-exceeded", ["deleted-error-exit"])).status()
    assert "was deleted" not in str(deadline.reason)  # the Job controller deleted it: the deadline is the cause


# -- a map's workers: one Indexed Job, each completion index a worker claiming items -----------------------


def _worker_pod(monkeypatch: pytest.MonkeyPatch, recorded: str, index: int, deleted: bool = False) -> str:
    """A recorded pod as worker ``index`` of a map's Job (its name and completion index), under a new key."""
    pod = copy.deepcopy(OBJECTS["pods"][recorded])
    pod["metadata"]["name"] = f"toolkit-0123abcd4567-{index}-q{index}x7z"
    pod["metadata"]["annotations"] = {"batch.kubernetes.io/job-completion-index": str(index)}
    if deleted:
        pod["metadata"]["deletionTimestamp"] = "2026-11-24T10:00:09Z"
    key = f"worker-{index}-{recorded}{'-deleted' if deleted else ''}"
    monkeypatch.setitem(OBJECTS["pods"], key, pod)
    return key


def _map_job(monkeypatch: pytest.MonkeyPatch, recorded: str = "active", **status: Any) -> str:
    """A recorded Job as a map's Indexed Job of 3 workers, with ``status`` (completedIndexes, failedIndexes)."""
    job = copy.deepcopy(OBJECTS["jobs"][recorded])
    job["spec"].update(completionMode="Indexed", completions=3, parallelism=3, backoffLimitPerIndex=0)
    job["status"].update(status)
    key = f"map-{recorded}-{sorted(status.items())}"
    monkeypatch.setitem(OBJECTS["jobs"], key, job)
    return key


def _workers(cluster: FakeCluster) -> tuple[JobReader, WorkersWatcher]:
    reader = _reader(cluster)
    return reader, WorkersWatcher([WorkerWatcher(reader, index) for index in range(3)])


def test_a_maps_workers_are_followed_each_on_its_own_through_one_read_per_poll(monkeypatch) -> None:
    cluster = FakeCluster(
        _map_job(monkeypatch, completedIndexes="1", failedIndexes="2"),
        [_worker_pod(monkeypatch, "running", 0), _worker_pod(monkeypatch, "succeeded", 1),
         _worker_pod(monkeypatch, "error-exit", 2)],
    )
    _, watcher = _workers(cluster)
    assert watcher.status().state == "running"  # a dead worker is not the map's end: the others go on
    assert [status.state for status in watcher.last] == ["running", "succeeded", "failed"]
    assert (watcher.last[2].exit_code, watcher.last[2].reason) == (3, "the container exited with code 3 (Error)")
    assert cluster.job_reads == 1


def test_a_workers_deleted_pod_fails_it_with_the_deletion_also_once_the_pod_is_gone(monkeypatch) -> None:
    """The Job's failedIndexes outlives the deleted pod; the reader remembers why that pod went."""
    running = [_worker_pod(monkeypatch, "running", index) for index in range(3)]
    cluster = FakeCluster(_map_job(monkeypatch), running)
    reader, watcher = _workers(cluster)
    assert watcher.status().state == "running"
    cluster.pods = [running[0], _worker_pod(monkeypatch, "running", 1, deleted=True), running[2]]
    reader.forget()
    watcher.status()
    assert watcher.last[1].state == "running"  # terminating: its claims stay its own until it has stopped
    cluster.job, cluster.pods = _map_job(monkeypatch, failedIndexes="1"), [running[0], running[2]]
    reader.forget()
    assert watcher.status().state == "running"
    assert [status.state for status in watcher.last] == ["running", "failed", "running"]
    assert str(watcher.last[1].reason).startswith("its pod toolkit-0123abcd4567-1-q1x7z was deleted while it ran")


def test_a_worker_whose_pod_vanished_unseen_fails_by_the_jobs_failed_indexes(monkeypatch) -> None:
    cluster = FakeCluster(_map_job(monkeypatch), [_worker_pod(monkeypatch, "running", 0)])
    reader, watcher = _workers(cluster)
    watcher.status()
    assert [status.state for status in watcher.last] == ["running", "pending", "pending"]
    cluster.job, cluster.pods = _map_job(monkeypatch, failedIndexes="0-1"), []
    reader.forget()
    watcher.status()
    assert [status.state for status in watcher.last] == ["failed", "failed", "pending"]
    assert "its pod toolkit-0123abcd4567-0-q0x7z vanished before it finished" in str(watcher.last[0].reason)
    assert watcher.last[1].reason == "its pod failed"


def test_a_maps_workers_fail_at_once_on_an_image_that_never_comes_a_deadline_or_a_deleted_job(monkeypatch) -> None:
    pull = FakeCluster(_map_job(monkeypatch), [_worker_pod(monkeypatch, "image-pull-backoff", 0)])
    _, watcher = _workers(pull)
    watcher.status()
    assert watcher.last[0].state == "failed" and "could not pull its image" in str(watcher.last[0].reason)
    late = FakeCluster(_map_job(monkeypatch, "deadline-exceeded", completedIndexes="2"), [])
    _, watcher = _workers(late)
    assert watcher.status().state == "failed"
    assert [status.state for status in watcher.last] == ["failed", "failed", "succeeded"]
    assert "DeadlineExceeded" in str(watcher.last[0].reason) and "active_deadline_seconds" in str(watcher.last[0].reason)
    _, watcher = _workers(FakeCluster(None, []))
    watcher.status()
    assert {status.reason for status in watcher.last} == {"the Job ml/toolkit-0123abcd4567 was deleted before it finished"}


def test_a_workers_log_is_its_own_pods(monkeypatch) -> None:
    pods = [_worker_pod(monkeypatch, "running", index) for index in range(3)]
    names = [OBJECTS["pods"][pod]["metadata"]["name"] for pod in pods]
    cluster = FakeCluster(_map_job(monkeypatch), pods, logs={name: f"worker {n}\n" for n, name in enumerate(names)})
    reader = _reader(cluster)
    assert WorkerWatcher(reader, 1).read_logs() == "worker 1\n" and cluster.log_reads == [names[1]]
