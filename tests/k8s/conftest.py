"""Fixtures for the kubernetes target on the local cluster (``tests/k8s/cluster.py``).

``k8s_cluster`` uses a cluster that is already up (``scripts/k8s-cluster up``)
and leaves it running, or brings one up for the session and takes it down at
the end. Each test gets its own namespace (holding a copy of the S3
emulator's credentials Secret) and a pool whose runs land there; after the
test the namespace must hold nothing of the run's, no run stack may remain and
the pool's prefix in the S3 emulator's bucket must be empty, then the
namespace is deleted and must disappear.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import s3fs
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.k8s import cluster
from tests.k8s import layout as L
from tests.k8s.layout import ClusterInfo
from tests.leaks import assert_nothing_left
from toolkit.futures import wait_for_teardowns
from toolkit.pools.registry import PoolRegistry, WorkPool
from toolkit.targets.kubernetes.target import KubernetesTarget

NAMESPACE_GONE_SECONDS = 60
OBJECTS_GONE_SECONDS = 60
"""The Job is deleted with skipAwait, so the engine does not wait for it: Kubernetes finishes the
deletion (pods first, each within its 30 s termination grace period) after the stack is gone."""


@pytest.fixture(scope="session")
def k8s_cluster() -> Iterator[ClusterInfo]:
    """The running cluster; started if needed, and stopped by the last session using it (``cluster.shared``)."""
    with cluster.shared() as info:
        yield info


@pytest.fixture(scope="session")
def kube(k8s_cluster: ClusterInfo) -> tuple[client.CoreV1Api, client.BatchV1Api, client.RbacAuthorizationV1Api]:
    """API clients as the cluster admin."""
    api = config.new_client_from_config(config_file=k8s_cluster.kubeconfig)
    return client.CoreV1Api(api), client.BatchV1Api(api), client.RbacAuthorizationV1Api(api)


@pytest.fixture
def client_env(k8s_cluster: ClusterInfo, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """KUBECONFIG and the emulator's S3 keys for the toolkit and its providers, for one test only."""
    for name, value in k8s_cluster.client_env().items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    yield
    s3fs.S3FileSystem.clear_instance_cache()


def run_objects(kube: tuple, namespace: str) -> dict[str, list[str]]:
    """Objects labelled as a toolkit run's in ``namespace``, by kind."""
    core, batch, rbac = kube
    selector = "toolkit-run"
    found = {
        "jobs": batch.list_namespaced_job(namespace, label_selector=selector).items,
        "pods": core.list_namespaced_pod(namespace, label_selector=selector).items,
        "service accounts": core.list_namespaced_service_account(namespace, label_selector=selector).items,
        "secrets": core.list_namespaced_secret(namespace, label_selector=selector).items,
        "roles": rbac.list_namespaced_role(namespace, label_selector=selector).items,
        "role bindings": rbac.list_namespaced_role_binding(namespace, label_selector=selector).items,
    }
    return {kind: [item.metadata.name for item in items] for kind, items in found.items() if items}


def objects_left_after(kube: tuple, namespace: str, seconds: float) -> dict[str, list[str]]:
    """The run objects still in ``namespace`` once they are all gone or ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    left = run_objects(kube, namespace)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = run_objects(kube, namespace)
    return left


def storage_left(info: ClusterInfo, namespace: str) -> list[str]:
    """Objects under the runs' prefix in the S3 emulator's bucket (fails loudly if it cannot look)."""
    fs = s3fs.S3FileSystem(endpoint_url=info.s3_endpoint, skip_instance_cache=True)
    return fs.find(f"{info.bucket}/{namespace}")


@pytest.fixture
def namespace(kube: tuple, client_env: None, k8s_cluster: ClusterInfo) -> Iterator[str]:
    core = kube[0]
    name = f"tk-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    source = core.read_namespaced_secret(L.S3_SECRET, "default")
    core.create_namespaced_secret(name, {"metadata": {"name": L.S3_SECRET}, "data": source.data})
    yield name
    wait_for_teardowns()
    left = objects_left_after(kube, name, OBJECTS_GONE_SECONDS)
    assert not left, f"the run left objects in namespace {name!r} {OBJECTS_GONE_SECONDS} s after teardown: {left}"
    assert_nothing_left()
    stored = storage_left(k8s_cluster, name)
    assert not stored, f"the runs left objects in the S3 emulator under {k8s_cluster.bucket}/{name}: {stored}"
    core.delete_namespace(name)
    deadline = time.monotonic() + NAMESPACE_GONE_SECONDS
    while time.monotonic() < deadline:
        try:
            core.read_namespace(name)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(1)
    pytest.fail(f"namespace {name!r} still exists {NAMESPACE_GONE_SECONDS} s after its deletion")


RUN_SECONDS = 300
"""How long a test run on the cluster may take before it is cancelled."""


def result_or_cancel(future: Any, timeout: float = RUN_SECONDS) -> Any:
    """The run's result; a run still going after ``timeout`` is cancelled, so the test fails instead of hanging."""
    try:
        return future.result(timeout=timeout)
    except TimeoutError:
        future.cancel(timeout=180)
        raise


def save_pool(
    name: str, cluster: ClusterInfo, namespace: str, *, image_registry: object = None, **defaults: object
) -> str:
    """A kubernetes pool: the runner image, ``namespace``, S3 storage with credentials from a Secret;
    ``defaults`` set (or replace) variables' defaults, as a platform team's template would;
    ``image_registry`` is the pool's registry for environment images."""
    template = KubernetesTarget.default_template()
    defaults = {
        "image": cluster.runner_image,
        "namespace": namespace,
        "context": cluster.context,
        "secret_env": {"AWS_ACCESS_KEY_ID": f"{L.S3_SECRET}/access-key",
                       "AWS_SECRET_ACCESS_KEY": f"{L.S3_SECRET}/secret-key"},
        "env": {"AWS_DEFAULT_REGION": "us-east-1"},
        **defaults,
    }
    for variable, value in defaults.items():
        template["variables"]["properties"][variable]["default"] = value
    PoolRegistry().save(WorkPool(
        name=name, type="kubernetes", base_job_template=template,
        storage={"url": f"s3://{cluster.bucket}/{namespace}", "mode": "shared-prefix",
                 "options": {"endpoint_url": cluster.s3_endpoint}},
        image_registry=image_registry,
    ), overwrite=True)
    return name


@pytest.fixture
def pool(k8s_cluster: ClusterInfo, namespace: str, toolkit_home) -> str:
    """A kubernetes pool whose runs land in the test's namespace."""
    return save_pool(f"k8s-{namespace}", k8s_cluster, namespace)
